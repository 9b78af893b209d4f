package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/fileutil"
	"github.com/prometheus/prometheus/tsdb/wlog"

	"github.com/spangraph/spangraph/pkg/tenant"
)

// QuarantineDir is the directory under data_dir that Repair moves damaged
// parts into, one subdirectory per repair: tenants/ never sees them again,
// and they stay there for inspection until someone deletes them.
const QuarantineDir = "quarantine"

// Damage is one part of a tenant's store that stops it from opening.
type Damage struct {
	// Path is relative to the tenant's directory: "wal", "wal/00000099",
	// or a block's directory.
	Path string
	// Problem says what is wrong with it.
	Problem string
}

func (d Damage) String() string { return d.Path + " (" + d.Problem + ")" }

// Diagnose looks for the parts of a tenant's store that tsdb cannot open:
// a wal (or chunks_head, wbl) that is not a directory, WAL segments out of
// sequence, and blocks that do not open (meta.json, index, chunks). It
// does not replay the WAL: damage inside a segment is repaired by tsdb
// itself when it opens the store.
func Diagnose(dataDir, tenantID string) ([]Damage, error) {
	if err := tenant.Validate(tenantID); err != nil {
		return nil, err
	}
	dir := Dir(dataDir, tenantID)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []Damage
	for _, e := range entries {
		name := e.Name()
		switch name {
		case "wal", "wbl":
			if !e.IsDir() {
				out = append(out, Damage{name, "a file where the write-ahead log directory belongs"})
				continue
			}
			strays, err := straySegments(filepath.Join(dir, name))
			if err != nil {
				out = append(out, Damage{name, "unreadable: " + err.Error()})
				continue
			}
			for _, s := range strays {
				out = append(out, Damage{filepath.Join(name, s), "WAL segment out of sequence"})
			}
		case "chunks_head":
			if !e.IsDir() {
				out = append(out, Damage{name, "a file where the head chunks directory belongs"})
			}
		default:
			if _, err := ulid.ParseStrict(name); err != nil {
				continue
			}
			if !e.IsDir() {
				out = append(out, Damage{name, "a file where a block directory belongs"})
				continue
			}
			b, err := tsdb.OpenBlock(slog.New(slog.DiscardHandler), filepath.Join(dir, name), nil, nil)
			if err != nil {
				out = append(out, Damage{name, "block does not open: " + err.Error()})
				continue
			}
			_ = b.Close()
		}
	}
	return out, nil
}

// straySegments returns the WAL segments tsdb would refuse as "not
// sequential": every segment outside the run it needs. That run is the
// one just after the newest checkpoint when there is one (segments before
// a checkpoint are deleted as it is written), else the longest run (a
// stray segment is one file; the log it lands in is many), the older one
// on a tie.
func straySegments(walDir string) ([]string, error) {
	entries, err := os.ReadDir(walDir)
	if err != nil {
		return nil, err
	}
	type seg struct {
		name string
		n    int
	}
	var segs []seg
	for _, e := range entries {
		// The same test as tsdb's: any name that is a number.
		if n, err := strconv.Atoi(e.Name()); err == nil {
			segs = append(segs, seg{e.Name(), n})
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].n < segs[j].n })
	type run struct{ from, to int } // indexes into segs, to exclusive
	var runs []run
	for i := range segs {
		if i == 0 || segs[i].n != segs[i-1].n+1 {
			runs = append(runs, run{i, i})
		}
		runs[len(runs)-1].to = i + 1
	}
	if len(runs) <= 1 {
		return nil, nil
	}
	keep := -1
	if _, cp, err := wlog.LastCheckpoint(walDir); err == nil {
		for i, r := range runs {
			if segs[r.from].n <= cp+1 && cp+1 <= segs[r.to-1].n {
				keep = i
			}
		}
	}
	if keep < 0 {
		keep = 0
		for i, r := range runs {
			if r.to-r.from > runs[keep].to-runs[keep].from {
				keep = i
			}
		}
	}
	var out []string
	for i, r := range runs {
		if i == keep {
			continue
		}
		for _, s := range segs[r.from:r.to] {
			out = append(out, s.name)
		}
	}
	return out, nil
}

