package store

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
)

// newStoreWithBlocks makes a tenant store holding one series sampled every
// minute over the last six hours, compacted into blocks with the newest
// samples left in the head (and the WAL), and closes it. It returns the
// block directories, oldest first.
func newStoreWithBlocks(t *testing.T, dataDir, tenant string) []string {
	t.Helper()
	s, err := Open(dataDir, tenant, Options{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	app := s.Appender(context.Background())
	for ts := now.Add(-6 * time.Hour); ts.Before(now); ts = ts.Add(time.Minute) {
		if _, err := app.Append(0, labels.FromStrings("__name__", "x"), ts.UnixMilli(), 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, b := range s.db.Blocks() {
		blocks = append(blocks, filepath.Base(b.Dir()))
	}
	if len(blocks) < 2 || s.HeadSeries() == 0 {
		t.Fatalf("want at least two blocks and a head, got %d blocks, %d head series", len(blocks), s.HeadSeries())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// damages are the ways a tenant store is found broken on disk; each
// returns the paths Diagnose should name.
var damages = []struct {
	name   string
	damage func(t *testing.T, dir string, blocks []string) []string
	// lostBlocks is how many blocks the repair moves aside; keptHead
	// whether the head (the WAL) survives.
	lostBlocks int
	keptHead   bool
}{
	{"stray WAL segment", func(t *testing.T, dir string, _ []string) []string {
		write(t, filepath.Join(dir, "wal", "00000099"), "not a segment of this log")
		return []string{"wal/00000099"}
	}, 0, true},
	{"damaged block index", func(t *testing.T, dir string, blocks []string) []string {
		if err := os.Truncate(filepath.Join(dir, blocks[0], "index"), 100); err != nil {
			t.Fatal(err)
		}
		return []string{blocks[0]}
	}, 1, true},
	{"wal is a file", func(t *testing.T, dir string, _ []string) []string {
		if err := os.RemoveAll(filepath.Join(dir, "wal")); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, "wal"), "x")
		return []string{"wal"}
	}, 0, false},
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedStoreRepaired: each damage makes Open fail with an
// *OpenError that names the damaged part and the repair command, without
// leaving metrics registered; Repair moves exactly that part into
// quarantine/, keeping it, and the store then opens with the blocks that
// were fine.
func TestDamagedStoreRepaired(t *testing.T) {
	for _, tc := range damages {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			blocks := newStoreWithBlocks(t, dataDir, "bad")
			dir := Dir(dataDir, "bad")
			want := tc.damage(t, dir, blocks)

			reg := prometheus.NewRegistry()
			_, err := Open(dataDir, "bad", Options{}, slog.New(slog.DiscardHandler), reg)
			var oe *OpenError
			if !errors.As(err, &oe) {
				t.Fatalf("Open: %v, want an *OpenError", err)
			}
			if got := damagePaths(oe.Damage); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("damage %v, want %v", got, want)
			}
			for _, s := range append(want, "spangraph repair --tenant bad --data-dir "+dataDir) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("the error does not name %q: %v", s, err)
				}
			}
			if mfs, _ := reg.Gather(); len(mfs) != 0 {
				t.Errorf("a failed Open left %d metric families registered", len(mfs))
			}

			res, err := Repair(dataDir, "bad", false, time.Now())
			if err != nil {
				t.Fatalf("Repair: %v", err)
			}
			if got := damagePaths(res.Moved); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("moved %v, want %v", got, want)
			}
			if !strings.HasPrefix(res.To, filepath.Join(dataDir, QuarantineDir, "bad-")) {
				t.Errorf("moved to %s, want under %s", res.To, filepath.Join(dataDir, QuarantineDir))
			}
			for _, p := range want {
				if _, err := os.Lstat(filepath.Join(res.To, p)); err != nil {
					t.Errorf("the damaged %s is not kept: %v", p, err)
				}
			}
			if want := len(blocks) - tc.lostBlocks; res.Blocks != want {
				t.Errorf("repaired store has %d blocks, want %d", res.Blocks, want)
			}

			s, err := Open(dataDir, "bad", Options{}, slog.New(slog.DiscardHandler), reg)
			if err != nil {
				t.Fatalf("Open after the repair: %v", err)
			}
			defer s.Close()
			if got := s.HeadSeries() > 0; got != tc.keptHead {
				t.Errorf("head kept: %v, want %v", got, tc.keptHead)
			}
			if got, _ := Diagnose(dataDir, "bad"); len(got) != 0 {
				t.Errorf("still damaged after the repair: %v", got)
			}
		})
	}
}

