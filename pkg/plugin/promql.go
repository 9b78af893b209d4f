package plugin

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/backend/gtime"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/spangraph/spangraph/pkg/query"
)

// maxResolution is Prometheus' cap on the points of one series (and the
// Prometheus datasource's "safe" resolution).
const maxResolution = 11000

// legendAuto is the legend of the Prometheus datasource's "Auto" option.
const legendAuto = "__auto"

// promParams are a PromQL query's evaluated parameters.
type promParams struct {
	expr        string // after variable substitution
	start, end  time.Time
	step        time.Duration
	at          time.Time // instant queries
	refID       string
	legend      string
	withRange   bool
	withInstant bool
	// withExemplars is never set for alert rules, which read series only.
	withExemplars bool
}

// minInterval is the lower bound of the step, in the Prometheus
// datasource's order: the query's own min step, else the interval Grafana
// computed for the panel (itself bounded by the datasource's min
// interval), else the datasource's jsonData.timeInterval, else the
// collection interval. A variable as min step counts as none.
func minInterval(q backend.DataQuery, m queryModel, dsInterval, scrape time.Duration) (time.Duration, error) {
	if m.Interval != "" && m.Interval != "0s" && !strings.Contains(m.Interval, "$") {
		d, err := gtime.ParseIntervalStringToTimeDuration(m.Interval)
		if err != nil {
			return 0, fmt.Errorf("interval %q is not a duration such as 30s or 1m", m.Interval)
		}
		return d, nil
	}
	switch {
	case q.Interval > 0:
		return q.Interval, nil
	case dsInterval > 0:
		return dsInterval, nil
	}
	return scrape, nil
}

// newPromParams computes step, aligned range and substitutions the way the
// Prometheus datasource does, with the collection interval as the scrape
// interval. Unlike Prometheus, the store has one sample per collection,
// so the step never goes below it: rate(x[$__interval]) always has two
// samples to work with.
func newPromParams(q backend.DataQuery, m queryModel, dsInterval, scrape time.Duration, fromAlert bool) (promParams, error) {
	tr := q.TimeRange.To.Sub(q.TimeRange.From)
	step, err := minInterval(q, m, dsInterval, scrape)
	if err != nil {
		return promParams{}, err
	}
	if q.MaxDataPoints > 0 {
		step = max(step, gtime.RoundInterval(tr/time.Duration(q.MaxDataPoints)))
	}
	// Above the point cap, the query would be refused; a coarser step is
	// what Grafana's Prometheus datasource substitutes.
	step = max(step, gtime.RoundInterval(tr/maxResolution), scrape)
	p := promParams{
		start:       align(q.TimeRange.From, step),
		end:         align(q.TimeRange.To, step),
		at:          q.TimeRange.To,
		step:        step,
		refID:       q.RefID,
		legend:      m.LegendFormat,
		withRange:   m.Range || !m.Instant,
		withInstant: m.Instant,
	}
	p.withExemplars = m.Exemplar && p.withRange && !fromAlert
	p.expr = interpolate(m.Expr, step, tr, scrape)
	return p, nil
}

// align rounds t down to a multiple of step, so that the points of a
// panel do not move as the dashboard refreshes.
func align(t time.Time, step time.Duration) time.Time {
	return time.Unix(0, t.UnixNano()/int64(step)*int64(step)).UTC()
}

// rateInterval is Grafana's $__rate_interval: long enough for rate() to
// see at least four scrapes (here, collections), and one step plus one
// scrape so that consecutive points overlap.
func rateInterval(step, scrape time.Duration) time.Duration {
	return max(step+scrape, 4*scrape)
}

// interpolate substitutes Grafana's interval and range variables, as the
// Prometheus datasource does server side (alert rules and API calls have
// no frontend to do it). Longer names come first: Replacer tries its
// arguments in order.
func interpolate(expr string, step, rng, scrape time.Duration) string {
	if !strings.Contains(expr, "$") {
		return expr
	}
	ri := rateInterval(step, scrape)
	rangeS := int64(math.Round(rng.Seconds()))
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	pairs := []string{
		"__rate_interval_ms", ms(ri),
		"__rate_interval", promDuration(ri),
		"__interval_ms", ms(step),
		"__interval", promDuration(step),
		"__range_ms", strconv.FormatInt(rng.Milliseconds(), 10),
		"__range_s", strconv.FormatInt(rangeS, 10),
		"__range", strconv.FormatInt(rangeS, 10) + "s",
	}
	var args []string
	for j := 0; j < len(pairs); j += 2 {
		args = append(args, "${"+pairs[j]+"}", pairs[j+1], "$"+pairs[j], pairs[j+1])
	}
	return strings.NewReplacer(args...).Replace(expr)
}

