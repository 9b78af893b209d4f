package remotewrite

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrometheusInternals pins everything prominternals.go reads of
// Prometheus beyond its API, so that an upgrade that renames one fails
// here: every metric name, the watcher's start line (seen live), the
// hard-shutdown lines (seen live on a Stop with the endpoint down), and
// each log message in the module's source.
func TestPrometheusInternals(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	// The drop rule makes the queue count dropped samples (a vector, not
	// exported until then).
	cfg := parseConfig(t, "remote_write:\n  - url: "+srv.URL+"\n    name: pin\n"+
		"    write_relabel_configs: [{source_labels: [series], regex: \"0\", action: drop}]\n"+fastQueue)
	e := &fakeEngine{st: openStore(t, t.TempDir(), "acme"), series: 20}
	t.Cleanup(func() { _ = e.st.Close() })
	w := startWriter(t, cfg, "acme", e)
	waitLive(t, w, 5*time.Second)
	ep := w.ep0()
	ep.mu.Lock()
	started := ep.watcherStart
	ep.mu.Unlock()
	if started == 0 {
		t.Errorf("no %q line seen: ShipsFrom and the switch to live depend on it", logWatcherStarted)
	}
	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)

	mfs, err := w.tee.private.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, name := range queueMetricNames {
		if !have[name] {
			t.Errorf("the queue no longer exports %s", name)
		}
	}

	// Stop with samples queued for an endpoint that fails: the background
	// hard shutdown reports them abandoned.
	w.Stop()
	waitFor(t, "the hard shutdown's abandoned samples", 5*time.Second, func() bool {
		ep.mu.Lock()
		defer ep.mu.Unlock()
		return ep.lost
	})

	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/prometheus/prometheus").Output()
	if err != nil {
		t.Skipf("module source not found (%v); the live checks above passed", err)
	}
	dir := strings.TrimSpace(string(out))
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	watcher, queue := read("tsdb/wlog/watcher.go"), read("storage/remote/queue_manager.go")
	for _, c := range []struct{ src, msg string }{
		{watcher, `"` + logWatcherStarted + `"`},
		{queue, `"` + logNonRecoverable + `"`},
		{queue, `"` + logResharding + `"`},
		{queue, `"Failed to flush all %s on shutdown"`},
		{queue, `"failedSampleCount"`},
	} {
		if !strings.Contains(c.src, c.msg) {
			t.Errorf("prometheus no longer logs %s", c.msg)
		}
	}
}