func damagePaths(ds []Damage) []string {
	var out []string
	for _, d := range ds {
		out = append(out, filepath.ToSlash(d.Path))
	}
	sort.Strings(out)
	return out
}

// TestRepair covers the other cases of the command: a healthy store
// (nothing moved), the whole store moved aside, a store a process has
// open (refused), and a tenant without a store.
func TestRepair(t *testing.T) {
	for _, tc := range []struct {
		name    string
		whole   bool
		open    bool
		tenant  string
		wantErr error
		// wantMoved is what moves besides the blocks; keepBlocks whether
		// the blocks stay.
		wantMoved  []string
		keepBlocks bool
	}{
		{name: "healthy", tenant: "t", keepBlocks: true},
		{name: "whole", whole: true, tenant: "t", wantMoved: []string{"chunks_head", "wal"}},
		{name: "open elsewhere", open: true, tenant: "t", wantErr: ErrLocked},
		{name: "no store", tenant: "nobody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			blocks := newStoreWithBlocks(t, dataDir, "t")
			if tc.open {
				s, err := Open(dataDir, "t", Options{}, slog.New(slog.DiscardHandler), nil)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
			}
			res, err := Repair(dataDir, tc.tenant, tc.whole, time.Now())
			switch {
			case tc.tenant == "nobody":
				if err == nil || !strings.Contains(err.Error(), "has no store") {
					t.Errorf("Repair of a tenant without a store: %v", err)
				}
				return
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Repair: %v, want %v", err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			want, wantBlocks := tc.wantMoved, len(blocks)
			if !tc.keepBlocks {
				want, wantBlocks = append(append([]string(nil), blocks...), want...), 0
				sort.Strings(want)
			}
			if got := damagePaths(res.Moved); strings.Join(got, ",") != strings.Join(want, ",") || res.Blocks != wantBlocks {
				t.Errorf("moved %v, %d blocks left; want %v moved, %d blocks", got, res.Blocks, want, wantBlocks)
			}
		})
	}
}

// TestReopenSameRegisterer: a tenant closed and opened again in one
// process registers its metrics again without a duplicate (tsdb panics
// on one), and closing unregisters them.
func TestReopenSameRegisterer(t *testing.T) {
	dataDir := t.TempDir()
	reg := prometheus.NewRegistry()
	for i := 0; i < 3; i++ {
		s, err := Open(dataDir, "t", Options{}, slog.New(slog.DiscardHandler), reg)
		if err != nil {
			t.Fatal(err)
		}
		if mfs, _ := reg.Gather(); len(mfs) == 0 {
			t.Fatal("no store metrics registered")
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if mfs, _ := reg.Gather(); len(mfs) != 0 {
			t.Fatalf("%d metric families left after Close", len(mfs))
		}
	}
}

// TestStraySegments: which WAL segments are out of the log's sequence.
func TestStraySegments(t *testing.T) {
	for _, tc := range []struct {
		name       string
		segments   []string
		checkpoint string
		want       string
	}{
		{"sequential", []string{"00000000", "00000001"}, "", ""},
		{"stray after", []string{"00000000", "00000001", "00000002", "00000099"}, "", "00000099"},
		{"stray before", []string{"00000001", "00000007", "00000008", "00000009"}, "", "00000001"},
		{"tie keeps the older", []string{"00000001", "00000005"}, "", "00000005"},
		{"checkpoint decides", []string{"00000001", "00000005", "00000006"}, "checkpoint.00000000", "00000005,00000006"},
		{"not numbers are not segments", []string{"00000000", "notes"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, s := range tc.segments {
				write(t, filepath.Join(dir, s), "")
			}
			if tc.checkpoint != "" {
				if err := os.Mkdir(filepath.Join(dir, tc.checkpoint), 0o750); err != nil {
					t.Fatal(err)
				}
			}
			got, err := straySegments(dir)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != tc.want {
				t.Errorf("strays %v, want %s", got, tc.want)
			}
		})
	}
}
