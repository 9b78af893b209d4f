package servicegraph

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/spanfilter"
)

const (
	total    = MetricRequestTotal
	failed   = MetricRequestFailedTotal
	unpaired = MetricUnpairedSpans
	dropped  = MetricDroppedSpans
	srvCount = MetricRequestServerSeconds + "_count"
	srvSum   = MetricRequestServerSeconds + "_sum"
	cliCount = MetricRequestClientSeconds + "_count"
	cliSum   = MetricRequestClientSeconds + "_sum"
	msgCount = MetricRequestMessagingSeconds + "_count"
	msgSum   = MetricRequestMessagingSeconds + "_sum"
)

// alwaysChecked are compared in every case: a metric the case does not list
// must have no series.
var alwaysChecked = []string{total, failed, unpaired, dropped, srvCount, cliCount, msgCount}

type series = map[string]float64

const feBe = `{client="fe",server="be"}`

func TestPairing(t *testing.T) {
	fe := func(spans ...sp) res { return res{service: "fe", spans: spans} }
	be := func(spans ...sp) res { return res{service: "be", spans: spans} }
	wait := 10 * time.Second
	paired := map[string]series{
		total:    {feBe: 1},
		srvCount: {feBe: 1}, srvSum: {feBe: 0.08},
		cliCount: {feBe: 1}, cliSum: {feBe: 0.1},
	}

	cases := []struct {
		name   string
		cfg    func(*Config)
		pushes [][]res
		// advance moves the clock and calls Expire after the pushes;
		// flush calls Flush.
		advance time.Duration
		flush   bool
		want    map[string]series
		stats   Stats // Capacity is not compared
	}{
		{
			name:   "client then server, one push",
			pushes: [][]res{{fe(client(1)), be(server(1))}},
			want:   paired,
			stats:  Stats{Completed: 1},
		},
		{
			name:   "server then client, one push",
			pushes: [][]res{{be(server(1)), fe(client(1))}},
			want:   paired,
			stats:  Stats{Completed: 1},
		},
		{
			name:   "client then server, two pushes",
			pushes: [][]res{{fe(client(1))}, {be(server(1))}},
			want:   paired,
			stats:  Stats{Completed: 1},
		},
		{
			name:   "server then client, two pushes",
			pushes: [][]res{{be(server(1))}, {fe(client(1))}},
			want:   paired,
			stats:  Stats{Completed: 1},
		},
		{
			name:   "half edge alone waits",
			pushes: [][]res{{fe(client(1, otlptest.Str("peer.service", "x")))}, {be(server(2))}},
			want:   map[string]series{},
			stats:  Stats{Pending: 2},
		},
		{
			name:   "internal and unspecified spans make no edge",
			pushes: [][]res{{fe(with(client(1), func(s *sp) { s.kind = otlp.SpanKindInternal }), with(server(1), func(s *sp) { s.kind = otlp.SpanKindUnspecified }))}},
			want:   map[string]series{},
		},
		{
			name:   "resource without service.name is skipped",
			pushes: [][]res{{res{spans: []sp{client(1)}}, be(server(1))}},
			want:   map[string]series{},
			stats:  Stats{Pending: 1},
		},
		{
			name:    "database by db.system, named by peer.service",
			pushes:  [][]res{{fe(client(1, otlptest.Str("db.system", "postgresql"), otlptest.Str("peer.service", "pg-main"), otlptest.Str("server.address", "db.local")))}},
			advance: wait, // nothing waits: the edge is complete at once
			want: map[string]series{
				total:    {`{client="fe",connection_type="database",server="pg-main"}`: 1},
				srvCount: {`{client="fe",connection_type="database",server="pg-main"}`: 1},
				srvSum:   {`{client="fe",connection_type="database",server="pg-main"}`: 0.1},
				cliCount: {`{client="fe",connection_type="database",server="pg-main"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "database named by server.address",
			pushes: [][]res{{fe(client(1, otlptest.Str("db.namespace", "orders"), otlptest.Str("server.address", "db.local"), otlptest.Str("network.peer.address", "10.0.0.1")))}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="database",server="db.local"}`: 1},
				srvCount: {`{client="fe",connection_type="database",server="db.local"}`: 1},
				cliCount: {`{client="fe",connection_type="database",server="db.local"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "database named by network.peer.address:port",
			pushes: [][]res{{fe(client(1, otlptest.Str("db.name", "orders"), otlptest.Str("network.peer.address", "10.0.0.1"), otlptest.Int("network.peer.port", 5432)))}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="database",server="10.0.0.1:5432"}`: 1},
				srvCount: {`{client="fe",connection_type="database",server="10.0.0.1:5432"}`: 1},
				cliCount: {`{client="fe",connection_type="database",server="10.0.0.1:5432"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "database named by network.peer.address without port",
			pushes: [][]res{{fe(client(1, otlptest.Str("db.name", "orders"), otlptest.Str("network.peer.address", "10.0.0.1")))}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="database",server="10.0.0.1"}`: 1},
				srvCount: {`{client="fe",connection_type="database",server="10.0.0.1"}`: 1},
				cliCount: {`{client="fe",connection_type="database",server="10.0.0.1"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "database named by the database attribute",
			pushes: [][]res{{fe(client(1, otlptest.Str("db.namespace", "orders"), otlptest.Str("db.system.name", "postgresql")))}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="database",server="orders"}`: 1},
				srvCount: {`{client="fe",connection_type="database",server="orders"}`: 1},
				cliCount: {`{client="fe",connection_type="database",server="orders"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "database attribute on the resource",
			pushes: [][]res{{res{service: "fe", attrs: []*commonpb.KeyValue{otlptest.Str("db.system", "redis")}, spans: []sp{client(1)}}}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="database",server="redis"}`: 1},
				srvCount: {`{client="fe",connection_type="database",server="redis"}`: 1},
				cliCount: {`{client="fe",connection_type="database",server="redis"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "database attributes are configurable",
			cfg:    func(c *Config) { c.DatabaseNameAttributes = []string{"db.cluster"} },
			pushes: [][]res{{fe(client(1, otlptest.Str("db.system", "postgresql"))), fe(client(2, otlptest.Str("db.cluster", "c1")))}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="database",server="c1"}`: 1},
				srvCount: {`{client="fe",connection_type="database",server="c1"}`: 1},
				cliCount: {`{client="fe",connection_type="database",server="c1"}`: 1},
			},
			stats: Stats{Completed: 1, Pending: 1},
		},
		{
			name: "messaging without latency histogram",
			pushes: [][]res{{
				fe(with(client(1), func(s *sp) { s.kind = otlp.SpanKindProducer })),
				be(with(server(1), func(s *sp) {
					s.kind = otlp.SpanKindConsumer
					s.start = 150 * time.Millisecond
					s.end = 200 * time.Millisecond
				})),
			}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
				srvCount: {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
				cliCount: {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name: "messaging with latency histogram",
			cfg:  func(c *Config) { c.EnableMessagingSystemLatencyHistogram = true },
			pushes: [][]res{{
				be(with(server(1), func(s *sp) {
					s.kind = otlp.SpanKindConsumer
					s.start = 150 * time.Millisecond
					s.end = 200 * time.Millisecond
				})),
				fe(with(client(1), func(s *sp) { s.kind = otlp.SpanKindProducer })),
			}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
				srvCount: {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
				cliCount: {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
				msgCount: {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
				msgSum:   {`{client="fe",connection_type="messaging_system",server="be"}`: 0.05},
			},
			stats: Stats{Completed: 1},
		},
		{
			name: "messaging latency skipped when the consumer starts before the producer ends",
			cfg:  func(c *Config) { c.EnableMessagingSystemLatencyHistogram = true },
			pushes: [][]res{{
				fe(with(client(1), func(s *sp) { s.kind = otlp.SpanKindProducer })),
				be(with(server(1), func(s *sp) { s.kind = otlp.SpanKindConsumer })),
			}},
			want: map[string]series{
				total:    {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
				srvCount: {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
				cliCount: {`{client="fe",connection_type="messaging_system",server="be"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:    "virtual server from the client's peer",
			pushes:  [][]res{{fe(client(1, otlptest.Str("peer.service", "stripe")))}},
			advance: wait,
			want: map[string]series{
				total:    {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				cliCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				cliSum:   {`{client="fe",connection_type="virtual_node",server="stripe"}`: 0.1},
				// Tempo's rule: the uninstrumented server as a zero.
				srvCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				srvSum:   {`{client="fe",connection_type="virtual_node",server="stripe"}`: 0},
			},
			stats: Stats{Completed: 1, Virtual: 1, Expired: 1},
		},
		{
			name:    "virtual server, virtual_node_latency omit: only the client side",
			cfg:     func(c *Config) { c.VirtualNodeLatency = VirtualNodeLatencyOmit },
			pushes:  [][]res{{fe(client(1, otlptest.Str("peer.service", "stripe")))}},
			advance: wait,
			want: map[string]series{
				total:    {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				cliCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				cliSum:   {`{client="fe",connection_type="virtual_node",server="stripe"}`: 0.1},
			},
			stats: Stats{Completed: 1, Virtual: 1, Expired: 1},
		},
		{
			name:    "virtual server, virtual_node_latency mirror: the client's duration for both",
			cfg:     func(c *Config) { c.VirtualNodeLatency = VirtualNodeLatencyMirror },
			pushes:  [][]res{{fe(client(1, otlptest.Str("peer.service", "stripe")))}},
			advance: wait,
			want: map[string]series{
				total:    {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				cliCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				cliSum:   {`{client="fe",connection_type="virtual_node",server="stripe"}`: 0.1},
				srvCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				srvSum:   {`{client="fe",connection_type="virtual_node",server="stripe"}`: 0.1},
			},
			stats: Stats{Completed: 1, Virtual: 1, Expired: 1},
		},
		{
			name:    "peer attributes are configurable",
			cfg:     func(c *Config) { c.PeerAttributes = []string{"rpc.service"} },
			pushes:  [][]res{{fe(client(1, otlptest.Str("peer.service", "stripe"), otlptest.Str("rpc.service", "billing")))}},
			advance: wait,
			want: map[string]series{
				total:    {`{client="fe",connection_type="virtual_node",server="billing"}`: 1},
				cliCount: {`{client="fe",connection_type="virtual_node",server="billing"}`: 1},
				srvCount: {`{client="fe",connection_type="virtual_node",server="billing"}`: 1},
			},
			stats: Stats{Completed: 1, Virtual: 1, Expired: 1},
		},
		{
			name:   "virtual client user for a root server",
			pushes: [][]res{{be(with(server(1), func(s *sp) { s.parent = 0 }))}},
			want: map[string]series{
				total:    {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				srvCount: {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				srvSum:   {`{client="user",connection_type="virtual_node",server="be"}`: 0.08},
				// Tempo's rule: the user's client side as a zero.
				cliCount: {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				cliSum:   {`{client="user",connection_type="virtual_node",server="be"}`: 0},
			},
			stats: Stats{Completed: 1, Virtual: 1}, // at once: a root span can never pair
		},
		{
			name:   "virtual client, virtual_node_latency omit: only the server side",
			cfg:    func(c *Config) { c.VirtualNodeLatency = VirtualNodeLatencyOmit },
			pushes: [][]res{{be(with(server(1), func(s *sp) { s.parent = 0 }))}},
			want: map[string]series{
				total:    {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				srvCount: {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				srvSum:   {`{client="user",connection_type="virtual_node",server="be"}`: 0.08},
			},
			stats: Stats{Completed: 1, Virtual: 1},
		},
		{
			name:   "virtual client, virtual_node_latency mirror: the server's duration for both",
			cfg:    func(c *Config) { c.VirtualNodeLatency = VirtualNodeLatencyMirror },
			pushes: [][]res{{be(with(server(1), func(s *sp) { s.parent = 0 }))}},
			want: map[string]series{
				total:    {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				srvCount: {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				srvSum:   {`{client="user",connection_type="virtual_node",server="be"}`: 0.08},
				cliCount: {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				cliSum:   {`{client="user",connection_type="virtual_node",server="be"}`: 0.08},
			},
			stats: Stats{Completed: 1, Virtual: 1},
		},
		{
			name:   "virtual client named by the root server's peer",
			pushes: [][]res{{be(with(server(1, otlptest.Str("peer.service", "mobile-app")), func(s *sp) { s.parent = 0 }))}},
			want: map[string]series{
				total:    {`{client="mobile-app",connection_type="virtual_node",server="be"}`: 1},
				srvCount: {`{client="mobile-app",connection_type="virtual_node",server="be"}`: 1},
				cliCount: {`{client="mobile-app",connection_type="virtual_node",server="be"}`: 1},
			},
			stats: Stats{Completed: 1, Virtual: 1}, // at once: a root span can never pair
		},
		{
			name:   "root consumer becomes user edge too",
			pushes: [][]res{{be(with(server(1), func(s *sp) { s.parent = 0; s.kind = otlp.SpanKindConsumer }))}},
			want: map[string]series{
				total:    {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				srvCount: {`{client="user",connection_type="virtual_node",server="be"}`: 1},
				cliCount: {`{client="user",connection_type="virtual_node",server="be"}`: 1},
			},
			stats: Stats{Completed: 1, Virtual: 1}, // at once: a root span can never pair
		},
		{
			name:   "failed client",
			pushes: [][]res{{fe(with(client(1), func(s *sp) { s.err = true })), be(server(1))}},
			want: map[string]series{
				total: {feBe: 1}, failed: {feBe: 1},
				srvCount: {feBe: 1}, cliCount: {feBe: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "failed server, split pushes",
			pushes: [][]res{{be(with(server(1), func(s *sp) { s.err = true }))}, {fe(client(1))}},
			want: map[string]series{
				total: {feBe: 1}, failed: {feBe: 1},
				srvCount: {feBe: 1}, cliCount: {feBe: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:    "failed virtual edge",
			pushes:  [][]res{{fe(with(client(1, otlptest.Str("peer.service", "stripe")), func(s *sp) { s.err = true }))}},
			advance: wait,
			want: map[string]series{
				total:    {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				failed:   {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				cliCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
				srvCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1},
			},
			stats: Stats{Completed: 1, Virtual: 1, Expired: 1},
		},
		{
			name:    "unpaired client and server",
			pushes:  [][]res{{fe(client(1)), be(server(2))}},
			advance: wait,
			want: map[string]series{
				unpaired: {`{client="fe"}`: 1, `{server="be"}`: 1},
			},
			stats: Stats{Expired: 2, Unpaired: 2},
		},
		{
			name:    "not due before wait",
			pushes:  [][]res{{fe(client(1, otlptest.Str("peer.service", "stripe")))}},
			advance: wait - time.Nanosecond,
			want:    map[string]series{},
			stats:   Stats{Pending: 1},
		},
		{
			name:   "flush settles everything",
			pushes: [][]res{{fe(client(1, otlptest.Str("peer.service", "stripe")), client(2)), be(with(server(3), func(s *sp) { s.parent = 0 }))}},
			flush:  true,
			want: map[string]series{
				total: {
					`{client="fe",connection_type="virtual_node",server="stripe"}`: 1,
					`{client="user",connection_type="virtual_node",server="be"}`:   1,
				},
				cliCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1, `{client="user",connection_type="virtual_node",server="be"}`: 1},
				srvCount: {`{client="fe",connection_type="virtual_node",server="stripe"}`: 1, `{client="user",connection_type="virtual_node",server="be"}`: 1},
				unpaired: {`{client="fe"}`: 1},
			},
			stats: Stats{Completed: 2, Virtual: 2, Expired: 2, Unpaired: 1},
		},
		{
			name:   "store full drops the new span",
			cfg:    func(c *Config) { c.MaxItems = 1 },
			pushes: [][]res{{fe(client(1)), fe(client(2)), be(server(3))}, {be(server(1))}},
			want: map[string]series{
				total:    {feBe: 1},
				srvCount: {feBe: 1}, cliCount: {feBe: 1},
				dropped: {`{client="fe"}`: 1, `{server="be"}`: 1},
			},
			stats: Stats{Completed: 1, Dropped: 2},
		},
		{
			name:   "three servers under one client, client first, count one edge",
			pushes: [][]res{{fe(client(1)), be(server(1), with(server(1), func(s *sp) { s.id = 3 }), with(server(1), func(s *sp) { s.id = 4 }))}},
			flush:  true,
			want: map[string]series{
				total:    {feBe: 1},
				srvCount: {feBe: 1}, cliCount: {feBe: 1},
				// The two late servers merge into one half edge.
				unpaired: {`{server="be"}`: 1},
			},
			stats: Stats{Completed: 1, Expired: 1, Unpaired: 1},
		},
		{
			name:   "a service calling itself pairs through the store",
			pushes: [][]res{{fe(client(1), with(server(1), func(s *sp) { s.id = 7 }))}},
			want: map[string]series{
				total:    {`{client="fe",server="fe"}`: 1},
				srvCount: {`{client="fe",server="fe"}`: 1}, srvSum: {`{client="fe",server="fe"}`: 0.08},
				cliCount: {`{client="fe",server="fe"}`: 1}, cliSum: {`{client="fe",server="fe"}`: 0.1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "pairs inside a push take no store capacity",
			cfg:    func(c *Config) { c.MaxItems = 1 },
			pushes: [][]res{{fe(client(1), client(2), client(3)), be(server(2), server(1))}},
			want: map[string]series{
				total:    {feBe: 2},
				srvCount: {feBe: 2}, srvSum: {feBe: 0.16},
				cliCount: {feBe: 2}, cliSum: {feBe: 0.2},
			},
			stats: Stats{Completed: 2, Pending: 1},
		},
		{
			name:   "three servers under one client in one push, servers first, count one edge",
			pushes: [][]res{{be(with(server(1), func(s *sp) { s.err = true }), with(server(1), func(s *sp) { s.id = 3 }), with(server(1), func(s *sp) { s.id = 4 })), fe(client(1))}},
			flush:  true,
			want: map[string]series{
				total:    {feBe: 1},
				failed:   {feBe: 1},
				srvCount: {feBe: 1}, cliCount: {feBe: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "three servers under one client, servers first, count one edge",
			pushes: [][]res{{be(server(1), with(server(1), func(s *sp) { s.id = 3 }), with(server(1), func(s *sp) { s.id = 4 }))}, {fe(client(1))}},
			flush:  true,
			want: map[string]series{
				total:    {feBe: 1},
				srvCount: {feBe: 1}, cliCount: {feBe: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name: "dimensions without prefix: client's value, else server's",
			cfg:  func(c *Config) { c.Dimensions = []string{"deployment.environment", "http.route", "region"} },
			pushes: [][]res{{
				res{service: "fe", attrs: []*commonpb.KeyValue{otlptest.Str("deployment.environment", "prod")}, spans: []sp{client(1, otlptest.Str("region", "eu"))}},
				res{service: "be", attrs: []*commonpb.KeyValue{otlptest.Str("deployment.environment", "staging")}, spans: []sp{server(1, otlptest.Str("http.route", "/pay"), otlptest.Str("region", "us"))}},
			}},
			want: map[string]series{
				total:    {`{client="fe",deployment_environment="prod",http_route="/pay",region="eu",server="be"}`: 1},
				srvCount: {`{client="fe",deployment_environment="prod",http_route="/pay",region="eu",server="be"}`: 1},
				cliCount: {`{client="fe",deployment_environment="prod",http_route="/pay",region="eu",server="be"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name: "dimensions with client/server prefix",
			cfg: func(c *Config) {
				c.Dimensions = []string{"deployment.environment", "http.route"}
				c.EnableClientServerPrefix = true
			},
			pushes: [][]res{
				{res{service: "be", attrs: []*commonpb.KeyValue{otlptest.Str("deployment.environment", "staging")}, spans: []sp{server(1, otlptest.Str("http.route", "/pay"))}}},
				{res{service: "fe", attrs: []*commonpb.KeyValue{otlptest.Str("deployment.environment", "prod")}, spans: []sp{client(1, otlptest.Int("deployment.environment", 7))}}},
			},
			want: map[string]series{
				total:    {`{client="fe",client_deployment_environment="prod",server="be",server_deployment_environment="staging",server_http_route="/pay"}`: 1},
				srvCount: {`{client="fe",client_deployment_environment="prod",server="be",server_deployment_environment="staging",server_http_route="/pay"}`: 1},
				cliCount: {`{client="fe",client_deployment_environment="prod",server="be",server_deployment_environment="staging",server_http_route="/pay"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "non-string dimension values become text",
			cfg:    func(c *Config) { c.Dimensions = []string{"http.status_code"} },
			pushes: [][]res{{fe(client(1, otlptest.Int("http.status_code", 503))), be(server(1))}},
			want: map[string]series{
				total:    {`{client="fe",http_status_code="503",server="be"}`: 1},
				srvCount: {`{client="fe",http_status_code="503",server="be"}`: 1},
				cliCount: {`{client="fe",http_status_code="503",server="be"}`: 1},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "non-string dimension values of several spans in one push stay apart",
			cfg:    func(c *Config) { c.Dimensions = []string{"http.status_code"} },
			pushes: [][]res{{fe(client(1, otlptest.Int("http.status_code", 503)), client(2, otlptest.Int("http.status_code", 200))), be(server(2), server(1))}},
			want: map[string]series{
				total: {
					`{client="fe",http_status_code="503",server="be"}`: 1,
					`{client="fe",http_status_code="200",server="be"}`: 1,
				},
				srvCount: {
					`{client="fe",http_status_code="503",server="be"}`: 1,
					`{client="fe",http_status_code="200",server="be"}`: 1,
				},
				cliCount: {
					`{client="fe",http_status_code="503",server="be"}`: 1,
					`{client="fe",http_status_code="200",server="be"}`: 1,
				},
			},
			stats: Stats{Completed: 2},
		},
		{
			name: "virtual node label",
			cfg: func(c *Config) {
				c.EnableVirtualNodeLabel = true
				c.Dimensions = []string{"env"}
				c.EnableClientServerPrefix = true
			},
			pushes: [][]res{{
				fe(client(1, otlptest.Str("env", "prod")), client(2, otlptest.Str("peer.service", "stripe"))),
				be(server(1), with(server(3), func(s *sp) { s.parent = 0 })),
			}},
			advance: wait,
			want: map[string]series{
				total: {
					`{client="fe",client_env="prod",server="be"}`:                                        1,
					`{client="fe",connection_type="virtual_node",server="stripe",virtual_node="server"}`: 1,
					`{client="user",connection_type="virtual_node",server="be",virtual_node="client"}`:   1,
				},
				srvCount: {
					`{client="fe",client_env="prod",server="be"}`:                                        1,
					`{client="fe",connection_type="virtual_node",server="stripe",virtual_node="server"}`: 1,
					`{client="user",connection_type="virtual_node",server="be",virtual_node="client"}`:   1,
				},
				cliCount: {
					`{client="fe",client_env="prod",server="be"}`:                                        1,
					`{client="fe",connection_type="virtual_node",server="stripe",virtual_node="server"}`: 1,
					`{client="user",connection_type="virtual_node",server="be",virtual_node="client"}`:   1,
				},
			},
			stats: Stats{Completed: 3, Virtual: 2, Expired: 1},
		},
		{
			name: "filter policies drop spans before pairing",
			cfg: func(c *Config) {
				c.FilterPolicies = []spanfilter.Policy{{Exclude: &spanfilter.Match{
					MatchType:  "strict",
					Attributes: []spanfilter.Attribute{{Key: "name", Value: "health"}},
				}}}
			},
			pushes:  [][]res{{fe(with(client(1), func(s *sp) { s.name = "health" }), client(2)), be(server(1), server(2))}},
			advance: wait,
			want: map[string]series{
				total:    {feBe: 1},
				srvCount: {feBe: 1}, cliCount: {feBe: 1},
				unpaired: {`{server="be"}`: 1},
			},
			stats: Stats{Completed: 1, Expired: 1, Unpaired: 1},
		},
		{
			// Tempo's rule: the latest span's multiplier, 1/ratio of a
			// double ratio on the span, else on its resource; an integer
			// does not count; tracestate only when enabled.
			name: "span multiplier: sampling ratios of span and resource",
			cfg:  func(c *Config) { c.SpanMultiplierKey = "sampling.ratio" },
			pushes: [][]res{{
				fe(client(1, otlptest.Float("sampling.ratio", 0.5)), with(client(2), func(s *sp) { s.traceState = "ot=th:c" })),
				res{service: "be", attrs: []*commonpb.KeyValue{otlptest.Float("sampling.ratio", 0.25)}, spans: []sp{
					server(1, otlptest.Float("sampling.ratio", 0.1)), // latest: 10
					server(2, otlptest.Int("sampling.ratio", 2)),     // the resource's 0.25: 4
				}},
			}},
			want: map[string]series{
				total:    {feBe: 14},
				srvCount: {feBe: 14}, srvSum: {feBe: 1.12},
				cliCount: {feBe: 14}, cliSum: {feBe: 1.4},
			},
			stats: Stats{Completed: 2},
		},
		{
			name: "span multiplier from tracestate when enabled",
			cfg: func(c *Config) {
				c.SpanMultiplierKey = "sampling.ratio"
				c.EnableTraceStateSpanMultiplier = true
			},
			pushes: [][]res{{
				be(with(server(1, otlptest.Float("sampling.ratio", 0.5)), func(s *sp) { s.traceState = "ot=th:c" })),
				fe(with(client(1), func(s *sp) { s.traceState = "vendor=x,ot=th:e" })), // latest: 8
			}},
			want: map[string]series{
				total:    {feBe: 8},
				srvCount: {feBe: 8}, srvSum: {feBe: 0.64},
				cliCount: {feBe: 8}, cliSum: {feBe: 0.8},
			},
			stats: Stats{Completed: 1},
		},
		{
			name:   "span multiplier attribute off by default",
			pushes: [][]res{{fe(client(1, otlptest.Float("sampling.multiplier", 10))), be(server(1))}},
			want:   paired,
			stats:  Stats{Completed: 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			reg := registry.New(registry.Config{})
			clock := newClock()
			p, err := New(cfg, reg, Options{Tenant: "t1", Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			for _, push := range tc.pushes {
				p.Push(makeBatch(t, push...))
			}
			if tc.advance > 0 {
				clock.Advance(tc.advance)
				p.Expire()
			}
			if tc.flush {
				p.Flush()
			}
			got := collect(t, reg)
			checkSeries(t, got, tc.want)
			st := p.Stats()
			st.Capacity = 0
			if st != tc.stats {
				t.Errorf("stats = %+v, want %+v", st, tc.stats)
			}
		})
	}
}

func checkSeries(t *testing.T, got collected, want map[string]series) {
	t.Helper()
	names := append([]string(nil), alwaysChecked...)
	for name := range want {
		names = append(names, name)
	}
	for _, name := range names {
		w := want[name]
		if w == nil {
			w = series{}
		}
		g := got.series[name]
		if g == nil {
			g = series{}
		}
		if len(g) != len(w) {
			t.Errorf("%s: got %v, want %v", name, g, w)
			continue
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok || !(math.Abs(gv-wv) <= 1e-9) { // NaN fails too
				t.Errorf("%s%s = %v (present %v), want %v; all: %v", name, k, gv, ok, wv, g)
			}
		}
	}
}

func TestExpiryFollowsTheClock(t *testing.T) {
	cfg := DefaultConfig()
	reg := registry.New(registry.Config{})
	clock := newClock()
	p, err := New(cfg, reg, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	fe := func(trace uint64) *otlp.Batch {
		return makeBatch(t, res{service: "fe", spans: []sp{client(trace, otlptest.Str("peer.service", "stripe"))}})
	}
	p.Push(fe(1))
	clock.Advance(4 * time.Second)
	p.Push(fe(2))
	clock.Advance(4 * time.Second)
	p.Push(fe(3))

	steps := []struct {
		advance time.Duration
		pending int
		virtual uint64
	}{
		{0, 3, 0},
		{2*time.Second - 1, 3, 0}, // t = 10 s - 1 ns
		{1, 2, 1},                 // t = 10 s: the first is due
		{4 * time.Second, 1, 2},   // t = 14 s
		{3 * time.Second, 1, 2},   // t = 17 s
		{time.Second, 0, 3},       // t = 18 s
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		p.Expire()
		st := p.Stats()
		if st.Pending != s.pending || st.Virtual != s.virtual {
			t.Fatalf("step %d: pending %d virtual %d, want %d and %d", i, st.Pending, st.Virtual, s.pending, s.virtual)
		}
	}
}

func TestExemplarsCarryTheTraceID(t *testing.T) {
	reg := registry.New(registry.Config{})
	p, err := New(DefaultConfig(), reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Push(makeBatch(t, res{service: "fe", spans: []sp{client(42)}}, res{service: "be", spans: []sp{server(42)}}))
	got := collect(t, reg)
	want := hex.EncodeToString(otlptest.TraceID(42))
	n := 0
	for _, e := range got.exemplars {
		if tid := e.Exemplar.Labels.Get("trace_id"); tid != want {
			t.Errorf("exemplar trace_id %q, want %q", tid, want)
		}
		n++
	}
	if n != 2 { // one per histogram: server and client seconds
		t.Errorf("%d exemplars, want 2", n)
	}
}

// TestBatchReuse checks that pending edges own their strings: the batch
// memory is overwritten after Push, as the receiver's pool does.
func TestBatchReuse(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dimensions = []string{"env"}
	reg := registry.New(registry.Config{})
	p, err := New(cfg, reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := makeBatch(t, res{service: "frontend", attrs: []*commonpb.KeyValue{otlptest.Str("env", "prod")}, spans: []sp{client(1, otlptest.Str("peer.service", "stripe"))}})
	p.Push(b)
	for ri := range b.Resources {
		for i := range b.Resources[ri].Attributes {
			scribble(b.Resources[ri].Attributes[i].Value.Str)
		}
		for _, s := range b.Resources[ri].Spans {
			for _, a := range s.Attributes {
				scribble(a.Value.Str)
			}
		}
	}
	p.Flush()
	checkSeries(t, collect(t, reg), map[string]series{
		total:    {`{client="frontend",connection_type="virtual_node",env="prod",server="stripe"}`: 1},
		cliCount: {`{client="frontend",connection_type="virtual_node",env="prod",server="stripe"}`: 1},
		srvCount: {`{client="frontend",connection_type="virtual_node",env="prod",server="stripe"}`: 1},
	})
}

// scribble overwrites the bytes behind s, which point into the request.
func scribble(s string) {
	if s == "" {
		return
	}
	b := unsafeBytes(s)
	for i := range b {
		b[i] = 'X'
	}
}

func TestConcurrentPushes(t *testing.T) {
	const (
		workers = 8
		traces  = 2000
	)
	cfg := DefaultConfig()
	cfg.Dimensions = []string{"env"}
	reg := registry.New(registry.Config{})
	p, err := New(cfg, reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Worker w sends the clients of traces ≡ w and the servers of traces ≡
	// w+1 (mod workers), in batches of 50, so every edge is completed by a
	// different goroutine than the one that started it.
	batches := make([][]*otlp.Batch, workers)
	for w := 0; w < workers; w++ {
		for start := 0; start < traces; start += 50 {
			var cs, ss []sp
			for tr := start; tr < start+50; tr++ {
				if tr%workers == w {
					cs = append(cs, client(uint64(tr)))
				}
				if tr%workers == (w+1)%workers {
					ss = append(ss, server(uint64(tr), otlptest.Str("env", "prod")))
				}
			}
			batches[w] = append(batches[w], makeBatch(t, res{service: "fe", spans: cs}, res{service: "be", spans: ss}))
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for _, b := range batches[w] {
				p.Push(b)
				if w == 0 {
					p.Expire()
					_ = p.Stats()
				}
			}
		}(w)
	}
	wg.Wait()
	st := p.Stats()
	if st.Completed != traces || st.Pending != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v, want %d completed and nothing pending", st, traces)
	}
	checkSeries(t, collect(t, reg), map[string]series{
		total:    {`{client="fe",env="prod",server="be"}`: traces},
		srvCount: {`{client="fe",env="prod",server="be"}`: traces},
		cliCount: {`{client="fe",env="prod",server="be"}`: traces},
	})
}

func TestSelfMetrics(t *testing.T) {
	promReg := prometheus.NewRegistry()
	var procs []*Processor
	for _, tenant := range []string{"a", "b"} {
		cfg := DefaultConfig()
		cfg.MaxItems = 4
		p, err := New(cfg, registry.New(registry.Config{}), Options{Tenant: tenant})
		if err != nil {
			t.Fatal(err)
		}
		promReg.MustRegister(p)
		procs = append(procs, p)
	}
	a := procs[0]
	a.Push(makeBatch(t,
		res{service: "fe", spans: []sp{client(1), client(2), client(3), client(4), client(5), client(6)}},
		res{service: "be", spans: []sp{server(1), with(server(9), func(s *sp) { s.parent = 0 })}},
	))
	a.Flush()
	// Tenant a: client 1 pairs with server 1 inside the request, without
	// taking an item; clients 2–5 fill the 4 items and 6 is dropped; the
	// root server is a user edge at once (it never waits), and the flush
	// leaves four unpaired clients.
	expected := `
# HELP spangraph_servicegraph_completed_edges_total Edges recorded: paired, database and virtual.
# TYPE spangraph_servicegraph_completed_edges_total counter
spangraph_servicegraph_completed_edges_total{tenant="a"} 2
spangraph_servicegraph_completed_edges_total{tenant="b"} 0
# HELP spangraph_servicegraph_dropped_spans_total Spans refused because the edge store was full.
# TYPE spangraph_servicegraph_dropped_spans_total counter
spangraph_servicegraph_dropped_spans_total{tenant="a"} 1
spangraph_servicegraph_dropped_spans_total{tenant="b"} 0
# HELP spangraph_servicegraph_expired_edges_total Half edges that waited the whole wait, by the span kind of the side seen.
# TYPE spangraph_servicegraph_expired_edges_total counter
spangraph_servicegraph_expired_edges_total{span_kind="SPAN_KIND_CLIENT",tenant="a"} 4
spangraph_servicegraph_expired_edges_total{span_kind="SPAN_KIND_CLIENT",tenant="b"} 0
spangraph_servicegraph_expired_edges_total{span_kind="SPAN_KIND_CONSUMER",tenant="a"} 0
spangraph_servicegraph_expired_edges_total{span_kind="SPAN_KIND_CONSUMER",tenant="b"} 0
spangraph_servicegraph_expired_edges_total{span_kind="SPAN_KIND_PRODUCER",tenant="a"} 0
spangraph_servicegraph_expired_edges_total{span_kind="SPAN_KIND_PRODUCER",tenant="b"} 0
spangraph_servicegraph_expired_edges_total{span_kind="SPAN_KIND_SERVER",tenant="a"} 0
spangraph_servicegraph_expired_edges_total{span_kind="SPAN_KIND_SERVER",tenant="b"} 0
`
	if err := testutil.GatherAndCompare(promReg, strings.NewReader(expected),
		"spangraph_servicegraph_completed_edges_total", "spangraph_servicegraph_dropped_spans_total",
		"spangraph_servicegraph_expired_edges_total"); err != nil {
		t.Error(err)
	}

	b := procs[1]
	b.Push(makeBatch(t, res{service: "fe", spans: []sp{client(1)}}))
	pending := `
# HELP spangraph_servicegraph_pending_edges Half edges waiting in the edge store for their other side.
# TYPE spangraph_servicegraph_pending_edges gauge
spangraph_servicegraph_pending_edges{tenant="a"} 0
spangraph_servicegraph_pending_edges{tenant="b"} 1
# HELP spangraph_servicegraph_store_fill_ratio Pending half edges divided by max_items.
# TYPE spangraph_servicegraph_store_fill_ratio gauge
spangraph_servicegraph_store_fill_ratio{tenant="a"} 0
spangraph_servicegraph_store_fill_ratio{tenant="b"} 0.25
`
	if err := testutil.GatherAndCompare(promReg, strings.NewReader(pending),
		"spangraph_servicegraph_pending_edges", "spangraph_servicegraph_store_fill_ratio"); err != nil {
		t.Error(err)
	}
	if got := b.Stats(); got != (Stats{Pending: 1, Capacity: 4}) {
		t.Errorf("stats %+v", got)
	}
}

func TestConfig(t *testing.T) {
	if cfg := DefaultConfig(); !reflect.DeepEqual(cfg.HistogramBuckets, []float64{0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8}) {
		t.Errorf("default buckets %v", cfg.HistogramBuckets)
	}
	cases := []struct {
		name string
		mod  func(*Config)
		err  string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"wait", func(c *Config) { c.Wait = 0 }, "servicegraph.wait: must be positive"},
		{"max_items zero", func(c *Config) { c.MaxItems = 0 }, "servicegraph.max_items: must be between 1 and"},
		{"max_items huge", func(c *Config) { c.MaxItems = 1 << 31 }, "servicegraph.max_items: must be between 1 and"},
		{"buckets", func(c *Config) { c.HistogramBuckets = []float64{1, 0.5} }, "servicegraph.histogram_buckets[1]"},
		{"no buckets", func(c *Config) { c.HistogramBuckets = nil }, "servicegraph.histogram_buckets: at least one"},
		{"empty dimension", func(c *Config) { c.Dimensions = []string{"a", ""} }, "servicegraph.dimensions[1]: empty attribute name"},
		{"empty peer attribute", func(c *Config) { c.PeerAttributes = []string{""} }, "servicegraph.peer_attributes[0]"},
		{"empty database attribute", func(c *Config) { c.DatabaseNameAttributes = []string{"db.name", ""} }, "servicegraph.database_name_attributes[1]"},
		{"colliding dimensions", func(c *Config) { c.Dimensions = []string{"a.b", "a_b"} }, `servicegraph.dimensions: "a.b" and "a_b" both become label "a_b"`},
		{"dimension named like an intrinsic", func(c *Config) { c.Dimensions = []string{"client"} }, ""},
		{"virtual_node_latency omit", func(c *Config) { c.VirtualNodeLatency = VirtualNodeLatencyOmit }, ""},
		{"virtual_node_latency mirror", func(c *Config) { c.VirtualNodeLatency = VirtualNodeLatencyMirror }, ""},
		{"virtual_node_latency unknown", func(c *Config) { c.VirtualNodeLatency = "client" }, `servicegraph.virtual_node_latency: "client" is not zero, omit or mirror`},
		{"virtual_node_latency empty", func(c *Config) { c.VirtualNodeLatency = "" }, `servicegraph.virtual_node_latency: "" is not zero, omit or mirror`},
		{"filter policy", func(c *Config) {
			c.FilterPolicies = []spanfilter.Policy{{Include: &spanfilter.Match{MatchType: "fuzzy", Attributes: []spanfilter.Attribute{{Key: "name", Value: "x"}}}}}
		}, "servicegraph.filter_policies[0].include.match_type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			_, err := New(cfg, registry.New(registry.Config{}), Options{})
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

func TestDimensionNamedLikeAnIntrinsic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dimensions = []string{"client"}
	reg := registry.New(registry.Config{})
	p, err := New(cfg, reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Push(makeBatch(t, res{service: "fe", spans: []sp{client(1, otlptest.Str("client", "ios"))}}, res{service: "be", spans: []sp{server(1)}}))
	checkSeries(t, collect(t, reg), map[string]series{
		total:    {`{__client="ios",client="fe",server="be"}`: 1},
		srvCount: {`{__client="ios",client="fe",server="be"}`: 1},
		cliCount: {`{__client="ios",client="fe",server="be"}`: 1},
	})
}

func TestShardCount(t *testing.T) {
	for _, c := range []struct{ items, shards int }{{1, 1}, {2047, 1}, {2048, 2}, {10_000, 8}, {1 << 17, 128}, {DefaultMaxItems, 128}} {
		if got := shardCount(c.items); got != c.shards {
			t.Errorf("shardCount(%d) = %d, want %d", c.items, got, c.shards)
		}
	}
	// The shards' capacities add up to max_items exactly.
	cfg := DefaultConfig()
	cfg.MaxItems = 10_007
	p, err := New(cfg, registry.New(registry.Config{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for i := range p.shards {
		sum += p.shards[i].cap
	}
	if sum != cfg.MaxItems {
		t.Errorf("capacities add up to %d, want %d", sum, cfg.MaxItems)
	}
}

// TestSlotsAreRecycled pushes many more half edges through a small store
// than it holds, so slots must be freed and reused, and checks the list
// stays consistent.
func TestSlotsAreRecycled(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxItems = 300
	reg := registry.New(registry.Config{})
	clock := newClock()
	p, err := New(cfg, reg, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 20; round++ {
		var cs, ss []sp
		for i := 0; i < 300; i++ {
			tr := uint64(round*1000 + i)
			cs = append(cs, client(tr, otlptest.Str("peer.service", "ext")))
			if i%3 == 0 {
				ss = append(ss, server(tr))
			}
		}
		p.Push(makeBatch(t, res{service: "fe", spans: cs}, res{service: "be", spans: ss}))
		clock.Advance(cfg.Wait)
		p.Expire()
	}
	st := p.Stats()
	if st.Completed != 20*300 || st.Virtual != 20*200 || st.Pending != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	// The 200 clients left waiting each round fit one chunk of 256 slots,
	// reused round after round; the pairs complete inside each request.
	sh := &p.shards[0]
	indexed := 0
	for _, s := range sh.index {
		if s != 0 {
			indexed++
		}
	}
	if len(sh.chunks) != 1 || sh.head != none || sh.tail != none || sh.n != 0 || indexed != 0 {
		t.Fatalf("shard: %d chunks, head %d, tail %d, %d pending, %d indexed", len(sh.chunks), sh.head, sh.tail, sh.n, indexed)
	}
}

// TestShardSpread checks that counter-like trace ids, which differ only in
// their last bytes, spread over the shards as evenly as random ones.
func TestShardSpread(t *testing.T) {
	const bits, perShard = 7, 1000
	for _, name := range []string{"counter in the low bytes", "counter in the high bytes"} {
		var counts [1 << bits]int
		for n := uint64(0); n < perShard<<bits; n++ {
			var id [16]byte
			if name == "counter in the low bytes" {
				copy(id[:], otlptest.TraceID(n))
			} else {
				binary.BigEndian.PutUint64(id[:8], n)
			}
			counts[shardIndex(&id, bits)]++
		}
		for i, c := range counts {
			if c < perShard*8/10 || c > perShard*12/10 {
				t.Errorf("%s: shard %d got %d of %d ids", name, i, c, perShard<<bits)
			}
		}
	}
	var id [16]byte
	if got := shardIndex(&id, 0); got != 0 {
		t.Errorf("one shard: index %d", got)
	}
}

func TestKeySet(t *testing.T) {
	var ks keySet
	a, b, c := ks.add("db.name"), ks.add("peer.service"), ks.add("server.address")
	if again := ks.add("db.name"); again != a || len(ks.keys) != 3 {
		t.Fatalf("add is not idempotent: %d vs %d, %d keys", again, a, len(ks.keys))
	}
	attrs := []otlp.KeyValue{
		{Key: "a.very.long.attribute.name.longer.than.every.key", Value: otlp.Value{Type: otlp.ValueString, Str: "x"}},
		{Key: "db.user", Value: otlp.Value{Type: otlp.ValueString, Str: "u"}}, // same length as db.name
		{Key: "db.name", Value: otlp.Value{Type: otlp.ValueString, Str: "orders"}},
		{Key: "db.name", Value: otlp.Value{Type: otlp.ValueString, Str: "second"}},
		{Key: "peer.service", Value: otlp.Value{Type: otlp.ValueInt, Int: 7}},
	}
	out := make([]otlp.Value, 3)
	out[c] = otlp.Value{Type: otlp.ValueString, Str: "stale"}
	ks.scan(attrs, out)
	if out[a].Str != "orders" || out[b].Type != otlp.ValueInt || out[b].Int != 7 || out[c].Type != otlp.ValueEmpty {
		t.Fatalf("scan: %+v", out)
	}
}
