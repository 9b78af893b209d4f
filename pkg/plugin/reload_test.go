package plugin

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

type countingReloader struct{ n atomic.Int32 }

func (c *countingReloader) ReloadConfig() error { c.n.Add(1); return nil }

// TestWatchConfigFile: a change of the config file, written in place or
// renamed over it, reloads once per change; no change, no reload.
func TestWatchConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spangraph.yaml")
	if err := os.WriteFile(path, []byte("log_level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &countingReloader{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchConfigFile(path, r, 10*time.Millisecond, stop)
	}()
	wait := func(want int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for r.n.Load() != want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := r.n.Load(); got != want {
			t.Fatalf("%d reloads, want %d", got, want)
		}
	}
	time.Sleep(50 * time.Millisecond)
	wait(0)
	if err := os.WriteFile(path, []byte("log_level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wait(1)
	tmp := filepath.Join(dir, "new")
	if err := os.WriteFile(tmp, []byte("log_level: warn, renamed over\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	wait(2)
	time.Sleep(50 * time.Millisecond)
	wait(2)
	close(stop)
	<-done

	// Without a config file there is nothing to watch.
	WatchConfigFile("", r, time.Millisecond, make(chan struct{}))
}
