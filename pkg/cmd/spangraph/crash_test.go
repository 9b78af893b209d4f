package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/otlptest"
)

// TestServeHardening runs the hardening scenarios against one build of
// the binary, in parallel: tenant isolation through the API and the
// receivers, path-like tenant ids, a corrupt WAL, an unwritable data_dir
// and a full disk. Run one with -run 'TestServeHardening/<name>'.
func TestServeHardening(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := binary(t)
	for name, f := range map[string]func(*testing.T, string){
		"tenant_isolation":               testTenantIsolation,
		"path_like_tenants_without_auth": testPathLikeTenantsWithoutAuth,
		"corrupt_wal":                    testCorruptWAL,
		"unwritable_data_dir":            testUnwritableDataDir,
		"disk_full":                      testDiskFull,
		"tenant_lifecycle":               testTenantLifecycle,
		"crash_after_checkpoint":         testCrashAfterCheckpoint,
		"reload":                         testReload,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, bin)
		})
	}
}

// newestSegment returns the path and size of the newest WAL segment of
// the default tenant.
func newestSegment(t *testing.T, dataDir string) (string, int64) {
	t.Helper()
	dir := filepath.Join(dataDir, "tenants", "single-tenant", "wal")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range entries {
		if !e.IsDir() && regexp.MustCompile(`^\d{8}$`).MatchString(e.Name()) {
			segs = append(segs, e.Name())
		}
	}
	if len(segs) == 0 {
		t.Fatalf("no WAL segment in %s", dir)
	}
	sort.Strings(segs)
	p := filepath.Join(dir, segs[len(segs)-1])
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, fi.Size()
}

// kill9 kills the server the hard way and waits for it.
func (s *process) kill9(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait()
}

// calls returns the calls of service as the default tenant sees them.
func calls(t *testing.T, httpAddr, service string) float64 {
	t.Helper()
	_, c := callsByService(t, httpAddr, nil)
	return c[service]
}

// waitCalls waits until service has want calls.
func waitCalls(t *testing.T, httpAddr, service string, want float64) {
	t.Helper()
	eventually(t, service+" collected", func() string {
		if got := calls(t, httpAddr, service); got != want {
			return fmt.Sprintf("%s has %v calls, want %v", service, got, want)
		}
		return ""
	})
}

// waitLog waits until the server's log matches re.
func waitLog(t *testing.T, s *process, re string) {
	t.Helper()
	r := regexp.MustCompile(re)
	eventually(t, "log line "+re, func() string {
		if r.MatchString(s.log.String()) {
			return ""
		}
		return "not logged yet"
	})
}

