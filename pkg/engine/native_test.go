package engine

import (
	"context"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/processor"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// TestNativeHistogramsPerTenant: a tenant's override makes its processors
// write native latency histograms while the others keep classic ones,
// and the query side is told which (NativeLatency).
func TestNativeHistogramsPerTenant(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.OTLPGRPC, cfg.OTLPHTTP, cfg.HTTP = "", "", ""
	cfg.CollectionInterval = time.Hour
	native := "native"
	cfg.Overrides.Tenants = map[string]config.TenantOverrides{"t-native": {HistogramOverrides: processor.HistogramOverrides{GenerateNativeHistograms: &native}}}
	e, err := New(cfg, slog.New(slog.NewTextHandler(&otlptest.LogBuffer{}, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(context.Background())
	for _, id := range []string{"t-native", tenant.Default} {
		if err := e.Admit(id); err != nil {
			t.Fatal(err)
		}
		b := otlptest.Batch(t, exportRequest("svc"))
		e.Consume(id, b)
		b.Release()
	}
	e.Collect()

	for id, wantNative := range map[string]bool{"t-native": true, tenant.Default: false} {
		if sm, sg := e.NativeLatency(id); sm != wantNative || sg != wantNative {
			t.Errorf("%s: NativeLatency %v, %v; want %v", id, sm, sg, wantNative)
		}
		q, _ := e.Queryable(id)
		querier, err := q.Querier(0, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		var histograms, buckets int
		ss := querier.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, "traces_spanmetrics_latency(_bucket)?"))
		for ss.Next() {
			it := ss.At().Iterator(nil)
			for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
				if vt == chunkenc.ValHistogram || vt == chunkenc.ValFloatHistogram {
					histograms++
				} else if ss.At().Labels().Get(labels.MetricName) == "traces_spanmetrics_latency_bucket" {
					buckets++
				}
			}
		}
		querier.Close()
		if wantNative && (histograms == 0 || buckets != 0) {
			t.Errorf("%s: %d native samples, %d bucket samples; want native only", id, histograms, buckets)
		}
		if !wantNative && (histograms != 0 || buckets == 0) {
			t.Errorf("%s: %d native samples, %d bucket samples; want classic only", id, histograms, buckets)
		}
	}
}
