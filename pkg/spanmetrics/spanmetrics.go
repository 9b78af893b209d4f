// Package spanmetrics derives RED metrics from spans with the names and
// labels of Tempo's metrics-generator: traces_spanmetrics_calls_total,
// traces_spanmetrics_latency (seconds), traces_spanmetrics_size_total and,
// opt-in, traces_target_info.
package spanmetrics

import (
	"fmt"
	"sync"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/processor"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/spanfilter"
)

// Metric names, byte for byte those of Tempo.
const (
	MetricCalls      = "traces_spanmetrics_calls_total"
	MetricLatency    = "traces_spanmetrics_latency"
	MetricSize       = "traces_spanmetrics_size_total"
	MetricTargetInfo = "traces_target_info"
)

// Intrinsic label names.
const (
	LabelService       = "service"
	LabelSpanName      = "span_name"
	LabelSpanKind      = "span_kind"
	LabelStatusCode    = "status_code"
	LabelStatusMessage = "status_message"
	LabelJob           = "job"
	LabelInstance      = "instance"
)

// IntrinsicDimensions switches the intrinsic labels on or off.
type IntrinsicDimensions struct {
	Service       bool `yaml:"service"`
	SpanName      bool `yaml:"span_name"`
	SpanKind      bool `yaml:"span_kind"`
	StatusCode    bool `yaml:"status_code"`
	StatusMessage bool `yaml:"status_message"`
}

// DimensionMapping builds one label from several attributes.
type DimensionMapping struct {
	Name        string   `yaml:"name"`
	SourceLabel []string `yaml:"source_labels"`
	Join        string   `yaml:"join"`
}

// Config of the span metrics processor.
type Config struct {
	Enabled             bool                `yaml:"enabled"`
	IntrinsicDimensions IntrinsicDimensions `yaml:"intrinsic_dimensions"`
	// Dimensions are attribute names turned into labels, looked up on the
	// resource first, then on the span.
	Dimensions        []string            `yaml:"dimensions"`
	DimensionMappings []DimensionMapping  `yaml:"dimension_mappings"`
	FilterPolicies    []spanfilter.Policy `yaml:"filter_policies"`
	// HistogramBuckets are latency bucket bounds in seconds.
	HistogramBuckets []float64 `yaml:"histogram_buckets"`
	// Histograms: classic, native or both latency histograms, with
	// Tempo's keys (generate_native_histograms, native_histogram_*).
	processor.Histograms `yaml:",inline"`
	EnableTargetInfo     bool `yaml:"enable_target_info"`
	// TargetInfoExcludedDimensions are resource attributes left out of
	// traces_target_info.
	TargetInfoExcludedDimensions []string `yaml:"target_info_excluded_dimensions"`
	// SpanMultiplierKey names a double attribute, on the span or else on
	// its resource, holding the ratio at which the span was sampled
	// upstream: the span counts as 1/ratio spans in calls and latency, as
	// in Tempo (processor.SpanMultiplier). Sizes are never multiplied.
	SpanMultiplierKey string `yaml:"span_multiplier_key"`
	// EnableTraceStateSpanMultiplier reads the W3C tracestate "ot=th:"
	// sampling threshold first, Tempo's key of the same name.
	EnableTraceStateSpanMultiplier bool `yaml:"enable_tracestate_span_multiplier"`
}

// DefaultBuckets are 0.002 × 2^k s for k = 0..13, Tempo's defaults.
func DefaultBuckets() []float64 { return exponential(0.002, 2, 14) }

func exponential(start, factor float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = start
		start *= factor
	}
	return out
}

// DefaultConfig returns the defaults: every intrinsic but status_message.
func DefaultConfig() Config {
	return Config{
		Enabled: true,
		IntrinsicDimensions: IntrinsicDimensions{
			Service: true, SpanName: true, SpanKind: true, StatusCode: true,
		},
		HistogramBuckets: DefaultBuckets(),
		Histograms:       processor.DefaultHistograms(),
	}
}