// testCorruptWAL: after some collections, kill -9, corrupt the newest WAL
// segment, restart. The server must start, say that it repaired the WAL,
// serve what was collected before the corruption and take new spans.
func testCorruptWAL(t *testing.T, bin string) {
	for _, where := range []string{"middle", "end"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			srv := startServer(t, bin, dataDir)
			if code := sendSpans(t, srv.otlpHTTP, "before-1", nil); code != http.StatusOK {
				t.Fatalf("send: %d", code)
			}
			waitCalls(t, srv.http, "before-1", 3)
			seg, s1 := newestSegment(t, dataDir)
			if code := sendSpans(t, srv.otlpHTTP, "before-2", nil); code != http.StatusOK {
				t.Fatalf("send: %d", code)
			}
			waitCalls(t, srv.http, "before-2", 3)
			time.Sleep(1500 * time.Millisecond) // a few more collections
			srv.kill9(t)
			seg2, s2 := newestSegment(t, dataDir)
			if seg2 != seg || s2 <= s1+64 {
				t.Fatalf("WAL %s grew from %d to %d bytes (%s); the test needs one growing segment", seg2, s1, s2, seg)
			}
			// Flip bytes after the point where before-1 was collected:
			// half way through what came after it, or its last bytes.
			off := s1 + (s2-s1)/2
			if where == "end" {
				off = s2 - 16
			}
			corrupt(t, seg, off, 16)

			srv2 := startServer(t, bin, dataDir)
			calls(t, srv2.http, "before-1") // the store opens on its first query
			waitLog(t, srv2, `(?i)corruption repair|attempting repair`)
			// The store logs that it is open once the repair is done, a
			// moment after the repair's first line.
			waitLog(t, srv2, "store open")
			if got := calls(t, srv2.http, "before-1"); got != 3 {
				t.Errorf("after the repair before-1 has %v calls, want 3 (collected before the corruption)", got)
			}
			if where == "end" {
				// Only the last collection is lost; before-2 was collected
				// several times before.
				if got := calls(t, srv2.http, "before-2"); got != 3 {
					t.Errorf("after the repair before-2 has %v calls, want 3", got)
				}
			}
			if code := sendSpans(t, srv2.otlpHTTP, "after", nil); code != http.StatusOK {
				t.Fatalf("send after the repair: %d", code)
			}
			waitCalls(t, srv2.http, "after", 3)
			// And it survives another crash: the repaired WAL is sound.
			srv2.kill9(t)
			srv3 := startServer(t, bin, dataDir)
			for _, s := range []string{"before-1", "after"} {
				if got := calls(t, srv3.http, s); got != 3 {
					t.Errorf("after a second restart %s has %v calls, want 3", s, got)
				}
			}
			if strings.Contains(srv3.log.String(), "repair") {
				t.Errorf("the repaired WAL needed another repair:\n%s", srv3.log.String())
			}
		})
	}
}

// corrupt inverts n bytes of path at off.
func corrupt(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] ^= 0xff
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

// runToExit runs spangraph serve expecting it to stop by itself, and
// returns its exit code and output.
func runToExit(t *testing.T, bin, dataDir string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data-dir", dataDir, "--otlp-grpc", freePort(t), "--otlp-http", freePort(t), "--http", freePort(t))
	log := &otlptest.LogBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), log.String()
		}
		return 0, log.String()
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("spangraph serve --data-dir %s kept running; log:\n%s", dataDir, log.String())
		return 0, ""
	}
}

// checkRefusal holds a failed start to exiting 1 with a message that
// names data_dir and says what to do, without a panic.
func checkRefusal(t *testing.T, code int, out, dataDir string) {
	t.Helper()
	// The hint is looked for outside the path, which t.TempDir names
	// after the test.
	if code != 1 || !strings.Contains(out, "data_dir "+dataDir) || !strings.Contains(strings.ReplaceAll(out, dataDir, ""), "writable") ||
		strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("exit %d, output:\n%s\nwant exit 1 naming data_dir %s and how to fix it, without a panic", code, out, dataDir)
	}
}

// testUnwritableDataDir: a data_dir the process cannot write stops
// start-up with exit code 1 and a message naming it, also for root, for
// whom permissions are no obstacle: a data_dir below a regular file, and a
// read-only bind mount (empty, and holding a tenant's data).
func testUnwritableDataDir(t *testing.T, bin string) {
	t.Run("below a regular file", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		dataDir := filepath.Join(file, "data")
		code, out := runToExit(t, bin, dataDir)
		checkRefusal(t, code, out, dataDir)
	})
	t.Run("read-only mount", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		// A tenant's data first, then the same directory read-only.
		srv := startServer(t, bin, dataDir)
		if code := sendSpans(t, srv.otlpHTTP, "kept", nil); code != http.StatusOK {
			t.Fatalf("send: %d", code)
		}
		waitCalls(t, srv.http, "kept", 3)
		if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = srv.cmd.Wait()
		empty := t.TempDir()
		for _, dir := range []string{dataDir, empty} {
			if err := exec.Command("mount", "--bind", dir, dir).Run(); err != nil {
				t.Skipf("cannot bind-mount (needs root and CAP_SYS_ADMIN): %v", err)
			}
			t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
			if out, err := exec.Command("mount", "-o", "remount,bind,ro", dir).CombinedOutput(); err != nil {
				t.Skipf("cannot remount read-only: %v %s", err, out)
			}
		}
		for _, dir := range []string{dataDir, empty} {
			code, out := runToExit(t, bin, dir)
			checkRefusal(t, code, out, dir)
		}
		// Made writable again, the data is all there.
		if err := exec.Command("umount", dataDir).Run(); err != nil {
			t.Fatal(err)
		}
		srv2 := startServer(t, bin, dataDir)
		if got := calls(t, srv2.http, "kept"); got != 3 {
			t.Errorf("after the read-only episode kept has %v calls, want 3", got)
		}
	})
}

