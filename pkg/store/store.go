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
	"time"

	"github.com/grafana/dskit/tenant"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// DefaultTenant is the tenant of requests that name none, as in Tempo,
// Mimir and Loki.
const DefaultTenant = "single-tenant"

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
}

// ValidateTenant refuses ids that are not safe as directory names or as
// X-Scope-OrgID values (dskit's rules: [a-zA-Z0-9!-_.*'()], at most 150
// bytes, not "." or "..").
func ValidateTenant(id string) error {
	if id == "" {
		return fmt.Errorf("tenant id is empty")
	}
	return tenant.ValidTenantID(id)
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
	if err := ValidateTenant(tenantID); err != nil {
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
	if reg != nil {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"tenant": tenantID}, reg)
	}
	start := time.Now()
	db, err := tsdb.Open(dir, logger.With("tenant", tenantID), reg, o, nil)
	if err != nil {
		return nil, fmt.Errorf("opening the store of tenant %q in %s: %w", tenantID, dir, err)
	}
	logger.Info("store open", "tenant", tenantID, "dir", dir, "took", time.Since(start).Round(time.Millisecond),
		"series", db.Head().NumSeries())
	return &Store{tenant: tenantID, db: db}, nil
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

// Close flushes and closes the database.
func (s *Store) Close() error { return s.db.Close() }

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
		if e.IsDir() && ValidateTenant(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}
