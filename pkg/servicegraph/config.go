package servicegraph

import (
	"fmt"
	"time"

	"github.com/spangraph/spangraph/pkg/processor"
	"github.com/spangraph/spangraph/pkg/spanfilter"
)

// DefaultMaxItems bounds the edge store by memory rather than by a round
// item count.
//
// Sizing: a half edge waits until its other side arrives. Paired spans
// usually meet within a request or two, but the half edges that can never
// pair (root SERVER spans waiting to become user → service, client spans to
// uninstrumented peers, genuinely unpaired spans) all sit out the whole
// wait. At 1.3 M spans/s per instance and a 10 s wait, 2^22 items hold the
// full-wait half edges of up to 32 % of all spans (1.3 M × 10 s × 0.32 ≈
// 4.2 M), i.e. two or three spans of every 8-span trace, with the spans that
// do pair on top of that. Tempo's 10 000 items are full after 0.1 s at
// 100 k spans/s, which is why it loses most edges.
//
// Since client spans of silent call sites (peers that never answer, see
// sites.go) are settled at once instead of waiting, what waits is mostly
// pairs in flight and the half edges of sites not yet known to be silent.
//
// Cost: a pending half edge holds one side only (service, peer, times,
// weight, kind), at most PendingBytes(dimensions): 120 bytes with its slot
// and index entry, plus 4 per configured dimension (TestPendingBytes
// measures both). A full store of 2^22 items is thus about 0.5 GB; the
// memory is taken as the store fills, in 256-slot chunks, not up front.
// Chunks are kept for reuse while a shard uses a quarter of them or more;
// below that, expiry compacts the shard, so that after a burst the store
// gives its memory back.
const DefaultMaxItems = 1 << 22

// Config of the service graph processor. The yaml keys and defaults follow
// Tempo's metrics-generator, except max_items (see DefaultMaxItems).
type Config struct {
	Enabled bool `yaml:"enabled"`
	// Wait is how long a half edge waits for its other side before it
	// becomes a virtual_node edge or counts as unpaired.
	Wait time.Duration `yaml:"wait"`
	// MaxItems bounds the half edges waiting at once; see DefaultMaxItems.
	MaxItems int `yaml:"max_items"`
	// HistogramBuckets are latency bucket bounds in seconds.
	HistogramBuckets []float64 `yaml:"histogram_buckets"`
	// Histograms: classic, native or both latency histograms (client,
	// server and messaging), with Tempo's keys
	// (generate_native_histograms, native_histogram_*).
	processor.Histograms `yaml:",inline"`
	// Dimensions are attribute names turned into labels, looked up on the
	// resource first, then on the span.
	Dimensions []string `yaml:"dimensions"`
	// EnableClientServerPrefix labels each dimension twice, client_<dim>
	// from the client span and server_<dim> from the server span. Without
	// it a dimension takes the client's value, else the server's.
	EnableClientServerPrefix bool `yaml:"enable_client_server_prefix"`
	// EnableVirtualNodeLabel adds virtual_node="client"|"server" to edges
	// whose other side was inferred rather than seen.
	EnableVirtualNodeLabel bool `yaml:"enable_virtual_node_label"`
	// EnableMessagingSystemLatencyHistogram records, for producer/consumer
	// edges, the time between the producer's end and the consumer's start.
	EnableMessagingSystemLatencyHistogram bool `yaml:"enable_messaging_system_latency_histogram"`
	// PeerAttributes name, in order of preference, the span attribute that
	// names the other side of a half edge that never paired.
	PeerAttributes []string `yaml:"peer_attributes"`
	// DatabaseNameAttributes mark a client span as a database call, which
	// becomes an edge at once since databases send no spans.
	DatabaseNameAttributes []string `yaml:"database_name_attributes"`
	// SpanMultiplierKey names a double attribute, on the span or else on
	// its resource, holding the ratio at which the span was sampled
	// upstream: an edge counts as 1/ratio requests, as in Tempo
	// (processor.SpanMultiplier).
	SpanMultiplierKey string `yaml:"span_multiplier_key"`
	// EnableTraceStateSpanMultiplier reads the W3C tracestate "ot=th:"
	// sampling threshold first, Tempo's key of the same name.
	EnableTraceStateSpanMultiplier bool                `yaml:"enable_tracestate_span_multiplier"`
	FilterPolicies                 []spanfilter.Policy `yaml:"filter_policies"`
	// VirtualNodeLatency says what a virtual_node edge records for the
	// side that sent no span (the user's client of a root span, the
	// uninstrumented server a client calls): VirtualNodeLatencyZero,
	// VirtualNodeLatencyOmit or VirtualNodeLatencyMirror.
	VirtualNodeLatency string `yaml:"virtual_node_latency"`
}

