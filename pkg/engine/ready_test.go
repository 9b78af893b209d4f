package engine

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/config"
)

// TestReady: ready means the receivers listen and the loops run, not
// merely that the process is up; a stopping engine is not ready.
func TestReady(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.OTLPGRPC, cfg.OTLPHTTP, cfg.HTTP = "", "127.0.0.1:0", ""
	e, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Ready(); err == nil || !strings.HasPrefix(err.Error(), "starting") {
		t.Fatalf("before Start: %v", err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	if err := e.Ready(); err != nil || e.Receiver().HTTPAddr() == "" {
		t.Fatalf("after Start: %v, OTLP/HTTP at %q", err, e.Receiver().HTTPAddr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Stop(ctx)
	if err := e.Ready(); err == nil || !strings.HasPrefix(err.Error(), "stopping") {
		t.Fatalf("after Stop: %v", err)
	}
}
