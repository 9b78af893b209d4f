package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/budget"

	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/rolling"
	"github.com/spangraph/spangraph/pkg/store"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// rollingStores is a RollingSource over one tenant that counts the TSDB
// queriers it opens.
type rollingStores struct {
	st      *store.Store
	rolling *rolling.Store
	opened  *atomic.Int64
}

func (s rollingStores) Queryable(string) (storage.Queryable, storage.ExemplarQueryable) {
	return countingQueryable{s.st, s.opened}, s.st
}

func (s rollingStores) Rolling(string) (*rolling.Store, func()) { return s.rolling, func() {} }

type countingQueryable struct {
	q      storage.Queryable
	opened *atomic.Int64
}

func (c countingQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	c.opened.Add(1)
	return c.q.Querier(mint, maxt)
}

// TestRollingMatchesTSDB writes 90 minutes of collections through the
// registry into a TSDB with a rolling window in front, and holds the node
// graph and the RED table read from the window to those read from the
// TSDB, over windows inside the horizon: with counter resets (a restart
// half an hour before the end, after which the window is rebuilt from the
// TSDB in the background while collections go on), series that go stale,
// series that appear and vanish inside the window, and overflow series.
// A window older than the horizon must go to the TSDB, and one inside it
// must not.
func TestRollingMatchesTSDB(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), tenant.Default, store.Options{Retention: 24 * time.Hour}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const interval = 15 * time.Second
	horizon := time.Hour
	start := end.Add(-90 * time.Minute)
	restart := end.Add(-30 * time.Minute)
	rng := rand.New(rand.NewPCG(3, 4))

	type metrics struct {
		reg              *registry.Registry
		requests, failed *registry.Counter
		server, client   *registry.Histogram
		latency          *registry.Histogram
		rolling          *rolling.Store
	}
	// The rebuild after the restart reads the TSDB once three collections
	// have waited in its backlog: the first two it reads too (up to
	// rebuildAt), the third it does not.
	gate := make(chan struct{})
	rebuilt := make(chan error, 1)
	const backlog = 3
	rebuildAt := restart.Add((backlog - 1) * interval)
	open := func(now time.Time) metrics {
		reg := registry.New(registry.Config{StaleDuration: 2 * time.Minute, MaxActiveSeries: 60})
		reg.SetZeroFloor(st.NewestSample())
		edge := []string{"client", "server", "connection_type"}
		bounds := []float64{0.1, 0.2, 0.4, 0.8}
		m := metrics{
			reg:      reg,
			requests: reg.NewCounter(metricRequests, edge),
			failed:   reg.NewCounter(metricFailed, edge),
			server:   reg.NewHistogram(metricServerSeconds, edge, bounds),
			client:   reg.NewHistogram(metricClientSeconds, edge, bounds),
			latency:  reg.NewHistogram(metricLatency, []string{"service", "span_name", "span_kind", "status_code"}, bounds, metricCalls),
			rolling:  rolling.New(horizon.Milliseconds(), nil),
		}
		if now.Equal(start) {
			if err := m.rolling.Rebuild(context.Background(), st, now.UnixMilli()); err != nil {
				t.Fatal(err)
			}
			return m
		}
		m.rolling.RebuildInBackground(gatedQueryable{st, gate}, rebuildAt.UnixMilli(), func(err error) { rebuilt <- err })
		return m
	}
	m := open(start)
	type edge struct {
		client, server, ctype string
		from, to              time.Time // traffic in [from, to)
	}
	var edges []edge
	for i := 0; i < 12; i++ {
		edges = append(edges, edge{fmt.Sprintf("svc-%d", i), fmt.Sprintf("svc-%d", (i+1)%12), "", start, end.Add(time.Minute)})
	}
	edges = append(edges,
		edge{"svc-0", "db", "database", start, end.Add(time.Minute)},
		edge{"user", "svc-0", "virtual_node", start, end.Add(time.Minute)},
		edge{"svc-3", "gone", "", start, end.Add(-40 * time.Minute)},
		edge{"svc-4", "late", "", end.Add(-20 * time.Minute), end.Add(time.Minute)},
		edge{"svc-5", "blip", "", end.Add(-50 * time.Minute), end.Add(-44 * time.Minute)},
		edge{"svc-6", "blip", "messaging_system", end.Add(-12 * time.Minute), end.Add(-9 * time.Minute)},
	)
	// Past MaxActiveSeries: these fold into the overflow series.
	for i := 0; i < 20; i++ {
		edges = append(edges, edge{fmt.Sprintf("crowd-%d", i), "svc-1", "", end.Add(-70 * time.Minute), end.Add(time.Minute)})
	}
	restarted, waited := false, 0
	for now := start; !now.After(end); now = now.Add(interval) {
		if !restarted && !now.Before(restart) {
			m, restarted = open(now), true
		}
		if restarted && waited < backlog {
			if r, ok := m.rolling.Read(now.Add(-time.Minute).UnixMilli(), now.UnixMilli()); ok {
				r.Close()
				t.Fatal("a window is read from memory before the rebuild")
			}
			if waited++; waited == backlog {
				// The rebuild runs on beside the collections.
				close(gate)
			}
		}
		for _, e := range edges {
			if now.Before(e.from) || !now.Before(e.to) {
				continue
			}
			lv := registry.MakeLabelValues([]string{e.client, e.server, e.ctype})
			n := 1 + rng.IntN(20)
			m.requests.Add(lv, float64(n))
			if rng.IntN(4) == 0 {
				m.failed.Add(lv, float64(rng.IntN(n+1)))
			}
			for k := 0; k < n; k++ {
				d := rng.ExpFloat64() * 0.2
				m.server.Observe(lv, d, 1, nil, 0)
				m.client.Observe(lv, d*1.1, 1, nil, 0)
				status := "STATUS_CODE_UNSET"
				if rng.IntN(10) == 0 {
					status = "STATUS_CODE_ERROR"
				}
				span := "op-" + e.ctype
				if e.server == "svc-2" && k%2 == 1 {
					// A second span name, so that a row by service sums
					// rows by span name.
					span = "op-other"
				}
				m.latency.Observe(registry.MakeLabelValues([]string{e.server, span, "SPAN_KIND_SERVER", status}), d, 1, nil, 0, 1)
			}
		}
		app := m.rolling.Appender(st.Appender(context.Background()), now.UnixMilli())
		if _, err := m.reg.Collect(app, now); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-rebuilt; err != nil {
		t.Fatal(err)
	}
	if m.reg.Overflowed() == 0 {
		t.Fatal("no update overflowed: the test misses overflow series")
	}

	fromTSDB := rolling.New(horizon.Milliseconds(), nil)
	if err := fromTSDB.Rebuild(context.Background(), st, end.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	tsdb := NewQuerier(stores{tenant.Default: st}, DefaultConfig(), logger, nil)
	for name, rs := range map[string]*rolling.Store{"live": m.rolling, "rebuilt": fromTSDB} {
		var opened atomic.Int64
		fromMemory := NewQuerier(rollingStores{st, rs, &opened}, DefaultConfig(), logger, nil)
		for _, w := range []struct{ from, to time.Duration }{
			{-time.Hour + time.Second, 0}, {-59 * time.Minute, 0}, {-5 * time.Minute, 0}, {-15 * time.Minute, -7 * time.Minute},
			{-45 * time.Minute, -25 * time.Minute}, {-35 * time.Minute, -28 * time.Minute}, {-time.Minute, 0}, {-10 * time.Minute, time.Minute},
		} {
			t.Run(fmt.Sprintf("%s/%s..%s", name, w.from, w.to), func(t *testing.T) {
				ctx := context.Background()
				go_, gt := GraphOptions{Start: end.Add(w.from), End: end.Add(w.to)}, GraphOptions{Start: end.Add(w.from), End: end.Add(w.to)}
				opened.Store(0)
				got, err := fromMemory.ServiceGraph(ctx, tenant.Default, go_)
				if err != nil {
					t.Fatal(err)
				}
				for _, by := range []string{"service", "span_name"} {
					o := REDOptions{Start: end.Add(w.from), End: end.Add(w.to), GroupBy: by, SpanKinds: []string{"SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"}}
					gotRED, err := fromMemory.REDTable(ctx, tenant.Default, o)
					if err != nil {
						t.Fatal(err)
					}
					wantRED, err := tsdb.REDTable(ctx, tenant.Default, o)
					if err != nil {
						t.Fatal(err)
					}
					if len(wantRED) == 0 {
						t.Fatal("the TSDB's RED table is empty")
					}
					if !closeEnough(reflect.ValueOf(gotRED), reflect.ValueOf(wantRED)) {
						t.Errorf("RED by %s from memory:\n%+v\nfrom the TSDB:\n%+v", by, gotRED, wantRED)
					}
				}
				if n := opened.Load(); n != 0 {
					t.Errorf("a window inside the horizon opened %d TSDB queriers", n)
				}
				want, err := tsdb.ServiceGraph(ctx, tenant.Default, gt)
				if err != nil {
					t.Fatal(err)
				}
				if len(want.Edges) < 10 {
					t.Fatalf("the TSDB's graph has %d edges", len(want.Edges))
				}
				if !closeEnough(reflect.ValueOf(*got), reflect.ValueOf(*want)) {
					t.Errorf("graph from memory:\n%+v\nfrom the TSDB:\n%+v", *got, *want)
				}
			})
		}
		opened.Store(0)
		if _, err := fromMemory.ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: end.Add(-80 * time.Minute), End: end}); err != nil {
			t.Fatal(err)
		}
		if opened.Load() == 0 {
			t.Errorf("%s: a window older than the horizon did not read the TSDB", name)
		}
	}
}

