package engine

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/otlptest"
)

// reloadConfig is a config with one tenant whose token is token, span
// metrics with dims and a per-request span limit.
func reloadConfig(dataDir, token string, maxSpans int, dims ...string) config.Config {
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.OTLPGRPC, cfg.HTTP = "", ""
	cfg.OTLPHTTP = "127.0.0.1:0"
	cfg.CollectionInterval = time.Second
	cfg.Auth = auth.Config{Tenants: []auth.TenantConfig{{ID: "t", BearerTokens: []auth.Secret{auth.Secret(token)}}}}
	cfg.Limits.TenantLimits.MaxSpansPerRequest = maxSpans
	cfg.SpanMetrics.Dimensions = dims
	return cfg
}

// TestReloadUnderLoad: credentials, limits and dimensions change while
// spans flow; every span answered 200 is counted (under the old settings
// or the new), and the new settings apply from the next request.
func TestReloadUnderLoad(t *testing.T) {
	dataDir := t.TempDir()
	log := &otlptest.LogBuffer{}
	e, err := New(reloadConfig(dataDir, "old-token", 100), slog.New(slog.NewTextHandler(log, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(context.Background())
	url := "http://" + e.Receiver().HTTPAddr() + "/v1/traces"
	body := func(spans int) []byte {
		var ss []*tracepb.Span
		for i := range spans {
			ss = append(ss, otlptest.Span(byte(i+1), "op", tracepb.Span_SPAN_KIND_SERVER, time.Now(), time.Millisecond, otlptest.Str("http.method", "GET")))
		}
		return otlptest.Marshal(t, otlptest.Request(otlptest.Service("svc", ss...)))
	}
	post := func(token string, b []byte) int {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	var accepted atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			token, b := "old-token", body(2)
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch code := post(token, b); code {
				case http.StatusOK:
					accepted.Add(2)
				case http.StatusUnauthorized:
					token = "new-token" // the reload took the old one away
				default:
					t.Errorf("load: HTTP %d", code)
					return
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)

	// A config that fails validation changes nothing.
	bad := reloadConfig(dataDir, "new-token", 2, "http.method")
	bad.ServiceGraph.Wait = 0
	if err := e.Reload(bad); err == nil || !strings.Contains(err.Error(), "servicegraph.wait") {
		t.Errorf("invalid reload: %v, want an error naming servicegraph.wait", err)
	}
	if v := testutil.ToFloat64(reloadSuccessful); v != 0 {
		t.Errorf("spangraph_config_last_reload_successful = %v after a failed reload", v)
	}
	if code := post("old-token", body(3)); code != http.StatusOK {
		t.Errorf("after a refused reload the old settings changed: HTTP %d", code)
	}
	accepted.Add(3)
	// Nor does one that changes what only a restart applies.
	moved := reloadConfig(dataDir, "new-token", 2)
	moved.DataDir = t.TempDir()
	if err := e.Reload(moved); err == nil || !strings.HasPrefix(err.Error(), "data_dir:") {
		t.Errorf("reload changing data_dir: %v, want a refusal naming it", err)
	}

	if err := e.Reload(reloadConfig(dataDir, "new-token", 2, "http.method")); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(reloadSuccessful); v != 1 {
		t.Errorf("spangraph_config_last_reload_successful = %v after a reload", v)
	}
	if code := post("old-token", body(1)); code != http.StatusUnauthorized {
		t.Errorf("the old token after the reload: HTTP %d, want 401", code)
	}
	if code := post("new-token", body(3)); code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge {
		t.Errorf("3 spans over the new max_spans_per_request 2: HTTP %d", code)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	want := float64(accepted.Load())
	var got float64
	var dims int
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got, dims = callsInStore(t, e, "t")
		if got == want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != want {
		t.Errorf("calls in the store %v, spans answered 200 %v: a reload lost or double-counted spans", got, want)
	}
	if dims == 0 {
		t.Error("no series has the reloaded dimension http_method")
	}
	if !strings.Contains(log.String(), "tenant's processors rebuilt") {
		t.Errorf("no log of the rebuild:\n%s", log.String())
	}
}

// callsInStore sums the newest value of every traces_spanmetrics_calls_total
// series of tenant (a series whose labels changed on reload ended with its
// count), and counts those with an http_method label.
func callsInStore(t *testing.T, e *Engine, tenant string) (sum float64, withDim int) {
	t.Helper()
	q, _ := e.Queryable(tenant)
	querier, err := q.Querier(0, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer querier.Close()
	ss := querier.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "traces_spanmetrics_calls_total"))
	for ss.Next() {
		s := ss.At()
		last := math.NaN()
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			if _, v := it.At(); !math.IsNaN(v) {
				last = v
			}
		}
		if !math.IsNaN(last) {
			sum += last
		}
		if s.Labels().Get("http_method") != "" {
			withDim++
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(fmt.Errorf("select: %w", err))
	}
	return sum, withDim
}
