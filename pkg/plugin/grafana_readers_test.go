package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/query"
)

// The readers below read our frames the way Grafana's own code does,
// written from its documented behaviour: what a reader refuses here,
// Grafana refuses (or misdraws) in a panel, in Explore or in an alert rule.

// dataplaneKinds are the frame types Grafana's server-side expressions
// read through the dataplane libraries (pkg/expr/dataplane.go: the
// time-series and numeric kinds, in their long, wide and multi forms).
var dataplaneKinds = map[data.FrameType]bool{
	data.FrameTypeTimeSeriesLong: true, data.FrameTypeTimeSeriesWide: true, data.FrameTypeTimeSeriesMulti: true,
	data.FrameTypeNumericLong: true, data.FrameTypeNumericWide: true, data.FrameTypeNumericMulti: true,
}

// readAsAlert is what Grafana's alert evaluator makes of a query's frames
// (pkg/expr/converter.go): a typed first frame of a dataplane kind is read
// as that kind, and every other frame must then have the same type with a
// numeric value (and a time, for a time series); anything else falls back
// to the legacy reading, which accepts only wide time series and an
// untyped frame without fields as no data. It returns the kind read.
func readAsAlert(frames data.Frames) (string, error) {
	if len(frames) == 0 {
		return "no data", nil
	}
	first := frames[0]
	if first.Meta != nil && dataplaneKinds[first.Meta.Type] && !first.Meta.TypeVersion.IsZero() {
		if len(first.Fields) == 0 {
			return "no data", nil
		}
		for _, f := range frames {
			if f.Meta == nil || f.Meta.Type != first.Meta.Type {
				return "", fmt.Errorf("frame %q has wrong type, expected %s", f.Name, first.Meta.Type)
			}
			var numbers, times int
			for _, fl := range f.Fields {
				switch {
				case fl.Type().Numeric():
					numbers++
				case fl.Type().Time():
					times++
				}
			}
			if numbers == 0 || (first.Meta.Type.Kind() == data.KindTimeSeries && times != 1) {
				return "", fmt.Errorf("frame %q is not a %s", f.Name, first.Meta.Type)
			}
		}
		return string(first.Meta.Type.Kind()), nil
	}
	if len(frames) == 1 && len(first.Fields) == 0 {
		return "no data", nil
	}
	for _, f := range frames {
		if st := f.TimeSeriesSchema().Type; st != data.TimeSeriesTypeWide {
			return "", fmt.Errorf("input data must be a wide series but got type %s", st)
		}
	}
	return "wide", nil
}