// Processor turns spans into series in a registry. Push may be called from
// several goroutines at once.
type Processor struct {
	cfg    Config
	filter *spanfilter.Filter
	dims   *processor.Dimensions

	// Positions of the optional labels in a series' values; -1 when off.
	posService, posName, posKind, posStatus, posMessage, posDims, posMappings, posJob, posInstance int
	nValues                                                                                        int

	// latency carries the calls and size counters as companions: one
	// registry lookup per span instead of three.
	latency    *registry.Histogram
	targetInfo *registry.Gauge
	excluded   map[string]bool

	scratch sync.Pool
}

// New validates cfg and registers the metrics in reg.
func New(cfg Config, reg *registry.Registry) (*Processor, error) {
	if err := cfg.Validate("spanmetrics"); err != nil {
		return nil, err
	}
	filter, err := spanfilter.New("spanmetrics.filter_policies", cfg.FilterPolicies)
	if err != nil {
		return nil, err
	}
	p := &Processor{cfg: cfg, filter: filter, excluded: map[string]bool{}}
	var names []string
	slot := func(on bool, name string) int {
		if !on {
			return -1
		}
		names = append(names, name)
		return len(names) - 1
	}
	id := cfg.IntrinsicDimensions
	p.posService = slot(id.Service, LabelService)
	p.posName = slot(id.SpanName, LabelSpanName)
	p.posKind = slot(id.SpanKind, LabelSpanKind)
	p.posStatus = slot(id.StatusCode, LabelStatusCode)
	p.posMessage = slot(id.StatusMessage, LabelStatusMessage)
	intrinsics := []string{LabelService, LabelSpanName, LabelSpanKind, LabelStatusCode, LabelStatusMessage, LabelJob, LabelInstance}

	p.posDims = len(names)
	keys := append([]string(nil), cfg.Dimensions...)
	for _, m := range cfg.DimensionMappings {
		keys = append(keys, m.SourceLabel...)
	}
	p.dims = processor.NewDimensions(keys)
	for _, d := range cfg.Dimensions {
		names = append(names, processor.SanitizeLabelName(d, intrinsics))
	}
	p.posMappings = len(names)
	for _, m := range cfg.DimensionMappings {
		names = append(names, processor.SanitizeLabelName(m.Name, intrinsics))
	}
	p.posJob = slot(cfg.EnableTargetInfo, LabelJob)
	p.posInstance = slot(cfg.EnableTargetInfo, LabelInstance)
	p.nValues = len(names)
	for _, k := range cfg.TargetInfoExcludedDimensions {
		p.excluded[k] = true
	}

	p.latency = reg.NewHistogramWith(MetricLatency, names, cfg.HistogramBuckets, cfg.Histograms.Options(), MetricCalls, MetricSize)
	if cfg.EnableTargetInfo {
		p.targetInfo = reg.NewInfoGauge(MetricTargetInfo)
	}
	p.scratch.New = func() any { return p.newState() }
	return p, nil
}

// Validate checks the config; errors name the key under prefix.
func (c *Config) Validate(prefix string) error {
	if err := processor.ValidateBuckets(prefix+".histogram_buckets", c.HistogramBuckets); err != nil {
		return err
	}
	if err := c.Histograms.Validate(prefix); err != nil {
		return err
	}
	for i, d := range c.Dimensions {
		if d == "" {
			return fmt.Errorf("%s.dimensions[%d]: empty attribute name", prefix, i)
		}
	}
	for i, m := range c.DimensionMappings {
		if m.Name == "" {
			return fmt.Errorf("%s.dimension_mappings[%d].name: required", prefix, i)
		}
		if len(m.SourceLabel) == 0 {
			return fmt.Errorf("%s.dimension_mappings[%d].source_labels: at least one attribute is required", prefix, i)
		}
	}
	return nil
}

// state is the per-goroutine scratch space of Push.
type state struct {
	values []string
	res    processor.ResolvedDims
	text   []byte
	info   []string
}

