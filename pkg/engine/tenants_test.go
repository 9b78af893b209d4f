package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/store"
)

// clock is the engine's clock of idle timeouts, moved by the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// startListening starts an engine on dataDir whose receivers listen on
// loopback, with the given max_tenants and tenant_idle_timeout, a clock
// the test moves and its store metrics on reg.
func startListening(t *testing.T, dataDir string, maxTenants int, idle time.Duration, reg prometheus.Registerer, log io.Writer) (*Engine, *clock) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.OTLPGRPC, cfg.OTLPHTTP, cfg.HTTP = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.CollectionInterval = time.Hour
	cfg.MaxTenants = maxTenants
	cfg.TenantIdleTimeout = idle
	if log == nil {
		log = io.Discard
	}
	e, err := New(cfg, slog.New(slog.NewTextHandler(log, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	e.now = c.now
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	return e, c
}

// post sends three spans of service to tenant over OTLP/HTTP and returns
// the response, body read.
func post(t *testing.T, e *Engine, tenant, service string) (*http.Response, string) {
	t.Helper()
	body, err := proto.Marshal(exportRequest(service))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+e.Receiver().HTTPAddr()+"/v1/traces", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Scope-OrgID", tenant)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// exportGRPC sends three spans of service to tenant over OTLP/gRPC.
func exportGRPC(t *testing.T, e *Engine, tenant, service string) error {
	t.Helper()
	conn, err := grpc.NewClient(e.Receiver().GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-scope-orgid", tenant)
	_, err = coltracepb.NewTraceServiceClient(conn).Export(ctx, exportRequest(service))
	return err
}

// calls sums the last stored traces_spanmetrics_calls_total of every
// series of tenant, read as queries read.
func calls(t *testing.T, e *Engine, tenant string) (float64, error) {
	t.Helper()
	queryable, _ := e.Queryable(tenant)
	q, err := queryable.Querier(0, time.Now().Add(time.Hour).UnixMilli())
	if err != nil {
		return 0, err
	}
	defer q.Close()
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "traces_spanmetrics_calls_total"))
	sum := 0.0
	for ss.Next() {
		it := ss.At().Iterator(nil)
		v := 0.0
		for it.Next() != 0 {
			_, v = it.At()
		}
		sum += v
	}
	return sum, ss.Err()
}

// waitConsumed waits until the spans sent to tenant are in its registry:
// a 200 answer means queued, not processed.
func waitConsumed(t *testing.T, e *Engine, tenant string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if inst := e.Tenant(tenant); inst != nil && inst.Registry.ActiveSeries() > 0 {
			return
		}
	}
	t.Fatalf("spans of tenant %s never processed", tenant)
}

func openTenants(e *Engine) []string {
	var out []string
	for _, s := range e.TenantStatuses() {
		if s.State == TenantOpen {
			out = append(out, s.ID)
		}
	}
	return out
}

// seriesOf lists the metric families of g that have a series labelled
// tenant.
func seriesOf(t *testing.T, g prometheus.Gatherer, tenant string) []string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" && l.GetValue() == tenant {
					out = append(out, mf.GetName())
				}
			}
		}
	}
	return out
}

