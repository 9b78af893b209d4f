package query

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/spangraph/spangraph/pkg/promtest"
	"github.com/spangraph/spangraph/pkg/rolling"
	"github.com/spangraph/spangraph/pkg/store"
)

// promProcess is a real Prometheus (package promtest) that takes remote
// writes, native histograms and exemplars.
type promProcess struct {
	*promtest.Server
	t testing.TB
}

func startProm(t testing.TB) *promProcess { return &promProcess{Server: promtest.Start(t), t: t} }

func (p *promProcess) url() string { return p.URL() }

// pollUntil polls cond every 20 ms until it holds, failing after timeout.
func pollUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// write remote-writes series to p, a few hundred at a time.
func (p *promProcess) write(series []prompb.TimeSeries) {
	p.t.Helper()
	for len(series) > 0 {
		n := min(len(series), 500)
		raw, err := (&prompb.WriteRequest{Timeseries: series[:n]}).Marshal()
		if err != nil {
			p.t.Fatal(err)
		}
		series = series[n:]
		req, err := http.NewRequest(http.MethodPost, p.url()+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
		if err != nil {
			p.t.Fatal(err)
		}
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			p.t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			p.t.Fatalf("remote write: %s: %s", resp.Status, body)
		}
	}
}

// instanceLabel is the label Tempo's metrics-generator instances tell
// their series apart by, and Spangraph's instances too.
const instanceLabel = "__metrics_gen_instance"

// mirror copies every sample and exemplar of st into p. A float series
// for which split returns shares is written as one series per share,
// told apart by __metrics_gen_instance, each with its share of every
// value, as instances that each counted part of the spans would write
// them; the sums over the instances are the series of st.
func mirror(t testing.TB, st *store.Store, p *promProcess, split func(labels.Labels) []float64) {
	t.Helper()
	ctx := context.Background()
	all := []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}
	eq, err := st.ExemplarQuerier(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exs, err := eq.Select(math.MinInt64, math.MaxInt64, all)
	if err != nil {
		t.Fatal(err)
	}
	exemplarsOf := map[string][]prompb.Exemplar{}
	for _, e := range exs {
		for _, x := range e.Exemplars {
			exemplarsOf[e.SeriesLabels.String()] = append(exemplarsOf[e.SeriesLabels.String()],
				prompb.Exemplar{Labels: prompb.FromLabels(x.Labels, nil), Value: x.Value, Timestamp: x.Ts})
		}
	}
	sq, err := st.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	set := sq.Select(ctx, false, nil, all...)
	var out []prompb.TimeSeries
	var it chunkenc.Iterator
	for set.Next() {
		l := set.At().Labels()
		var floats []prompb.Sample
		var hists []prompb.Histogram
		it = set.At().Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				ts, v := it.At()
				floats = append(floats, prompb.Sample{Timestamp: ts, Value: v})
			case chunkenc.ValHistogram:
				ts, h := it.AtHistogram(nil)
				hists = append(hists, prompb.FromIntHistogram(ts, h))
			case chunkenc.ValFloatHistogram:
				ts, h := it.AtFloatHistogram(nil)
				hists = append(hists, prompb.FromFloatHistogram(ts, h))
			}
		}
		shares := []float64{1}
		if s := split(l); len(s) > 0 && len(hists) == 0 {
			shares = s
		}
		for i, share := range shares {
			sl := l
			if len(shares) > 1 {
				sl = labels.NewBuilder(l).Set(instanceLabel, "instance-"+strconv.Itoa(i)).Labels()
			}
			ts := prompb.TimeSeries{Labels: prompb.FromLabels(sl, nil), Histograms: hists}
			for _, smp := range floats {
				if !value.IsStaleNaN(smp.Value) {
					smp.Value *= share
				}
				ts.Samples = append(ts.Samples, smp)
			}
			if i == 0 {
				ts.Exemplars = exemplarsOf[l.String()]
			}
			out = append(out, ts)
		}
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	p.write(out)
}

// noSplit keeps every series whole.
func noSplit(labels.Labels) []float64 { return nil }

// trapSource is a RollingSource that fails the test when anything opens
// a store or the rolling window: with a backend, nothing may.
type trapSource struct{ t testing.TB }

func (s trapSource) Queryable(tenant string) (storage.Queryable, storage.ExemplarQueryable) {
	s.t.Errorf("the embedded store of %q was opened with a query backend set", tenant)
	return failingQueryable{fmt.Errorf("trap")}, nil
}

func (s trapSource) Rolling(tenant string) (*rolling.Store, func()) {
	s.t.Errorf("the rolling window of %q was read with a query backend set", tenant)
	return nil, func() {}
}

// trapNative is a trapSource that says the processors write native
// latency histograms.
type trapNative struct{ trapSource }

func (trapNative) NativeLatency(string) (bool, bool) { return true, true }

