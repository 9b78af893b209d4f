package engine

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/config"
)

// lockedBuffer is a log destination the test reads while the engine writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestEngine starts an engine on dataDir whose receiver does not
// listen and whose collection loop does not fire during the test.
func newTestEngine(t *testing.T, dataDir string, log *lockedBuffer) *Engine {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.OTLPGRPC, cfg.OTLPHTTP, cfg.HTTP = "", "", ""
	cfg.CollectionInterval = time.Hour
	e, err := New(cfg, slog.New(slog.NewTextHandler(log, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	return e
}