// promDuration formats d as PromQL does, e.g. 1m30s; a fraction of a
// millisecond, which PromQL cannot express, rounds up.
func promDuration(d time.Duration) string {
	if rem := d % time.Millisecond; rem != 0 {
		d += time.Millisecond - rem
	}
	return model.Duration(d).String()
}

func (i *Instance) promQL(ctx context.Context, q backend.DataQuery, m queryModel, fromAlert bool) backend.DataResponse {
	if strings.TrimSpace(m.Expr) == "" {
		return backend.ErrDataResponse(backend.StatusBadRequest,
			"expr is empty: write a PromQL expression, e.g. sum by (service) (rate(traces_spanmetrics_calls_total[$__rate_interval]))")
	}
	p, err := newPromParams(q, m, i.settings.timeInterval, i.svc.eng.Config().CollectionInterval, fromAlert)
	if err != nil {
		return backend.ErrDataResponse(backend.StatusBadRequest, err.Error())
	}
	var resp backend.DataResponse
	if p.withRange {
		res, err := i.svc.querier.Range(ctx, i.settings.Tenant, p.expr, p.start, p.end, p.step)
		if err != nil {
			return promError(p.expr, err)
		}
		resp.Frames = append(resp.Frames, p.frames(res, false)...)
	}
	if p.withInstant {
		res, err := i.svc.querier.Instant(ctx, i.settings.Tenant, p.expr, p.at)
		if err != nil {
			return promError(p.expr, err)
		}
		resp.Frames = append(resp.Frames, p.frames(res, true)...)
	}
	if p.withExemplars {
		// As with Prometheus, exemplars are an extra: when they fail, the
		// series still come back and the failure goes to the log.
		f, err := i.exemplarFrame(ctx, p)
		switch {
		case err != nil:
			i.svc.logger.Warn("exemplar query failed", "query", p.expr, "err", err)
		case f != nil:
			resp.Frames = append(resp.Frames, f)
		}
	}
	return resp
}

func promError(expr string, err error) backend.DataResponse {
	return errResponse(fmt.Sprintf("PromQL %q", expr), err)
}

// meta is the frame metadata the Prometheus datasource sends; resultType
// tells its frontend (and ours) how to show an instant result in Explore.
func (p promParams) meta(t data.FrameType, resultType string) *data.FrameMeta {
	executed := "Expr: " + p.expr
	if resultType == "matrix" {
		executed += "\nStep: " + p.step.String()
	}
	return &data.FrameMeta{
		Type:                t,
		TypeVersion:         data.FrameTypeVersion{0, 1},
		ExecutedQueryString: executed,
		Custom:              map[string]any{"resultType": resultType},
	}
}