// backendQuerier returns a querier whose reads go to url, over a source
// that must never be read.
func backendQuerier(t testing.TB, src Source, cfg Config, bc BackendConfig) *Querier {
	t.Helper()
	if bc.Timeout == 0 {
		bc.Timeout = DefaultBackendConfig().Timeout
	}
	if err := bc.Validate("query_backend"); err != nil {
		t.Fatal(err)
	}
	b, err := NewBackend(bc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	q := NewQuerier(src, cfg, slog.New(slog.DiscardHandler), nil)
	q.UseBackend(b)
	return q
}

// sameFloat: equal within 1e-9 relative, NaN equal to NaN.
func sameFloat(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

// sameFigures compares structs, slices and maps field by field, floats
// with sameFloat; it returns the path of the first difference.
func sameFigures(a, b reflect.Value, path string) (string, bool) {
	if l, ok := a.Interface().(labels.Labels); ok {
		return path, labels.Equal(l, b.Interface().(labels.Labels))
	}
	switch a.Kind() {
	case reflect.Float64:
		return path, sameFloat(a.Float(), b.Float())
	case reflect.Slice:
		if a.Len() != b.Len() {
			return fmt.Sprintf("%s: length %d vs %d", path, a.Len(), b.Len()), false
		}
		for i := 0; i < a.Len(); i++ {
			if p, ok := sameFigures(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); !ok {
				return p, false
			}
		}
		return path, true
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if p, ok := sameFigures(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); !ok {
				return p, false
			}
		}
		return path, true
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return path, a.IsNil() == b.IsNil()
		}
		return sameFigures(a.Elem(), b.Elem(), path)
	}
	return path, a.Interface() == b.Interface()
}

// requireSame fails the test unless want and got have the same figures.
func requireSame(t *testing.T, what string, want, got any) {
	t.Helper()
	if p, ok := sameFigures(reflect.ValueOf(want), reflect.ValueOf(got), what); !ok {
		t.Errorf("%s differs at %s:\nembedded %+v\nbackend  %+v", what, p, want, got)
	}
}

// bucketsOf lists a histogram's buckets with observations, as the API
// does.
func bucketsOf(h *histogram.FloatHistogram) []histogram.Bucket[float64] {
	var out []histogram.Bucket[float64]
	for it := h.AllBucketIterator(); it.Next(); {
		if b := it.At(); b.Count != 0 {
			out = append(out, b)
		}
	}
	return out
}

// sameHistogram compares count, sum and the buckets with observations.
func sameHistogram(a, b *histogram.FloatHistogram) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	if a == nil {
		return true
	}
	ab, bb := bucketsOf(a), bucketsOf(b)
	if !sameFloat(a.Count, b.Count) || !sameFloat(a.Sum, b.Sum) || len(ab) != len(bb) {
		return false
	}
	for i := range ab {
		if !sameFloat(ab[i].Upper, bb[i].Upper) || !sameFloat(ab[i].Lower, bb[i].Lower) || !sameFloat(ab[i].Count, bb[i].Count) {
			return false
		}
	}
	return true
}

// sameValue compares two PromQL results, series in label order.
func sameValue(want, got parser.Value) bool {
	switch w := want.(type) {
	case promql.Vector:
		g, ok := got.(promql.Vector)
		if !ok || len(w) != len(g) {
			return false
		}
		w, g = append(promql.Vector(nil), w...), append(promql.Vector(nil), g...)
		for _, v := range []promql.Vector{w, g} {
			sort.Slice(v, func(i, j int) bool { return labels.Compare(v[i].Metric, v[j].Metric) < 0 })
		}
		for i := range w {
			if !labels.Equal(w[i].Metric, g[i].Metric) || w[i].T != g[i].T || !sameFloat(w[i].F, g[i].F) || !sameHistogram(w[i].H, g[i].H) {
				return false
			}
		}
		return true
	case promql.Matrix:
		g, ok := got.(promql.Matrix)
		if !ok || len(w) != len(g) {
			return false
		}
		w, g = append(promql.Matrix(nil), w...), append(promql.Matrix(nil), g...)
		for _, m := range []promql.Matrix{w, g} {
			sort.Slice(m, func(i, j int) bool { return labels.Compare(m[i].Metric, m[j].Metric) < 0 })
		}
		for i := range w {
			if !labels.Equal(w[i].Metric, g[i].Metric) || len(w[i].Floats) != len(g[i].Floats) || len(w[i].Histograms) != len(g[i].Histograms) {
				return false
			}
			for j, p := range w[i].Floats {
				if p.T != g[i].Floats[j].T || !sameFloat(p.F, g[i].Floats[j].F) {
					return false
				}
			}
			for j, p := range w[i].Histograms {
				if p.T != g[i].Histograms[j].T || !sameHistogram(p.H, g[i].Histograms[j].H) {
					return false
				}
			}
		}
		return true
	case promql.Scalar:
		g, ok := got.(promql.Scalar)
		return ok && w.T == g.T && sameFloat(w.V, g.V)
	case promql.String:
		return reflect.DeepEqual(want, got)
	}
	return false
}

// apiHistogram is h as Prometheus' JSON lists it (util/jsonutil's
// MarshalHistogram): the buckets with observations, with their bounds'
// inclusiveness.
func apiHistogram(h *histogram.FloatHistogram) *model.SampleHistogram {
	out := &model.SampleHistogram{Count: model.FloatString(h.Count), Sum: model.FloatString(h.Sum)}
	for _, b := range bucketsOf(h) {
		boundaries := int32(2)
		switch {
		case b.LowerInclusive && b.UpperInclusive:
			boundaries = 3
		case b.LowerInclusive:
			boundaries = 1
		case b.UpperInclusive:
			boundaries = 0
		}
		out.Buckets = append(out.Buckets, &model.HistogramBucket{Boundaries: boundaries,
			Lower: model.FloatString(b.Lower), Upper: model.FloatString(b.Upper), Count: model.FloatString(b.Count)})
	}
	return out
}