// testDiskFull: data_dir on a small tmpfs (root only; skipped otherwise).
// When the file system fills up, collections fail with a log line that
// says so, ingestion and queries keep answering, and once space is freed
// the series kept in memory are written; after a kill -9 and a restart
// everything collected is there.
func testDiskFull(t *testing.T, bin string) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root and CAP_SYS_ADMIN), the in-process test in pkg/engine covers a failing commit: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	dataDir := filepath.Join(mnt, "data")
	srv := startServer(t, bin, dataDir)
	if code := sendSpans(t, srv.otlpHTTP, "before-full", nil); code != http.StatusOK {
		t.Fatalf("send: %d", code)
	}
	waitCalls(t, srv.http, "before-full", 3)

	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	// New series while the disk is full: the receiver keeps answering
	// (200, or 503 / 429 when it cannot take them, never a crash).
	for i := 0; i < 3; i++ {
		code := sendSpans(t, srv.otlpHTTP, "during-full", nil)
		if code != http.StatusOK && code != http.StatusServiceUnavailable && code != http.StatusTooManyRequests {
			t.Fatalf("send while full: %d", code)
		}
		if code != http.StatusOK {
			i--
			time.Sleep(200 * time.Millisecond)
		}
		if i == 0 {
			waitLog(t, srv, `collection failed \(full disk\?\)`)
		}
	}
	if code, body := apiGet(t, srv.http, "/metrics", nil, nil); code != http.StatusOK ||
		!regexp.MustCompile(`spangraph_collection_failures_total\{tenant="single-tenant"\} [1-9]`).MatchString(body) {
		t.Errorf("collection failures not counted: %d", code)
	}
	if got := calls(t, srv.http, "before-full"); got != 3 {
		t.Errorf("while full, before-full has %v calls, want 3", got)
	}
	if code, _ := apiGet(t, srv.http, "/-/ready", nil, nil); code != http.StatusOK {
		t.Errorf("ready while full: %d", code)
	}

	// Space again: the next collections write the series kept in memory.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, srv.http, "during-full", 9)
	srv.kill9(t)
	srv2 := startServer(t, bin, dataDir)
	for s, want := range map[string]float64{"before-full": 3, "during-full": 9} {
		if got := calls(t, srv2.http, s); got != want {
			t.Errorf("after the restart %s has %v calls, want %v", s, got, want)
		}
	}
	if code := sendSpans(t, srv2.otlpHTTP, "after-full", nil); code != http.StatusOK {
		t.Fatalf("send after the restart: %d", code)
	}
	waitCalls(t, srv2.http, "after-full", 3)
}

// fill writes path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// The last partial pages too.
	for n := 4096; n > 0; n /= 2 {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
}