// closeEnough compares two values field by field, floats within rounding (NaN
// equal to NaN).
func closeEnough(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Float64:
		x, y := a.Float(), b.Float()
		if math.IsNaN(x) || math.IsNaN(y) {
			return math.IsNaN(x) && math.IsNaN(y)
		}
		return math.Abs(x-y) <= 1e-9*math.Max(1, math.Max(math.Abs(x), math.Abs(y)))
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !closeEnough(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !closeEnough(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	}
	return a.Interface() == b.Interface()
}

// TestRollingCloseStopsRebuild: closing a store whose rebuild has not
// begun reading ends the rebuild and gives all its memory back, so that
// the TSDB can be closed next.
func TestRollingCloseStopsRebuild(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), tenant.Default, store.Options{Retention: 24 * time.Hour}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pool := budget.NewPool("memory_limit", 1<<20)
	rs := rolling.New(time.Hour.Milliseconds(), pool)
	gate := make(chan struct{})
	done := make(chan error, 1)
	rs.RebuildInBackground(gatedQueryable{st, gate}, end.UnixMilli(), func(err error) { done <- err })
	app := rs.Appender(st.Appender(context.Background()), end.UnixMilli())
	if _, err := app.Append(0, labels.FromStrings("__name__", metricRequests, "client", "a", "server", "b"), end.UnixMilli(), 1); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if pool.InUse() == 0 {
		t.Fatal("the backlog is not charged to the pool")
	}
	closed := make(chan struct{})
	go func() { rs.Close(); close(closed) }()
	// Close cancels the fill at once, then waits for it; the gate opens
	// after that, else the fill may finish first (a race, seen under
	// -race on a loaded machine).
	time.Sleep(100 * time.Millisecond)
	close(gate)
	<-closed
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("rebuild ended with %v, want context.Canceled", err)
	}
	if pool.InUse() != 0 {
		t.Errorf("%d bytes still taken after Close", pool.InUse())
	}
}
