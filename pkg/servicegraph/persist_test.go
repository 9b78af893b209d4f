package servicegraph

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
)

// TestPendingSurviveRestart: half edges saved at stop wait on after the
// restart, under a changed config whose dimensions are matched by name,
// pair with spans that arrive then, and those whose wait ended while the
// process was down settle at the next expiry.
func TestPendingSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pending")
	clock := newClock()
	cfg := DefaultConfig()
	cfg.Dimensions = []string{"env", "http.route"}
	before, err := New(cfg, registry.New(registry.Config{}), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	route := otlptest.Str("http.route", "/pay")
	before.Push(makeBatch(t, res{service: "fe", attrs: []*commonpb.KeyValue{otlptest.Str("env", "prod")}, spans: []sp{
		client(1, route),
		with(client(2, route), func(s *sp) { s.err = true }),
		client(3, otlptest.Str("peer.service", "stripe")), // will wait out its wait
	}}))
	clock.Advance(5 * time.Second)
	before.Push(makeBatch(t, res{service: "be", spans: []sp{server(4)}})) // client 4 never comes
	if n, err := before.SaveFile(path); err != nil || n != 4 {
		t.Fatalf("SaveFile: %d, %v; want 4 saved", n, err)
	}
	if st := before.Stats(); st.Pending != 0 || st.Unpaired != 0 || st.Virtual != 0 {
		t.Fatalf("after saving: %+v; want nothing pending and nothing settled", st)
	}

	// The new config drops env and adds region.
	cfg.Dimensions = []string{"http.route", "region"}
	reg := registry.New(registry.Config{})
	after, err := New(cfg, reg, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	restored, dropped, err := after.RestoreFile(path)
	if err != nil || restored != 4 || dropped != 0 {
		t.Fatalf("RestoreFile: %d restored, %d dropped, %v", restored, dropped, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file is still there after restoring: %v", err)
	}
	after.Push(makeBatch(t, res{service: "be", spans: []sp{server(1), server(2)}}))
	// Past the wait of the first pushes (10 s after them), not of server 4.
	clock.Advance(5*time.Second + time.Millisecond)
	after.Expire()
	got := collect(t, reg)
	feBeRoute := `{client="fe",http_route="/pay",server="be"}`
	checkSeries(t, got, map[string]series{
		total:    {feBeRoute: 2, `{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
		failed:   {feBeRoute: 1},
		srvCount: {feBeRoute: 2, `{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
		cliCount: {feBeRoute: 2, `{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
		srvSum:   {feBeRoute: 0.16, `{client="fe",connection_type="virtual_node",server="stripe"}`: 0},
		cliSum:   {feBeRoute: 0.2, `{client="fe",connection_type="virtual_node",server="stripe"}`: 0.1},
	})
	if st := after.Stats(); st.Pending != 1 || st.Completed != 3 {
		t.Errorf("stats %+v; want server 4 still pending and 3 edges", st)
	}
}

// TestRestoreRefusesDamagedFiles: a damaged file restores nothing, says so,
// and is removed so that the next start does not trip on it again.
func TestRestoreRefusesDamagedFiles(t *testing.T) {
	dir := t.TempDir()
	p, err := New(DefaultConfig(), registry.New(registry.Config{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Push(makeBatch(t, res{service: "fe", spans: []sp{client(1), client(2)}}))
	good := filepath.Join(dir, "good")
	if _, err := p.SaveFile(good); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0x40
	for name, body := range map[string][]byte{
		"flipped":   flipped,
		"truncated": data[:len(data)-7],
		"empty":     {},
		"foreign":   []byte("# not ours\n"),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, body, 0o600); err != nil {
				t.Fatal(err)
			}
			q, err := New(DefaultConfig(), registry.New(registry.Config{}), Options{})
			if err != nil {
				t.Fatal(err)
			}
			n, _, err := q.RestoreFile(path)
			if !errors.Is(err, ErrPendingCorrupt) || n != 0 || q.Stats().Pending != 0 {
				t.Errorf("RestoreFile: %d restored, %v; want ErrPendingCorrupt and nothing", n, err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("damaged file kept: %v", err)
			}
		})
	}
	if n, _, err := p.RestoreFile(filepath.Join(dir, "missing")); n != 0 || err != nil {
		t.Errorf("missing file: %d, %v; want 0, nil", n, err)
	}
	if n, _, err := p.RestoreFile(good); n != 2 || err != nil {
		t.Errorf("good file: %d, %v; want 2, nil", n, err)
	}
}
