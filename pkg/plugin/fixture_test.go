package plugin

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/loadgen"
	"github.com/spangraph/spangraph/pkg/otlptest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// t0 is the fixed start of the fixture's data, so that golden frames do
// not depend on the clock.
var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// fixture is a real engine in a temporary directory, fed with the load
// generator's shop traffic at fixed times.
type fixture struct {
	eng  *engine.Engine
	svc  *Service
	inst *Instance
}

// newFixture starts an engine whose own collection loop never fires (the
// test collects at fixed times) and whose receiver does not listen.
func newFixture(t testing.TB, jsonData string) *fixture {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.OTLPGRPC, cfg.OTLPHTTP, cfg.HTTP = "", "", ""
	cfg.CollectionInterval = 15 * time.Second
	eng, err := engine.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(); err != nil {
		t.Fatal(err)
	}
	svc := New(eng, Options{})
	t.Cleanup(func() {
		svc.Close()
		eng.Stop(context.Background())
	})
	inst, err := svc.NewInstance(context.Background(), backend.DataSourceInstanceSettings{
		UID: "spangraph-uid", Name: "Spangraph", JSONData: json.RawMessage(jsonData),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{eng: eng, svc: svc, inst: inst.(*Instance)}
	if err := eng.Admit(f.inst.settings.Tenant); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) tenant() *engine.Instance { return f.eng.Tenant(f.inst.settings.Tenant) }

// feedShop sends rounds of shop traffic, one round every 15 s from t0,
// each followed by a collection, like the engine's loop but at fixed
// times. Spans go straight to the engine's consumer: the receiver would
// refuse spans that end so far from now.
func (f *fixture) feedShop(t testing.TB, rounds, tracesPerRound int) {
	t.Helper()
	gen := loadgen.NewGenerator(loadgen.Shop(10, rand.New(rand.NewPCG(1, 2))), 42)
	for r := 0; r < rounds; r++ {
		now := t0.Add(time.Duration(r) * 15 * time.Second)
		f.consume(t, gen.Request(tracesPerRound, now))
		f.collect(t, now)
	}
}

func (f *fixture) consume(t testing.TB, req *coltracepb.ExportTraceServiceRequest) {
	t.Helper()
	b := otlptest.Batch(t, req)
	f.eng.Consume(f.inst.settings.Tenant, b)
	b.Release()
	// Every span of a generated trace is in the same request, so what is
	// still pending is final: settle it now rather than after wait.
	f.tenant().ServiceGraph.Flush()
}

func (f *fixture) collect(t testing.TB, now time.Time) {
	t.Helper()
	inst := f.tenant()
	app := inst.Store.Appender(context.Background())
	if _, err := inst.Registry.Collect(app, now); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

// dataQuery is a query over [from, to] as Grafana sends it.
func dataQuery(refID string, from, to time.Time, model any) backend.DataQuery {
	raw, err := json.Marshal(model)
	if err != nil {
		panic(err)
	}
	return backend.DataQuery{
		RefID:         refID,
		JSON:          raw,
		TimeRange:     backend.TimeRange{From: from, To: to},
		Interval:      15 * time.Second,
		MaxDataPoints: 100,
	}
}

func (f *fixture) run(t testing.TB, q backend.DataQuery) backend.DataResponse {
	t.Helper()
	resp, err := f.inst.QueryData(context.Background(), &backend.QueryDataRequest{Queries: []backend.DataQuery{q}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Responses[q.RefID]
}