// TestIdleTenantsCloseAndReopen: with max_tenants 3, ten tenants send
// spans in turn over OTLP/HTTP; each is taken (the idle ones close to
// make room), never more than three are open, a closed tenant has no
// self-metric series left, and every tenant reopens for a query with all
// it was sent.
func TestIdleTenantsCloseAndReopen(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, clk := startListening(t, t.TempDir(), 3, time.Second, reg, nil)
	const n = 10
	for i := 0; i < n; i++ {
		tenant := fmt.Sprintf("tenant-%d", i)
		clk.advance(2 * time.Second) // every open tenant is idle now
		if resp, body := post(t, e, tenant, "svc"); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", tenant, resp.StatusCode, body)
		}
		waitConsumed(t, e, tenant)
		if open := openTenants(e); len(open) > 3 {
			t.Fatalf("after %s: %d tenants open: %v", tenant, len(open), open)
		}
	}
	if got := testutil.ToFloat64(tenantsOpen); got > 3 {
		t.Errorf("spangraph_tenants_open %v, want at most 3", got)
	}
	for i := 0; i < n-3; i++ {
		tenant := fmt.Sprintf("tenant-%d", i)
		if st := e.TenantStatus(tenant); st.State != TenantClosed {
			t.Errorf("%s: %+v, want closed", tenant, st)
		}
		if got := append(seriesOf(t, prometheus.DefaultGatherer, tenant), seriesOf(t, reg, tenant)...); len(got) > 0 {
			t.Errorf("closed %s still has self-metric series: %v", tenant, got)
		}
	}
	if got := len(e.Tenants()); got != n {
		t.Errorf("Tenants lists %d, want %d (open and closed)", got, n)
	}
	for i := 0; i < n; i++ {
		tenant := fmt.Sprintf("tenant-%d", i)
		clk.advance(2 * time.Second)
		got, err := calls(t, e, tenant)
		if err != nil || got != 3 {
			t.Errorf("%s reopened for a query: %v calls, %v; want 3", tenant, got, err)
		}
		if open := openTenants(e); len(open) > 3 {
			t.Fatalf("after querying %s: %d tenants open: %v", tenant, len(open), open)
		}
	}
	// A reopened tenant takes spans again, on top of what it had.
	clk.advance(2 * time.Second)
	if resp, body := post(t, e, "tenant-0", "svc"); resp.StatusCode != http.StatusOK {
		t.Fatalf("tenant-0 again: %d %s", resp.StatusCode, body)
	}
	waitConsumed(t, e, "tenant-0")
	e.Collect()
	// A new registry counts from zero; its leading zero lands after the
	// last stored sample, so increase() sees the reset: 3 and 3 more.
	if got := increase(t, e, "tenant-0"); got != 6 {
		t.Errorf("tenant-0 after new spans: increase %v, want 6", got)
	}
}

// increase is what increase() over all time reads from tenant's calls
// counter: the rises, and after a reset the value it restarted to.
func increase(t *testing.T, e *Engine, tenant string) float64 {
	t.Helper()
	queryable, _ := e.Queryable(tenant)
	q, err := queryable.Querier(0, time.Now().Add(time.Hour).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "traces_spanmetrics_calls_total"))
	sum := 0.0
	for ss.Next() {
		it := ss.At().Iterator(nil)
		prev := 0.0
		for it.Next() != 0 {
			_, v := it.At()
			if v >= prev {
				sum += v - prev
			} else {
				sum += v
			}
			prev = v
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestMaxTenantsRefusal: a tenant over max_tenants is refused with 429
// and a Retry-After of seconds, not one (gRPC: ResourceExhausted with
// RetryInfo), naming max_tenants, and leaves no directory and no series
// under its name.
func TestMaxTenantsRefusal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		idle       time.Duration
		retryAfter string
	}{
		{"closes after an hour idle", time.Hour, "60"},
		{"never closes", 0, "60"},
		{"closes after 10s idle", 10 * time.Second, "10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			e, _ := startListening(t, dataDir, 1, tc.idle, nil, nil)
			if resp, body := post(t, e, "first", "svc"); resp.StatusCode != http.StatusOK {
				t.Fatalf("first: %d %s", resp.StatusCode, body)
			}
			refused := "refused-" + strings.ReplaceAll(tc.name, " ", "-")
			resp, body := post(t, e, refused, "svc")
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != tc.retryAfter || !strings.Contains(body, "max_tenants (1)") {
				t.Errorf("second tenant: %d, Retry-After %q, %q; want 429 after %ss naming max_tenants", resp.StatusCode, resp.Header.Get("Retry-After"), body, tc.retryAfter)
			}
			err := exportGRPC(t, e, refused, "svc")
			if st := status.Convert(err); st.Code() != codes.ResourceExhausted || len(st.Details()) == 0 {
				t.Errorf("second tenant over gRPC: %v, want ResourceExhausted with RetryInfo", err)
			}
			if _, err := os.Stat(store.Dir(dataDir, refused)); !os.IsNotExist(err) {
				t.Errorf("the refused tenant has a directory: %v", err)
			}
			if got := seriesOf(t, prometheus.DefaultGatherer, refused); len(got) > 0 {
				t.Errorf("the refused tenant has series: %v", got)
			}
		})
	}
}

