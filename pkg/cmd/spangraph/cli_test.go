package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/otlptest"
)

// run runs the binary in dir and returns its exit code and output.
func run(t *testing.T, bin, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String()
	}
	t.Fatalf("%v: %v", args, err)
	return 0, ""
}

func TestCommandLine(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		want     string
		wantOnce string
	}{
		// A stray word would end flag parsing: the flags after it would
		// be ignored and the server would write to ./data.
		{"stray word", []string{"serve", "oops", "--data-dir", filepath.Join(dir, "x")}, 1,
			`unexpected argument "oops": serve takes only flags`, ""},
		{"unknown flag said once", []string{"serve", "--bogus"}, 2, "Usage of serve", "flag provided but not defined: -bogus"},
		{"missing config file names the flag", []string{"serve", "--config", filepath.Join(dir, "none.yaml")}, 1,
			"spangraph: --config: open " + filepath.Join(dir, "none.yaml") + ": no such file or directory", ""},
		{"version", []string{"--version"}, 0, "spangraph ", ""},
		{"demo help shows the demo's defaults", []string{"demo", "-h"}, 0,
			"a new temporary directory, removed at exit", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := run(t, bin, dir, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output:\n%s\nwant exit %d and %q", code, out, tc.code, tc.want)
			}
			if tc.wantOnce != "" && strings.Count(out, tc.wantOnce) != 1 {
				t.Fatalf("%q said %d times:\n%s", tc.wantOnce, strings.Count(out, tc.wantOnce), out)
			}
		})
	}
	// A bad flag is said before any traffic, not under a report of none.
	if code, out := run(t, bin, dir, "loadgen", "--rate", "-1"); code != 1 || strings.TrimSpace(out) != "spangraph: --rate: must not be negative, got -1" {
		t.Errorf("loadgen --rate -1: exit %d, output:\n%s", code, out)
	}
	if code, out := run(t, bin, dir, "demo", "-h"); code != 0 || !regexp.MustCompile(`collection-interval duration\n.*\(default 5s\)`).MatchString(out) {
		t.Errorf("demo -h does not show its 5s collection interval:\n%s", out)
	}
	for _, name := range []string{"data", "x"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("a refused command created %s", name)
		}
	}
}

// TestDemoCleansUp: the demo's own temporary data directory is removed
// when it stops; the query port answers / with links.
func TestDemoCleansUp(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command(bin, "demo", "--http", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0", "--otlp-grpc", "127.0.0.1:0")
	log := &otlptest.LogBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	addr := regexp.MustCompile(`query API listening" addr=([0-9.:]+)`)
	dataDir := regexp.MustCompile(`into (\S+) \(removed at exit`)
	var api, dir string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && (api == "" || dir == ""); time.Sleep(50 * time.Millisecond) {
		if m := addr.FindStringSubmatch(log.String()); m != nil {
			api = m[1]
		}
		if m := dataDir.FindStringSubmatch(log.String()); m != nil {
			dir = m[1]
		}
	}
	if api == "" || dir == "" {
		t.Fatalf("the demo did not start:\n%s", log.String())
	}
	for _, want := range []string{"OTLP/gRPC", "/api/v1/service-graph", "/api/v1/red"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the demo's banner does not show %s:\n%s", want, log.String())
		}
	}
	resp, err := http.Get("http://" + api + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `href="api/v1/service-graph"`) {
		t.Errorf("GET /: %d\n%s", resp.StatusCode, page)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data dir %s: %v", dir, err)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("demo exit: %v\n%s", err, log.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the demo left %s behind (%v)", dir, err)
	}
}