// RepairResult says what Repair did.
type RepairResult struct {
	// Moved lists the parts moved aside, with what was wrong with each.
	Moved []Damage
	// To is the directory they were moved into ("" when nothing moved).
	To string
	// Series is the number of series in memory after the store reopened
	// (blocks are on disk and not counted).
	Series uint64
	// Blocks is the number of blocks the repaired store opened with.
	Blocks int
}

// ErrLocked is returned by Repair when a running Spangraph has the
// tenant's store open.
var ErrLocked = errors.New("the tenant's store is open in a running spangraph")

// Repair moves the damaged parts of a tenant's store (see Diagnose), or
// with whole its entire directory, into
// <dataDir>/quarantine/<tenant>-<time>/, keeping their paths, then opens
// what is left to check that it works (tsdb repairs damage inside WAL
// segments as it opens). It holds the store's lock throughout, so it
// refuses a store a running Spangraph has open: a quarantined tenant is
// not open, and is repaired while the server runs.
func Repair(dataDir, tenantID string, whole bool, now time.Time) (RepairResult, error) {
	var res RepairResult
	if err := tenant.Validate(tenantID); err != nil {
		return res, err
	}
	dir := Dir(dataDir, tenantID)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return res, fmt.Errorf("tenant %q has no store in %s (data_dir %s)", tenantID, dir, dataDir)
	}
	lock, _, err := fileutil.Flock(filepath.Join(dir, "lock"))
	if err != nil {
		return res, fmt.Errorf("%w (%v): repair only a tenant the server has quarantined, or stop the server first", ErrLocked, err)
	}
	defer func() { _ = lock.Release() }()

	dest := filepath.Join(dataDir, QuarantineDir, tenantID+"-"+now.UTC().Format("20060102T150405.000Z"))
	if whole {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return res, err
		}
		for _, e := range entries {
			if e.Name() != "lock" {
				res.Moved = append(res.Moved, Damage{e.Name(), "moved with the whole store"})
			}
		}
	} else {
		if res.Moved, err = Diagnose(dataDir, tenantID); err != nil {
			return res, err
		}
	}
	for _, d := range res.Moved {
		to := filepath.Join(dest, d.Path)
		if err := os.MkdirAll(filepath.Dir(to), 0o750); err != nil {
			return res, err
		}
		if err := os.Rename(filepath.Join(dir, d.Path), to); err != nil {
			return res, fmt.Errorf("moving %s aside: %w", d.Path, err)
		}
		res.To = dest
	}

	// Opened under our lock: a server that tries the tenant meanwhile is
	// refused by the lock rather than opening it twice.
	o := tsdb.DefaultOptions()
	o.NoLockfile = true
	db, err := tsdb.Open(dir, slog.New(slog.DiscardHandler), nil, o, nil)
	if err != nil {
		damage, _ := Diagnose(dataDir, tenantID)
		oe := &OpenError{Tenant: tenantID, DataDir: dataDir, Err: err, Damage: damage}
		return res, fmt.Errorf("after the repair the store still does not open (%v): run %s --whole to move the whole store aside", oe.Err, oe.RepairCommand())
	}
	res.Series = db.Head().NumSeries()
	res.Blocks = len(db.Blocks())
	return res, db.Close()
}

// ChangeStamp describes the tenant directory and its WAL directory by
// their entries, so that a quarantined tenant is tried again as soon as
// something was moved, added or removed there (a repair) and not on every
// request.
func ChangeStamp(dataDir, tenantID string) string {
	dir := Dir(dataDir, tenantID)
	var b strings.Builder
	for _, d := range []string{dir, filepath.Join(dir, "wal")} {
		entries, err := os.ReadDir(d)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", d, err)
			continue
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				continue
			}
			fmt.Fprintf(&b, "%s %v %d %d\n", e.Name(), e.Type(), info.Size(), info.ModTime().UnixNano())
		}
	}
	return b.String()
}