// TestStartWithMoreTenantsThanMax: a data_dir with more tenant stores
// than max_tenants starts; each opens for a query, a query beyond the
// limit is refused with an error naming it until an open tenant is idle.
func TestStartWithMoreTenantsThanMax(t *testing.T) {
	dataDir := t.TempDir()
	e, _ := startListening(t, dataDir, 4, 0, nil, nil)
	for i := 0; i < 4; i++ {
		tenant := fmt.Sprintf("t%d", i)
		if resp, body := post(t, e, tenant, "svc"); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", tenant, resp.StatusCode, body)
		}
		waitConsumed(t, e, tenant)
	}
	e.Stop(context.Background())

	e, clk := startListening(t, dataDir, 2, time.Minute, nil, nil)
	if open := openTenants(e); len(open) != 0 {
		t.Errorf("open at start: %v, want none (they open on demand)", open)
	}
	if got := strings.Join(e.Tenants(), ","); got != "t0,t1,t2,t3" {
		t.Errorf("Tenants %s, want the four on disk", got)
	}
	for _, tenant := range []string{"t0", "t1"} {
		if got, err := calls(t, e, tenant); err != nil || got != 3 {
			t.Errorf("%s: %v, %v; want 3", tenant, got, err)
		}
	}
	if _, err := calls(t, e, "t2"); !errors.Is(err, ErrTooManyTenants) || !strings.Contains(err.Error(), "max_tenants (2)") {
		t.Errorf("a third tenant's query with two open and busy: %v, want max_tenants refused", err)
	}
	if got, err := calls(t, e, "never-seen"); err != nil || got != 0 {
		t.Errorf("a tenant without a store: %v, %v; want empty", got, err)
	}
	if _, err := os.Stat(store.Dir(dataDir, "never-seen")); !os.IsNotExist(err) {
		t.Errorf("a query made a directory: %v", err)
	}
	clk.advance(2 * time.Minute)
	for _, tenant := range []string{"t2", "t3"} {
		if got, err := calls(t, e, tenant); err != nil || got != 3 {
			t.Errorf("%s once the others are idle: %v, %v; want 3", tenant, got, err)
		}
	}
}