// The values of virtual_node_latency.
const (
	// VirtualNodeLatencyZero records the unseen side as a zero-second
	// observation, as Tempo does: its series are Tempo's, but a zero
	// drags that side's averages and quantiles down.
	VirtualNodeLatencyZero = "zero"
	// VirtualNodeLatencyOmit records only the side that was seen: the
	// unseen side's histogram has no observation for the edge.
	VirtualNodeLatencyOmit = "omit"
	// VirtualNodeLatencyMirror records the seen side's duration for the
	// unseen side too, as Tempo does for database edges: the client's
	// measured time stands for the uninstrumented server's, the root
	// span's for its user's (a lower bound).
	VirtualNodeLatencyMirror = "mirror"
)

// DefaultBuckets are 0.1 × 2^k s for k = 0..7, Tempo's defaults.
func DefaultBuckets() []float64 {
	out := make([]float64, 8)
	b := 0.1
	for i := range out {
		out[i] = b
		b *= 2
	}
	return out
}

// DefaultConfig returns Tempo's defaults with a store sized for one
// instance's full rate.
func DefaultConfig() Config {
	return Config{
		Enabled:                true,
		Wait:                   10 * time.Second,
		MaxItems:               DefaultMaxItems,
		HistogramBuckets:       DefaultBuckets(),
		Histograms:             processor.DefaultHistograms(),
		PeerAttributes:         []string{"peer.service", "db.name", "db.system", "db.system.name"},
		DatabaseNameAttributes: []string{"db.namespace", "db.name", "db.system", "db.system.name"},
		VirtualNodeLatency:     VirtualNodeLatencyZero,
	}
}

// maxItemsLimit keeps slot indices within int32 in every shard.
const maxItemsLimit = 1 << 30

// Validate checks the config; errors name the key under prefix.
func (c *Config) Validate(prefix string) error {
	if c.Wait <= 0 {
		return fmt.Errorf("%s.wait: must be positive, got %v", prefix, c.Wait)
	}
	if c.MaxItems <= 0 || c.MaxItems > maxItemsLimit {
		return fmt.Errorf("%s.max_items: must be between 1 and %d, got %d", prefix, maxItemsLimit, c.MaxItems)
	}
	if err := processor.ValidateBuckets(prefix+".histogram_buckets", c.HistogramBuckets); err != nil {
		return err
	}
	if err := c.Histograms.Validate(prefix); err != nil {
		return err
	}
	switch c.VirtualNodeLatency {
	case VirtualNodeLatencyZero, VirtualNodeLatencyOmit, VirtualNodeLatencyMirror:
	default:
		return fmt.Errorf("%s.virtual_node_latency: %q is not %s, %s or %s", prefix, c.VirtualNodeLatency,
			VirtualNodeLatencyZero, VirtualNodeLatencyOmit, VirtualNodeLatencyMirror)
	}
	for _, list := range []struct {
		key   string
		names []string
	}{
		{"dimensions", c.Dimensions},
		{"peer_attributes", c.PeerAttributes},
		{"database_name_attributes", c.DatabaseNameAttributes},
	} {
		for i, n := range list.names {
			if n == "" {
				return fmt.Errorf("%s.%s[%d]: empty attribute name", prefix, list.key, i)
			}
		}
	}
	if _, err := c.labelNames(); err != nil {
		return fmt.Errorf("%s.dimensions: %v", prefix, err)
	}
	return nil
}

// Label names, byte for byte those of Tempo.
const (
	LabelClient         = "client"
	LabelServer         = "server"
	LabelConnectionType = "connection_type"
	LabelVirtualNode    = "virtual_node"
)

// labelNames returns the label names of the edge series: client, server,
// connection_type, the dimensions (twice with the prefix) and, when on,
// virtual_node. Two dimensions that sanitise to one name are an error: the
// series would carry a duplicate label.
func (c *Config) labelNames() ([]string, error) {
	reserved := []string{LabelClient, LabelServer, LabelConnectionType}
	if c.EnableVirtualNodeLabel {
		reserved = append(reserved, LabelVirtualNode)
	}
	names := append([]string(nil), reserved[:3]...)
	seen := map[string]string{}
	add := func(attr, label string) error {
		if prev, ok := seen[label]; ok {
			return fmt.Errorf("%q and %q both become label %q", prev, attr, label)
		}
		seen[label] = attr
		names = append(names, label)
		return nil
	}
	for _, d := range c.Dimensions {
		if c.EnableClientServerPrefix {
			if err := add(d, processor.SanitizeLabelName("client_"+d, reserved)); err != nil {
				return nil, err
			}
			if err := add(d, processor.SanitizeLabelName("server_"+d, reserved)); err != nil {
				return nil, err
			}
			continue
		}
		if err := add(d, processor.SanitizeLabelName(d, reserved)); err != nil {
			return nil, err
		}
	}
	if c.EnableVirtualNodeLabel {
		names = append(names, LabelVirtualNode)
	}
	return names, nil
}