func (p *Processor) newState() *state {
	return &state{values: make([]string, p.nValues), res: p.dims.NewResolved(), text: make([]byte, 0, 256)}
}

// Push processes every span of b.
func (p *Processor) Push(b *otlp.Batch) {
	st := p.scratch.Get().(*state)
	defer p.scratch.Put(st)
	for ri := range b.Resources {
		rs := &b.Resources[ri]
		p.pushResource(st, rs)
	}
}

func (p *Processor) pushResource(st *state, rs *otlp.ResourceSpans) {
	vals := st.values
	for i := range vals {
		vals[i] = ""
	}
	service := ""
	if v, ok := otlp.Lookup(rs.Attributes, "service.name"); ok {
		service = v.Text()
	}
	if p.posService >= 0 {
		vals[p.posService] = service
	}
	if p.targetInfo != nil {
		job, instance := p.pushTargetInfo(st, rs.Attributes, service)
		vals[p.posJob] = job
		vals[p.posInstance] = instance
	}
	p.dims.ResolveResource(&st.res, rs.Attributes)
	for si := range rs.Spans {
		s := &rs.Spans[si]
		if !p.filter.Keep(rs.Attributes, s) {
			continue
		}
		st.text = p.dims.ResolveSpan(&st.res, s.Attributes, st.text[:0])
		p.fillSpan(st, s)
		lv := registry.MakeLabelValues(vals)
		w := processor.SpanMultiplier(p.cfg.SpanMultiplierKey, p.cfg.EnableTraceStateSpanMultiplier, rs.Attributes, s)
		latency := 0.0
		if s.End > s.Start {
			latency = float64(s.End-s.Start) / 1e9
		}
		// Like Tempo, size_total counts the bytes received, not the bytes
		// the span stands for.
		p.latency.Observe(lv, latency, w, &s.TraceID, int64(s.End/1e6), w, float64(s.Size))
	}
}

// fillSpan writes the span's own values into st.values.
func (p *Processor) fillSpan(st *state, s *otlp.Span) {
	vals := st.values
	if p.posName >= 0 {
		vals[p.posName] = s.Name
	}
	if p.posKind >= 0 {
		vals[p.posKind] = s.Kind.String()
	}
	if p.posStatus >= 0 {
		vals[p.posStatus] = s.StatusCode.String()
	}
	if p.posMessage >= 0 {
		vals[p.posMessage] = s.StatusMsg
	}
	for i := range p.cfg.Dimensions {
		vals[p.posDims+i] = st.res.Value(i)
	}
	k := len(p.cfg.Dimensions)
	for i, m := range p.cfg.DimensionMappings {
		st.text, vals[p.posMappings+i] = st.res.Join(k, len(m.SourceLabel), m.Join, st.text)
		k += len(m.SourceLabel)
	}
}

// pushTargetInfo sets traces_target_info for the resource and returns its
// job and instance labels.
func (p *Processor) pushTargetInfo(st *state, attrs []otlp.KeyValue, service string) (job, instance string) {
	job = service
	if ns, ok := otlp.Lookup(attrs, "service.namespace"); ok && ns.Text() != "" && service != "" {
		job = ns.Text() + "/" + service
	}
	if v, ok := otlp.Lookup(attrs, "service.instance.id"); ok {
		instance = v.Text()
	}
	info := st.info[:0]
	for _, kv := range attrs {
		switch kv.Key {
		case "service.name", "service.namespace", "service.instance.id":
			continue
		}
		if p.excluded[kv.Key] {
			continue
		}
		if text := kv.Value.Text(); text != "" {
			info = append(info, processor.SanitizeLabelName(kv.Key, []string{LabelJob, LabelInstance}), text)
		}
	}
	if len(info) > 0 && (job != "" || instance != "") {
		info = append(info, LabelJob, job, LabelInstance, instance)
		p.targetInfo.Set(registry.MakeLabelValues(info), 1)
	}
	st.info = info
	return job, instance
}