// frames turns a result into the frames the Prometheus datasource's
// backend returns: one frame per series, a time series for a range query
// and a number for an instant one, which is what alert rules and
// server-side expressions read. The table and heatmap formats, and the
// table that Explore shows for an instant query, are shaped from these in
// the frontend (src/resultTransformer.ts), as the Prometheus datasource
// does.
func (p promParams) frames(res query.Result, instant bool) data.Frames {
	var frames data.Frames
	switch v := res.Value.(type) {
	case promql.Matrix:
		sort.Slice(v, func(a, b int) bool { return labels.Compare(v[a].Metric, v[b].Metric) < 0 })
		for _, s := range v {
			frames = append(frames, p.seriesFrame(s.Metric, s.Floats, "matrix", data.FrameTypeTimeSeriesMulti))
		}
	case promql.Vector:
		sort.Slice(v, func(a, b int) bool { return labels.Compare(v[a].Metric, v[b].Metric) < 0 })
		for _, s := range v {
			frames = append(frames, p.seriesFrame(s.Metric, []promql.FPoint{{T: s.T, F: s.F}}, "vector", data.FrameTypeNumericMulti))
		}
	case promql.Scalar:
		frames = data.Frames{p.seriesFrame(labels.EmptyLabels(), []promql.FPoint{{T: v.T, F: v.V}}, "scalar", data.FrameTypeNumericMulti)}
	case promql.String:
		f := data.NewFrame("",
			data.NewField(data.TimeSeriesTimeFieldName, nil, []time.Time{time.UnixMilli(v.T).UTC()}),
			data.NewField(data.TimeSeriesValueFieldName, nil, []string{v.V}))
		f.Meta = p.meta(data.FrameTypeUnknown, "string")
		frames = data.Frames{f}
	}
	if len(frames) == 0 {
		// An empty frame still carries the executed query for the query
		// inspector; alerting reads a typed frame without fields as no
		// data.
		t, resultType := data.FrameTypeTimeSeriesMulti, "matrix"
		if instant {
			t, resultType = data.FrameTypeNumericMulti, "vector"
		}
		f := data.NewFrame("")
		f.Meta = p.meta(t, resultType)
		frames = data.Frames{f}
	}
	if notices := warningNotices(res.Warnings); len(notices) > 0 {
		frames[0].AppendNotices(notices...)
	}
	return frames
}

func warningNotices(w annotations.Annotations) []data.Notice {
	warnings, infos := w.AsStrings("", 10, 10)
	var out []data.Notice
	for _, s := range warnings {
		out = append(out, data.Notice{Severity: data.NoticeSeverityWarning, Text: s})
	}
	for _, s := range infos {
		out = append(out, data.Notice{Severity: data.NoticeSeverityInfo, Text: s})
	}
	return out
}

func toDataLabels(l labels.Labels) data.Labels {
	out := make(data.Labels, l.Len())
	l.Range(func(lb labels.Label) { out[lb.Name] = lb.Value })
	return out
}

func (p promParams) seriesFrame(metric labels.Labels, points []promql.FPoint, resultType string, t data.FrameType) *data.Frame {
	times := make([]time.Time, len(points))
	values := make([]float64, len(points))
	for j, pt := range points {
		times[j] = time.UnixMilli(pt.T).UTC()
		values[j] = pt.F
	}
	timeField := data.NewField(data.TimeSeriesTimeFieldName, nil, times)
	if resultType == "matrix" {
		timeField.Config = &data.FieldConfig{Interval: float64(p.step.Milliseconds())}
	}
	// The value field is named after the metric, as promlib names it
	// (Grafana's dataplane shape), else "Value".
	valueName := data.TimeSeriesValueFieldName
	if n := metric.Get(labels.MetricName); n != "" {
		valueName = n
	}
	valueField := data.NewField(valueName, toDataLabels(metric), values)
	name := legendName(p.legend, metric, p.expr)
	if name != "" {
		valueField.Config = &data.FieldConfig{DisplayNameFromDS: name}
	}
	f := data.NewFrame(name, timeField, valueField)
	f.Meta = p.meta(t, resultType)
	return f
}

var legendRe = regexp.MustCompile(`\{\{\s*(.+?)\s*\}\}`)

// legendName is the series name the Prometheus datasource shows: the
// legend with {{label}} replaced, nothing for "__auto" (Grafana then names
// the series from its labels), or the series in PromQL notation.
func legendName(legend string, metric labels.Labels, expr string) string {
	switch legend {
	case legendAuto:
		if metric.Len() > 0 {
			return ""
		}
		return expr
	case "":
		if metric.Len() == 0 {
			return expr
		}
		return seriesName(metric)
	}
	return legendRe.ReplaceAllStringFunc(legend, func(m string) string {
		return metric.Get(legendRe.FindStringSubmatch(m)[1])
	})
}