// testCrashAfterCheckpoint: spans counted after the last collection are
// saved by the next checkpoint, so kill -9 right after it loses none. A
// series already stored continues without a reset (its restored value is
// not counted twice); one never collected before the crash gets its
// leading zero.
func testCrashAfterCheckpoint(t *testing.T, bin string) {
	dataDir := t.TempDir()
	args := []string{"--collection-interval", "3s", "--checkpoint-interval", "100ms"}
	srv := startServer(t, bin, dataDir, args...)
	if code := sendSpans(t, srv.otlpHTTP, "stored", nil); code != http.StatusOK {
		t.Fatalf("send: %d", code)
	}
	waitCalls(t, srv.http, "stored", 3) // collected: within ~200ms of a collection
	for _, svc := range []string{"stored", "new"} {
		if code := sendSpans(t, srv.otlpHTTP, svc, nil); code != http.StatusOK {
			t.Fatalf("send: %d", code)
		}
	}
	// Several checkpoints, and no collection (the next is ~2.5s away).
	time.Sleep(600 * time.Millisecond)
	if got := calls(t, srv.http, "new"); got != 0 {
		t.Fatalf("a collection ran before the kill (new has %v calls): the test needs the kill between a checkpoint and a collection", got)
	}
	srv.kill9(t)

	srv2 := startServer(t, bin, dataDir, args...)
	// The tenant opens on its first query.
	waitCalls(t, srv2.http, "new", 3)
	waitCalls(t, srv2.http, "stored", 6)
	waitLog(t, srv2, `restored the series counted between the last collection and a crash.*series=\d`)
	resets := instant(t, srv2.http, `sum by (service) (resets(traces_spanmetrics_calls_total[5m]))`, "service")
	if resets["stored"] != 0 {
		t.Errorf("the stored series shows %v resets after the restore; its restored value would be counted twice", resets["stored"])
	}
	// increase() sees all of "new", thanks to its leading zero.
	points := instant(t, srv2.http, `sum by (service) (count_over_time(traces_spanmetrics_calls_total[5m]))`, "service")
	if points["new"] < 2*2 { // two status series, each a zero and a value
		t.Errorf("new has %v samples, want its leading zeros and values", points["new"])
	}
}

// testReload: SIGHUP and POST /-/reload read the config file again; the
// new limits apply to the next request, a broken file is refused whole
// (the running config stays, the metric says so), and the listeners and
// the store stay up throughout.
func testReload(t *testing.T, bin string) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "spangraph.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(cfgFile, []byte("http_server:\n  enable_reload: true\n"+content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("limits:\n  max_spans_per_request: 100\n")
	srv := startServer(t, bin, filepath.Join(dir, "data"), "--config", cfgFile)
	if code := sendSpans(t, srv.otlpHTTP, "before", nil); code != http.StatusOK {
		t.Fatalf("send: %d", code)
	}
	metric := func(name string) string {
		t.Helper()
		_, m := apiGet(t, srv.http, "/metrics", nil, nil)
		return regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(m + "\n")[1]
	}

	write("limits:\n  max_spans_per_request: 2\n")
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, srv, `configuration reloaded`)
	if code := sendSpans(t, srv.otlpHTTP, "after", nil); code == http.StatusOK {
		t.Error("3 spans accepted after a reload to max_spans_per_request: 2")
	}
	if v := metric("spangraph_config_last_reload_successful"); v != "1" {
		t.Errorf("spangraph_config_last_reload_successful %s after a reload", v)
	}

	write("limits:\n  max_spans_per_request: 100\nservicegraph:\n  wait: -1s\n")
	code, body := do(t, http.MethodPost, "http://"+srv.http+"/-/reload", nil, nil)
	if code != http.StatusInternalServerError || !strings.Contains(string(body), "servicegraph.wait") {
		t.Errorf("POST /-/reload of a broken file: %d %s, want 500 naming servicegraph.wait", code, body)
	}
	if v := metric("spangraph_config_last_reload_successful"); v != "0" {
		t.Errorf("spangraph_config_last_reload_successful %s after a failed reload", v)
	}
	if code := sendSpans(t, srv.otlpHTTP, "after", nil); code == http.StatusOK {
		t.Error("a refused reload changed the limits")
	}
	write("limits:\n  max_spans_per_request: 100\n")
	if code, body := do(t, http.MethodPost, "http://"+srv.http+"/-/reload", nil, nil); code != http.StatusOK {
		t.Fatalf("POST /-/reload: %d %s", code, body)
	}
	if code := sendSpans(t, srv.otlpHTTP, "after", nil); code != http.StatusOK {
		t.Errorf("after reloading the limits back: %d", code)
	}
	waitCalls(t, srv.http, "before", 3)
	waitCalls(t, srv.http, "after", 3)
}