// alertQuery runs one query as Grafana's alert evaluation sends it.
func (f *fixture) alertQuery(t *testing.T, q backend.DataQuery) backend.DataResponse {
	t.Helper()
	resp, err := f.inst.QueryData(context.Background(), &backend.QueryDataRequest{
		Headers: map[string]string{"FromAlert": "true"},
		Queries: []backend.DataQuery{q},
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Responses[q.RefID]
}

// TestAlertRulesReadEveryPromQLQuery: an alert rule on any PromQL query
// evaluates, whatever format and switches the query was saved with.
func TestAlertRulesReadEveryPromQLQuery(t *testing.T) {
	f := newFixture(t, `{"tracesDatasourceUid":"tempo-uid"}`)
	f.feedShop(t, 9, 20)
	from, to := t0, t0.Add(2*time.Minute)
	buckets := `sum by (le) (rate(traces_spanmetrics_latency_bucket{service="payment"}[1m]))`
	rate := `sum by (service) (rate(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER"}[$__rate_interval]))`
	for _, tc := range []struct {
		name  string
		model map[string]any
		want  string
	}{
		{"range", map[string]any{"expr": rate}, "timeseries"},
		{"instant", map[string]any{"expr": rate, "instant": true, "range": false}, "numeric"},
		{"table format", map[string]any{"expr": rate, "instant": true, "range": false, "format": "table"}, "numeric"},
		{"heatmap format", map[string]any{"expr": buckets, "format": "heatmap"}, "timeseries"},
		{"exemplars switched on", map[string]any{"expr": buckets, "exemplar": true}, "timeseries"},
		{"scalar", map[string]any{"expr": "scalar(sum(traces_spanmetrics_calls_total))", "instant": true, "range": false}, "numeric"},
		{"no series", map[string]any{"expr": "nothing_here", "instant": true, "range": false}, "no data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.alertQuery(t, dataQuery("A", from, to, tc.model))
			if r.Error != nil {
				t.Fatal(r.Error)
			}
			got, err := readAsAlert(r.Frames)
			if err != nil {
				t.Fatalf("the alert evaluator refuses the frames: %v\n%s", err, frameText(r.Frames))
			}
			if got != tc.want {
				t.Fatalf("read as %s, want %s", got, tc.want)
			}
		})
	}
}

// splitByDataTopic is how panels route frames (PanelQueryRunner and the
// time series panel): a frame whose meta.dataTopic is "annotations" is
// drawn as markers over the series (exemplars), the others are series.
func splitByDataTopic(frames data.Frames) (series, annotations data.Frames) {
	for _, f := range frames {
		if f.Meta != nil && f.Meta.DataTopic == data.DataTopicAnnotations {
			annotations = append(annotations, f)
		} else {
			series = append(series, f)
		}
	}
	return series, annotations
}

func TestExemplarsAreAnnotations(t *testing.T) {
	f := newFixture(t, `{"tracesDatasourceUid":"tempo-uid"}`)
	f.feedShop(t, 9, 20)
	from, to := t0, t0.Add(2*time.Minute)
	q := dataQuery("A", from, to, map[string]any{
		"expr":     `histogram_quantile(0.9, sum by (le) (rate(traces_spanmetrics_latency_bucket{service="payment"}[1m])))`,
		"exemplar": true,
	})
	r := f.run(t, q)
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	series, annotations := splitByDataTopic(r.Frames)
	if len(series) != 1 || len(annotations) != 1 {
		t.Fatalf("%d series and %d annotation frames, want 1 and 1:\n%s", len(series), len(annotations), frameText(r.Frames))
	}
	ex := annotations[0]
	if ex.RefID != "A" || ex.Fields[0].Name != "Time" || ex.Fields[2].Name != traceIDLabel || ex.Fields[2].Config == nil {
		t.Fatalf("exemplar frame %s: refId %q, fields %s", ex.Name, ex.RefID, frameText(annotations))
	}
	// Sampled per step: at least one exemplar per step that has any, never
	// all of them (the shop writes one per bucket and collection).
	all, err := f.svc.querier.Exemplars(context.Background(), f.inst.settings.Tenant, `traces_spanmetrics_latency_bucket{service="payment"}`, from, to.Add(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, s := range all {
		total += len(s.Exemplars)
	}
	if n := ex.Rows(); n == 0 || n >= total {
		t.Fatalf("%d exemplars of %d kept", n, total)
	}

	// A failed exemplar query is logged; the series still come back.
	var logs otlptest.LogBuffer
	f.svc.logger = slog.New(slog.NewTextHandler(&logs, nil))
	f.svc.exemplars = func(context.Context, string, string, time.Time, time.Time) ([]query.ExemplarSeries, error) {
		return nil, errors.New("exemplar storage unavailable")
	}
	r = f.run(t, q)
	if r.Error != nil || len(r.Frames) != 1 || !strings.Contains(logs.String(), "exemplar storage unavailable") {
		t.Fatalf("failed exemplars: %v, %d frames, log %q", r.Error, len(r.Frames), logs.String())
	}
}

func TestSampleExemplars(t *testing.T) {
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	row := func(s, v float64) exemplarRow { return exemplarRow{t: at(s), v: v} }
	for _, tc := range []struct {
		name string
		in   []exemplarRow
		want []exemplarRow
	}{
		{"one", []exemplarRow{row(1, 5)}, []exemplarRow{row(1, 5)}},
		// Values 1, 1.1, 1.2 and 9: σ ≈ 3.9, so only the largest of a step
		// is kept unless another lies more than 2σ below it.
		{"largest per step", []exemplarRow{row(1, 1), row(2, 1.2), row(16, 1.1), row(17, 9)}, []exemplarRow{row(2, 1.2), row(17, 9)}},
		{"outliers below", []exemplarRow{row(1, 100), row(2, 1), row(3, 99), row(4, 2), row(20, 50)}, []exemplarRow{row(1, 100), row(2, 1), row(20, 50)}},
	} {
		got := sampleExemplars(tc.in, 15*time.Second)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// readNodeGraph checks frames as Grafana's node graph panel reads them
// (public/app/plugins/panel/nodeGraph/utils.ts processNodes): field names
// matched case-insensitively, edges keyed by id (two edges of one id are
// drawn on top of each other), both ends of an edge among the nodes, arcs
// that fill the circle, a node without an isInstrumented field counted as
// instrumented.
func readNodeGraph(frames data.Frames) (instrumented map[string]bool, err error) {
	field := func(f *data.Frame, name string) *data.Field {
		for _, fl := range f.Fields {
			if strings.EqualFold(fl.Name, name) {
				return fl
			}
		}
		return nil
	}
	if len(frames) != 2 {
		return nil, fmt.Errorf("%d frames, want nodes and edges", len(frames))
	}
	nodes, edges := frames[0], frames[1]
	ids := field(nodes, "id")
	if ids == nil {
		return nil, errors.New("id field is required for nodes data frame")
	}
	instrumented = map[string]bool{}
	isInst := field(nodes, "isinstrumented")
	for j := 0; j < ids.Len(); j++ {
		id := ids.At(j).(string)
		instrumented[id] = isInst == nil || isInst.At(j).(bool)
		arcs := 0.0
		for _, fl := range nodes.Fields {
			if strings.HasPrefix(fl.Name, "arc__") {
				v, ok := fl.ConcreteAt(j)
				if !ok {
					return nil, fmt.Errorf("node %s: %s is empty", id, fl.Name)
				}
				arcs += v.(float64)
			}
		}
		if arcs < 0.999 || arcs > 1.001 {
			return nil, fmt.Errorf("node %s: arcs sum to %v", id, arcs)
		}
		// A node only ever seen as a client serves no requests: Tempo's
		// service map shows no rate for it, not "0 r/sec".
		if v, ok := field(nodes, "secondarystat").ConcreteAt(j); ok && v.(float64) == 0 {
			return nil, fmt.Errorf("node %s: a rate of 0 rather than none", id)
		}
	}
	eids, src, dst := field(edges, "id"), field(edges, "source"), field(edges, "target")
	if eids == nil || src == nil || dst == nil {
		return nil, errors.New("edges need id, source and target")
	}
	seen := map[string]bool{}
	for j := 0; j < eids.Len(); j++ {
		id := eids.At(j).(string)
		if seen[id] {
			return nil, fmt.Errorf("edge id %q twice", id)
		}
		seen[id] = true
		for _, end := range []string{src.At(j).(string), dst.At(j).(string)} {
			if _, ok := instrumented[end]; !ok {
				return nil, fmt.Errorf("edge %s: node %s missing", id, end)
			}
		}
	}
	return instrumented, nil
}

func TestNodeGraphAsGrafanaReadsIt(t *testing.T) {
	f := newFixture(t, `{"tracesDatasourceUid":"tempo-uid"}`)
	f.feedShop(t, 9, 20)
	// shop both calls stock and sends it messages: two edges, one pair.
	now := t0.Add(9 * 15 * time.Second)
	span := func(id byte, parent byte, kind tracepb.Span_SpanKind) *tracepb.Span {
		s := otlptest.Span(id, "reserve", kind, now, 10*time.Millisecond)
		s.TraceId = otlptest.TraceID(4242)
		if parent != 0 {
			s.ParentSpanId = []byte{parent, parent, parent, parent, parent, parent, parent, parent}
		}
		return s
	}
	f.consume(t, otlptest.Request(
		otlptest.Service("shop", span(1, 0, tracepb.Span_SPAN_KIND_CLIENT), span(2, 0, tracepb.Span_SPAN_KIND_PRODUCER)),
		otlptest.Service("stock", span(3, 1, tracepb.Span_SPAN_KIND_SERVER), span(4, 2, tracepb.Span_SPAN_KIND_CONSUMER)),
	))
	f.collect(t, now)
	f.collect(t, now.Add(15*time.Second))

	r := f.run(t, dataQuery("A", t0, now.Add(15*time.Second), map[string]any{"queryType": "serviceGraph"}))
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	instrumented, err := readNodeGraph(r.Frames)
	if err != nil {
		t.Fatalf("%v\n%s", err, frameText(r.Frames))
	}
	if !instrumented["stock"] || !instrumented["frontend"] || instrumented["user"] {
		t.Errorf("instrumented: %v", instrumented)
	}
	text := frameText(r.Frames)
	for _, want := range []string{"shop->stock/rpc", "shop->stock/messaging_system"} {
		if !strings.Contains(text, want) {
			t.Errorf("no edge %s:\n%s", want, text)
		}
	}
}