// tenantDamages break a tenant's store as disks and people do.
var tenantDamages = []struct {
	name   string
	damage func(t *testing.T, dir string, blocks []string)
	path   string // what the repair moves; "" for the first block
}{
	{"stray WAL segment", func(t *testing.T, dir string, _ []string) {
		if err := os.WriteFile(filepath.Join(dir, "wal", "00000099"), []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}, "wal/00000099"},
	{"damaged block index", func(t *testing.T, dir string, blocks []string) {
		if err := os.Truncate(filepath.Join(dir, blocks[0], "index"), 64); err != nil {
			t.Fatal(err)
		}
	}, ""},
	{"wal is a file", func(t *testing.T, dir string, _ []string) {
		if err := os.RemoveAll(filepath.Join(dir, "wal")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "wal"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}, "wal"},
}

// writeBlocks gives a tenant a store with blocks: six hours of one series,
// compacted. It returns the block directories.
func writeBlocks(t *testing.T, dataDir, tenant string) []string {
	t.Helper()
	db, err := tsdb.Open(store.Dir(dataDir, tenant), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app := db.Appender(context.Background())
	now := time.Now()
	for ts := now.Add(-6 * time.Hour); ts.Before(now); ts = ts.Add(time.Minute) {
		if _, err := app.Append(0, labels.FromStrings("__name__", "old"), ts.UnixMilli(), 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range db.Blocks() {
		out = append(out, filepath.Base(b.Dir()))
	}
	if len(out) == 0 {
		t.Fatal("no block written")
	}
	return out
}

// TestDamagedTenantQuarantined: one tenant's store is damaged, another's
// is fine. The engine starts and serves the healthy tenant; the damaged
// one is quarantined: in TenantStatuses and spangraph_tenant_quarantined,
// logged with the file and the repair, its spans refused with 500 /
// Internal (not retried) naming the repair, its queries with an error.
// After store.Repair it opens, with its good blocks, and takes spans.
func TestDamagedTenantQuarantined(t *testing.T) {
	for _, tc := range tenantDamages {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			blocks := writeBlocks(t, dataDir, "bad")
			tc.damage(t, store.Dir(dataDir, "bad"), blocks)
			path := tc.path
			if path == "" {
				path = blocks[0]
			}
			var log otlptest.LogBuffer
			e, clk := startListening(t, dataDir, 5, time.Hour, prometheus.NewRegistry(), &log)

			if resp, body := post(t, e, "good", "svc"); resp.StatusCode != http.StatusOK {
				t.Fatalf("healthy tenant: %d %s", resp.StatusCode, body)
			}
			waitConsumed(t, e, "good")
			resp, body := post(t, e, "bad", "svc")
			if resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Retry-After") != "" ||
				!strings.Contains(body, "spangraph repair --tenant bad") || !strings.Contains(body, path) {
				t.Errorf("damaged tenant: %d Retry-After %q %q; want 500 naming %s and the repair", resp.StatusCode, resp.Header.Get("Retry-After"), body, path)
			}
			if err := exportGRPC(t, e, "bad", "svc"); status.Code(err) != codes.Internal {
				t.Errorf("damaged tenant over gRPC: %v, want Internal", err)
			}
			if st := e.TenantStatus("bad"); st.State != TenantQuarantined || !strings.Contains(st.Problem, path) {
				t.Errorf("status %+v, want quarantined naming %s", st, path)
			}
			if got := testutil.ToFloat64(tenantQuarantined.WithLabelValues("bad")); got != 1 {
				t.Errorf("spangraph_tenant_quarantined{tenant=bad} %v, want 1", got)
			}
			if !strings.Contains(log.String(), "quarantined") || !strings.Contains(log.String(), "spangraph repair --tenant bad") {
				t.Errorf("not logged with the repair:\n%s", log.String())
			}
			if _, err := calls(t, e, "bad"); !errors.Is(err, ErrQuarantined) {
				t.Errorf("query of the damaged tenant: %v, want quarantined", err)
			}
			e.Collect()
			if got, err := calls(t, e, "good"); err != nil || got != 3 {
				t.Errorf("healthy tenant: %v, %v; want 3", got, err)
			}

			res, err := store.Repair(dataDir, "bad", false, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(filepath.Join(res.To, path)); err != nil {
				t.Errorf("the damaged %s is not kept: %v", path, err)
			}
			clk.advance(2 * time.Second) // the directory is looked at once a second
			if resp, body := post(t, e, "bad", "svc"); resp.StatusCode != http.StatusOK {
				t.Fatalf("after the repair: %d %s", resp.StatusCode, body)
			}
			waitConsumed(t, e, "bad")
			e.Collect()
			if got, err := calls(t, e, "bad"); err != nil || got != 3 {
				t.Errorf("repaired tenant: %v, %v; want 3", got, err)
			}
			if st := e.TenantStatus("bad"); st.State != TenantOpen {
				t.Errorf("status after the repair %+v", st)
			}
			if got := seriesOf(t, prometheus.DefaultGatherer, "bad"); strings.Contains(strings.Join(got, ","), "quarantined") {
				t.Errorf("still reported quarantined: %v", got)
			}
			kept := strconv.Itoa(len(blocks) - 1)
			if tc.path != "" {
				kept = strconv.Itoa(len(blocks))
			}
			if got := strconv.Itoa(res.Blocks); got != kept {
				t.Errorf("the repaired store kept %s blocks, want %s", got, kept)
			}
		})
	}
}

// TestQueriesRaceEviction: queries of a tenant run while its idle close
// is forced again and again; none reads a closed store (each gets the
// tenant's data, no error), and the tenant is closed and reopened many
// times meanwhile.
func TestQueriesRaceEviction(t *testing.T) {
	e, clk := startListening(t, t.TempDir(), 1, time.Second, nil, nil)
	if resp, body := post(t, e, "t", "svc"); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	waitConsumed(t, e, "t")
	e.Collect()
	closedBefore := testutil.ToFloat64(tenantsClosed)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				// A pause between queries, so that the tenant is often idle
				// when evictIdle looks, even when a query takes several ms
				// (-race on a loaded machine).
				case <-time.After(5 * time.Millisecond):
				}
				if got, err := calls(t, e, "t"); err != nil || got != 3 {
					t.Errorf("query during evictions: %v, %v", got, err)
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		clk.advance(2 * time.Second)
		e.evictIdle()
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if n := testutil.ToFloat64(tenantsClosed) - closedBefore; n < 5 {
		t.Errorf("the tenant closed %v times during the queries; the test needs it to close often", n)
	}
}
