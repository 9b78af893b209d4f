// Package store keeps the series of each tenant in an embedded Prometheus
// TSDB (head, WAL, blocks, retention, exemplars), one database per tenant
// in its own directory so that tenants never see each other's data.
package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/spangraph/spangraph/pkg/tenant"
)

// Options of a tenant's database.
type Options struct {
	// Retention is how long samples are kept.
	Retention time.Duration
	// MaxExemplars is the size of the in-memory exemplar ring; 0 disables
	// exemplar storage.
	MaxExemplars int64
}

// Store is the database of one tenant.
type Store struct {
	tenant string
	db     *tsdb.DB
	reg    *ownRegisterer // nil without a registerer
}

// Dir returns the directory of a tenant's database under dataDir.
func Dir(dataDir, tenantID string) string {
	return filepath.Join(dataDir, "tenants", tenantID)
}

// CheckDataDir makes sure dataDir exists and can be written, by creating
// its tenants directory and a probe file there, so that a read-only or
// misplaced data_dir stops start-up with an explanation rather than
// failing each tenant's first request later.
func CheckDataDir(dataDir string) error {
	hint := "make it writable by the user running spangraph, or point data_dir (--data-dir) at a writable directory"
	dir := filepath.Join(dataDir, "tenants")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("data_dir %s is not usable: %w: %s", dataDir, err, hint)
	}
	f, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("data_dir %s is not writable: %w: %s", dataDir, err, hint)
	}
	name := f.Name()
	err = f.Close()
	if rmErr := os.Remove(name); err == nil {
		err = rmErr
	}
	if err != nil {
		return fmt.Errorf("data_dir %s is not writable: %w: %s", dataDir, err, hint)
	}
	return nil
}

// Open opens (or creates) the database of tenantID under dataDir, replaying
// its WAL, so that everything collected before a crash is queryable again.
func Open(dataDir, tenantID string, opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if err := tenant.Validate(tenantID); err != nil {
		return nil, err
	}
	dir := Dir(dataDir, tenantID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the data directory of tenant %q: %w (check that data_dir is writable)", tenantID, err)
	}
	o := tsdb.DefaultOptions()
	if opts.Retention > 0 {
		o.RetentionDuration = opts.Retention.Milliseconds()
	}
	if opts.MaxExemplars > 0 {
		o.EnableExemplarStorage = true
		o.MaxExemplars = opts.MaxExemplars
	}
	var own *ownRegisterer
	var dbReg prometheus.Registerer
	if reg != nil {
		own = &ownRegisterer{Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"tenant": tenantID}, reg)}
		dbReg = own
	}
	start := time.Now()
	db, err := tsdb.Open(dir, logger.With("tenant", tenantID), dbReg, o, nil)
	if err != nil {
		// tsdb registers its metrics before it reads the WAL and blocks;
		// left registered, they would make the next attempt panic.
		own.unregisterAll()
		damage, _ := Diagnose(dataDir, tenantID)
		return nil, &OpenError{Tenant: tenantID, DataDir: dataDir, Err: err, Damage: damage}
	}
	logger.Info("store open", "tenant", tenantID, "dir", dir, "took", time.Since(start).Round(time.Millisecond),
		"series", db.Head().NumSeries())
	return &Store{tenant: tenantID, db: db, reg: own}, nil
}

// OpenError is a tenant store that cannot be opened, with the parts found
// damaged and the command that moves them aside.
type OpenError struct {
	Tenant  string
	DataDir string
	// Err is tsdb's error.
	Err error
	// Damage lists what Diagnose found; empty when the cause is not a
	// damaged file (permissions, a full disk...).
	Damage []Damage
}

func (e *OpenError) Error() string {
	msg := fmt.Sprintf("the store of tenant %q in %s cannot be opened: %v", e.Tenant, Dir(e.DataDir, e.Tenant), e.Err)
	if len(e.Damage) == 0 {
		return msg + "; no damaged file was found: if the cause is outside the store (permissions, disk), fix it and the tenant is retried; " +
			"otherwise stop sending to it and run " + e.RepairCommand() + " --whole to move its whole store aside"
	}
	parts := make([]string, len(e.Damage))
	for i, d := range e.Damage {
		parts[i] = d.String()
	}
	return msg + "; damaged: " + strings.Join(parts, ", ") + "; run " + e.RepairCommand() +
		" to move the damaged parts to " + filepath.Join(e.DataDir, QuarantineDir) + " (kept for inspection); the tenant then opens with what is left"
}

// Unwrap returns tsdb's error.
func (e *OpenError) Unwrap() error { return e.Err }

// RepairCommand is the command line that repairs the tenant.
func (e *OpenError) RepairCommand() string {
	return fmt.Sprintf("spangraph repair --tenant %s --data-dir %s", e.Tenant, e.DataDir)
}

// ownRegisterer remembers what the database registers, so that closing it
// (or failing to open it) unregisters it again: a tenant is opened again
// after an eviction, and tsdb registers with MustRegister, which panics on
// a duplicate.
type ownRegisterer struct {
	prometheus.Registerer
	mu         sync.Mutex
	collectors []prometheus.Collector
}

func (r *ownRegisterer) Register(c prometheus.Collector) error {
	if err := r.Registerer.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.collectors = append(r.collectors, c)
	r.mu.Unlock()
	return nil
}

func (r *ownRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *ownRegisterer) unregisterAll() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.collectors {
		r.Registerer.Unregister(c)
	}
	r.collectors = nil
}

// Tenant returns the tenant id.
func (s *Store) Tenant() string { return s.tenant }

// Appender starts a transaction.
func (s *Store) Appender(ctx context.Context) storage.Appender { return s.db.Appender(ctx) }

// Querier implements storage.Queryable.
func (s *Store) Querier(mint, maxt int64) (storage.Querier, error) { return s.db.Querier(mint, maxt) }

// ExemplarQuerier implements storage.ExemplarQueryable.
func (s *Store) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return s.db.ExemplarQuerier(ctx)
}

// WALDir returns the directory of the write-ahead log, which remote write
// reads.
func (s *Store) WALDir() string { return filepath.Join(s.db.Dir(), "wal") }

// Close closes the database and unregisters its metrics. The head is not
// compacted: the WAL (and the head chunks on disk) bring it back at the
// next Open.
func (s *Store) Close() error {
	err := s.db.Close()
	s.reg.unregisterAll()
	return err
}

// NewestSample returns the time (unix ms) of the newest sample stored, in
// the head or in a block, or 0 when there is none.
func (s *Store) NewestSample() int64 {
	newest := int64(0)
	if h := s.db.Head(); h.NumSeries() > 0 {
		newest = h.MaxTime()
	}
	for _, b := range s.db.Blocks() {
		newest = max(newest, b.Meta().MaxTime)
	}
	return newest
}

// HeadSeries returns the number of series in memory.
func (s *Store) HeadSeries() uint64 { return s.db.Head().NumSeries() }

// Exists reports whether tenantID has a database directory under dataDir,
// so that a query can open a tenant that has data without creating one
// for every id it is asked about.
func Exists(dataDir, tenantID string) bool {
	if tenant.Validate(tenantID) != nil {
		return false
	}
	fi, err := os.Stat(Dir(dataDir, tenantID))
	return err == nil && fi.IsDir()
}

// ListTenants returns the tenants that have a database under dataDir, so
// that their data is queryable after a restart before they send anything.
func ListTenants(dataDir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(dataDir, "tenants"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && tenant.Validate(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}
