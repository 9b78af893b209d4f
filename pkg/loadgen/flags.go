package loadgen

import "flag"

// DefaultGRPCEndpoint is the endpoint for --protocol grpc when --endpoint
// is not given: the OTLP/gRPC port of a local spangraph.
const DefaultGRPCEndpoint = "127.0.0.1:4317"

// RegisterFlags defines on fs the command-line flags of `spangraph
// loadgen`, one per option, with o's values as defaults; parsing fs sets
// o. The deploy tests read the flags from here too, to check the
// arguments that docker-compose.yaml passes.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "OTLP/HTTP base URL (http://host:4318) or OTLP/gRPC address (host:4317; "+DefaultGRPCEndpoint+" with --protocol grpc); a comma-separated list sends each request to the next, as a load balancer in front of a ring does")
	fs.StringVar(&o.Protocol, "protocol", o.Protocol, "http or grpc")
	fs.StringVar(&o.Encoding, "encoding", o.Encoding, "protobuf or json (http only)")
	fs.BoolVar(&o.Gzip, "gzip", o.Gzip, "gzip request bodies (http)")
	fs.Float64Var(&o.Rate, "rate", o.Rate, "spans per second; 0 sends as fast as the target accepts")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long to send; 0 for no limit (then --spans ends the run)")
	fs.Int64Var(&o.Spans, "spans", o.Spans, "stop after this many spans; 0 for no limit")
	fs.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "requests in flight")
	fs.IntVar(&o.Services, "services", o.Services, "services in the topology (10 make the shop; more are added below it)")
	fs.IntVar(&o.TracesPerRequest, "traces-per-request", o.TracesPerRequest, "traces in one export request")
	fs.BoolVar(&o.SplitByService, "split-by-service", o.SplitByService, "send each service's spans in requests of their own, as per-service SDK exporters do (default: whole traces in one request, as from a Collector)")
	fs.IntVar(&o.SpanNames, "span-names", o.SpanNames, "random span-name variants per operation, to stress cardinality; 0 for none")
	fs.Float64Var(&o.ErrorScale, "error-scale", o.ErrorScale, "multiplies every service's error ratio")
	fs.IntVar(&o.Depth, "depth", o.Depth, "maximum call depth of a trace")
	fs.IntVar(&o.AttributeValues, "attribute-cardinality", o.AttributeValues, "distinct values of a span attribute app.customer; 0 for none")
	fs.Float64Var(&o.SilentFraction, "silent-fraction", o.SilentFraction, "share of spans that are client calls never answered: half to uninstrumented peers named by peer.service, half to hosts known only by server.address")
	fs.StringVar(&o.Tenant, "tenant", o.Tenant, "X-Scope-OrgID to send")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed")
}