// seriesName writes a series as PromQL does: name{label="value", …}, or
// the name alone when the series has no other label.
func seriesName(metric labels.Labels) string {
	name := metric.Get(labels.MetricName)
	if name != "" && metric.Len() == 1 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	first := true
	metric.Range(func(l labels.Label) {
		if l.Name == labels.MetricName {
			return
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString(l.Name + "=" + strconv.Quote(l.Value))
	})
	b.WriteByte('}')
	return b.String()
}

// exemplarRow is one exemplar with the labels of its series.
type exemplarRow struct {
	t      time.Time
	v      float64
	labels map[string]string
}

// exemplarFrame returns the exemplars of the series the expression reads,
// sampled per step, in the Prometheus datasource's "exemplar" frame with
// its data topic, so that panels draw them as markers over the series
// rather than as a series of their own; trace_id links to the traces
// datasource when one is configured. nil when there are none.
func (i *Instance) exemplarFrame(ctx context.Context, p promParams) (*data.Frame, error) {
	series, err := i.svc.exemplars(ctx, i.settings.Tenant, p.expr, p.start, p.end.Add(p.step))
	if err != nil {
		return nil, err
	}
	var rows []exemplarRow
	nameSet := map[string]bool{}
	for _, s := range series {
		for _, e := range s.Exemplars {
			v, _ := strconv.ParseFloat(e.Value, 64)
			r := exemplarRow{t: time.UnixMilli(int64(math.Round(e.Timestamp * 1000))).UTC(), v: v, labels: map[string]string{}}
			for _, ls := range []labels.Labels{s.SeriesLabels, e.Labels} {
				ls.Range(func(l labels.Label) {
					r.labels[l.Name] = l.Value
					nameSet[l.Name] = true
				})
			}
			rows = append(rows, r)
		}
	}
	rows = sampleExemplars(rows, p.step)
	if len(rows) == 0 {
		return nil, nil
	}
	delete(nameSet, traceIDLabel)
	names := []string{traceIDLabel}
	for n := range nameSet {
		names = append(names, n)
	}
	sort.Strings(names[1:])
	times := make([]time.Time, len(rows))
	values := make([]float64, len(rows))
	cols := make([][]string, len(names))
	for j, r := range rows {
		times[j], values[j] = r.t, r.v
		for k, n := range names {
			cols[k] = append(cols[k], r.labels[n])
		}
	}
	fields := []*data.Field{
		data.NewField(data.TimeSeriesTimeFieldName, nil, times),
		data.NewField(data.TimeSeriesValueFieldName, nil, values),
	}
	for k, n := range names {
		fields = append(fields, data.NewField(n, nil, cols[k]))
	}
	if uid := i.settings.TracesDatasourceUID; uid != "" {
		fields[2].Config = &data.FieldConfig{Links: []data.DataLink{{
			Title:    "View trace",
			Internal: &data.InternalDataLink{DatasourceUID: uid, Query: map[string]any{"queryType": "traceql", "query": "${__value.raw}"}},
		}}}
	}
	f := data.NewFrame("exemplar", fields...)
	f.RefID = p.refID
	f.Meta = &data.FrameMeta{DataTopic: data.DataTopicAnnotations, Custom: map[string]any{"resultType": "exemplar"}}
	return f, nil
}

// sampleExemplars keeps, within each step, the exemplar of the largest
// value and then only those at least two standard deviations (of all the
// exemplars' values) below the last one kept, as the Prometheus
// datasource's default sampler does: a busy histogram has an exemplar per
// bucket and collection, more markers than a panel can show, and the
// outliers are the ones worth a click. The result is in time order.
func sampleExemplars(rows []exemplarRow, step time.Duration) []exemplarRow {
	if len(rows) < 2 || step <= 0 {
		return rows
	}
	var mean, m2 float64
	for n, r := range rows {
		d := r.v - mean
		mean += d / float64(n+1)
		m2 += d * (r.v - mean)
	}
	sd := math.Sqrt(m2 / float64(len(rows)-1))
	byStep := map[int64][]exemplarRow{}
	for _, r := range rows {
		k := align(r.t, step).UnixNano()
		byStep[k] = append(byStep[k], r)
	}
	var out []exemplarRow
	for _, b := range byStep {
		sort.SliceStable(b, func(x, y int) bool { return b[x].v > b[y].v })
		last := b[0]
		out = append(out, last)
		for _, r := range b[1:] {
			if sd > 0 && last.v-r.v > 2*sd {
				out = append(out, r)
				last = r
			}
		}
	}
	sort.SliceStable(out, func(x, y int) bool {
		if !out[x].t.Equal(out[y].t) {
			return out[x].t.Before(out[y].t)
		}
		return out[x].v > out[y].v
	})
	return out
}

// traceIDLabel is the exemplar label the registry writes.
const traceIDLabel = "trace_id"
