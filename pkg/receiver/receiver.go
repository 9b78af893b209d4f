// Package receiver accepts OTLP trace exports over gRPC and HTTP, checks
// and decodes them, and hands the batches to a Consumer through a bounded
// queue.
//
// A request is answered once its spans are queued, not once they are
// processed. Memory is bounded in decoded bytes: a request charges
// max_queue_bytes while it is read, as it is decoded and while it waits in
// the queue, and is refused as soon as a charge does not fit, with HTTP 429
// / gRPC ResourceExhausted and a retry hint, which OTLP exporters retry.
// Spans that are answered with success are never dropped afterwards: Stop
// drains the queue.
package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/limits"
	"github.com/spangraph/spangraph/pkg/otlp"
)

// Consumer processes decoded batches. It must not keep b, or strings read
// from it, after it returns.
type Consumer interface {
	// Admit is called before a tenant's batch is accepted; an error
	// refuses the request with its message: 503 / Unavailable, or the
	// answer it chooses if it is a Refusal.
	Admit(tenant string) error
	Consume(tenant string, b *otlp.Batch)
}

// Config of the receiver.
type Config struct {
	// GRPCAddr and HTTPAddr are the OTLP listen addresses; empty disables.
	GRPCAddr string `yaml:"-"`
	HTTPAddr string `yaml:"-"`
	// MaxRequestBytes caps a request body, after decompression too.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// MaxQueueBytes caps the memory of requests being read, decoded or
	// waiting to be processed, counted as decoded. It is one budget for
	// the whole receiver; requests over 1 MiB decoded may fill only three
	// quarters of it (see gate). pkg/config sizes it from memory_limit.
	MaxQueueBytes int `yaml:"max_queue_bytes"`
	// Workers is the number of processing goroutines; 0 means GOMAXPROCS.
	Workers int `yaml:"workers"`
	// IngestionSlack: spans that end further than this from now are
	// refused, since they would distort rates.
	IngestionSlack time.Duration `yaml:"ingestion_slack"`
	// TLS of both OTLP listeners; empty cert_file means plain text.
	TLS auth.TLSConfig `yaml:"tls"`

	// HTTPReadHeaderTimeout bounds reading a request's headers (default
	// 10s); HTTPReadTimeout the whole request, body included, so that a
	// body that trickles in is cut off (default 30s); HTTPWriteTimeout
	// runs from the end of the headers to the end of the answer, reading
	// and decoding included (default 1m); HTTPIdleTimeout closes a
	// keep-alive connection that sends nothing (default 2m).
	HTTPReadHeaderTimeout time.Duration `yaml:"http_read_header_timeout"`
	HTTPReadTimeout       time.Duration `yaml:"http_read_timeout"`
	HTTPWriteTimeout      time.Duration `yaml:"http_write_timeout"`
	HTTPIdleTimeout       time.Duration `yaml:"http_idle_timeout"`
	// GRPCMaxConnectionIdle closes a gRPC connection without calls for
	// that long (default 5m); GRPCMaxConnectionAge closes any after that
	// long (default 30m), letting calls finish for
	// GRPCMaxConnectionAgeGrace (default 1m), so that clients reconnect
	// and spread over instances.
	GRPCMaxConnectionIdle     time.Duration `yaml:"grpc_max_connection_idle"`
	GRPCMaxConnectionAge      time.Duration `yaml:"grpc_max_connection_age"`
	GRPCMaxConnectionAgeGrace time.Duration `yaml:"grpc_max_connection_age_grace"`
	// GRPCKeepaliveTime is how long a connection may be silent before the
	// server pings it (default 2m); GRPCKeepaliveTimeout how long it
	// waits for the answer before closing it (default 20s).
	GRPCKeepaliveTime    time.Duration `yaml:"grpc_keepalive_time"`
	GRPCKeepaliveTimeout time.Duration `yaml:"grpc_keepalive_timeout"`
	// GRPCKeepaliveMinTime: a client that pings more often is
	// disconnected (default 10s); pings without calls are allowed.
	GRPCKeepaliveMinTime time.Duration `yaml:"grpc_keepalive_min_time"`
	// GRPCMaxConcurrentStreams caps the calls in flight on one connection
	// (default 100).
	GRPCMaxConcurrentStreams int `yaml:"grpc_max_concurrent_streams"`
}

// Access decides who sends a request and how much they may send. The
// engine builds it from the top-level auth: and limits: sections and
// shares it with the rest of the process; the zero Access lets
// X-Scope-OrgID name the tenant and applies no limits.
type Access struct {
	// Auth decides the tenant of a request; nil: X-Scope-OrgID.
	Auth *auth.Authenticator
	// Limits applies the per-tenant limits; nil: none.
	Limits *limits.Limits
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxRequestBytes: 16 << 20,
		MaxQueueBytes:   256 << 20,
		IngestionSlack:  30 * time.Second,

		HTTPReadHeaderTimeout: 10 * time.Second,
		HTTPReadTimeout:       30 * time.Second,
		HTTPWriteTimeout:      time.Minute,
		HTTPIdleTimeout:       2 * time.Minute,

		GRPCMaxConnectionIdle:     5 * time.Minute,
		GRPCMaxConnectionAge:      30 * time.Minute,
		GRPCMaxConnectionAgeGrace: time.Minute,
		GRPCKeepaliveTime:         2 * time.Minute,
		GRPCKeepaliveTimeout:      20 * time.Second,
		GRPCKeepaliveMinTime:      10 * time.Second,
		GRPCMaxConcurrentStreams:  100,
	}
}

// Validate checks the config; errors name the key under prefix.
func (c *Config) Validate(prefix string) error {
	switch {
	case c.MaxRequestBytes <= 0:
		return fmt.Errorf("%s.max_request_bytes: must be positive, got %d", prefix, c.MaxRequestBytes)
	case c.MaxRequestBytes > math.MaxInt32:
		// Decoded spans keep their offset in the request in 32 bits.
		return fmt.Errorf("%s.max_request_bytes: must be at most 2 GiB, got %d", prefix, c.MaxRequestBytes)
	case c.MaxQueueBytes < c.MaxRequestBytes:
		return fmt.Errorf("%s.max_queue_bytes: must be at least max_request_bytes (%d), got %d", prefix, c.MaxRequestBytes, c.MaxQueueBytes)
	case c.Workers < 0:
		return fmt.Errorf("%s.workers: must not be negative, got %d", prefix, c.Workers)
	case c.IngestionSlack <= 0:
		return fmt.Errorf("%s.ingestion_slack: must be positive, got %s", prefix, c.IngestionSlack)
	case c.HTTPReadTimeout < c.HTTPReadHeaderTimeout:
		return fmt.Errorf("%s.http_read_timeout: must be at least http_read_header_timeout (%s), since it covers the headers too, got %s", prefix, c.HTTPReadHeaderTimeout, c.HTTPReadTimeout)
	case c.HTTPWriteTimeout < c.HTTPReadTimeout:
		return fmt.Errorf("%s.http_write_timeout: must be at least http_read_timeout (%s), since it runs while the body is read, got %s", prefix, c.HTTPReadTimeout, c.HTTPWriteTimeout)
	case c.GRPCMaxConcurrentStreams <= 0:
		return fmt.Errorf("%s.grpc_max_concurrent_streams: must be positive, got %d", prefix, c.GRPCMaxConcurrentStreams)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"http_read_header_timeout", c.HTTPReadHeaderTimeout},
		{"http_idle_timeout", c.HTTPIdleTimeout},
		{"grpc_max_connection_idle", c.GRPCMaxConnectionIdle},
		{"grpc_max_connection_age", c.GRPCMaxConnectionAge},
		{"grpc_max_connection_age_grace", c.GRPCMaxConnectionAgeGrace},
		{"grpc_keepalive_time", c.GRPCKeepaliveTime},
		{"grpc_keepalive_timeout", c.GRPCKeepaliveTimeout},
		{"grpc_keepalive_min_time", c.GRPCKeepaliveMinTime},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s.%s: must be positive, got %s", prefix, d.key, d.v)
		}
	}
	return c.TLS.Validate(prefix + ".tls")
}

// Reasons for refusing requests and spans, as self-metric label values.
const (
	ReasonMalformed      = "malformed"
	ReasonMediaType      = "unsupported_media_type"
	ReasonTooLarge       = "too_large"
	ReasonQueueFull      = "queue_full"
	ReasonMemory         = "memory"
	ReasonReadTimeout    = "read_timeout"
	ReasonBadTenant      = "bad_tenant"
	ReasonBadMethod      = "bad_method"
	ReasonInvalidID      = "invalid_id"
	ReasonInvalidUTF8    = "invalid_utf8"
	ReasonInvalidEnum    = "invalid_enum"
	ReasonNoStartTime    = "no_start_time"
	ReasonOutsideSlack   = "outside_ingestion_slack"
	ReasonShuttingDown   = "shutting_down"
	ReasonNotAdmitted    = "not_admitted"
	protocolGRPC         = "grpc"
	protocolHTTP         = "http"
	defaultQueueCapacity = 1 << 14
)

var (
	spansReceived = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_receiver_spans_received_total",
		Help: "Spans accepted for processing.",
	}, []string{"tenant", "protocol"})
	spansRejected = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_receiver_spans_rejected_total",
		Help: "Spans refused, by reason; the sender was told.",
	}, []string{"tenant", "protocol", "reason"})
	requestsRejected = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_receiver_requests_rejected_total",
		Help: "Export requests refused as a whole, by reason.",
	}, []string{"protocol", "reason"})
	queueBytes = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spangraph_receiver_queue_bytes",
		Help: "Bytes of max_queue_bytes reserved by requests being read, decoded or waiting to be processed, counted as decoded.",
	})
	queueRequests = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spangraph_receiver_queue_requests",
		Help: "Requests waiting to be processed.",
	})
)

type job struct {
	tenant string
	batch  *otlp.Batch
}

// Receiver is the OTLP intake.
type Receiver struct {
	cfg      Config
	access   Access
	consumer Consumer
	logger   *slog.Logger
	now      func() time.Time

	queue   chan job
	gate    *gate
	closeMu sync.RWMutex
	closed  bool
	workers sync.WaitGroup

	grpcServer *grpc.Server
	httpServer *http.Server
	grpcLis    net.Listener
	httpLis    net.Listener

	received atomic.Int64 // spans accepted, for health

	router      atomic.Pointer[routerBox]
	routing     atomic.Bool
	draining    atomic.Bool
	awaitRouter bool
	// forwardFails and forwardLogged pace the log of failed forwards.
	forwardFails  atomic.Int64
	forwardLogged atomic.Int64
}

// New returns a receiver that admits requests by access and feeds
// consumer. Call Start to listen.
func New(cfg Config, access Access, consumer Consumer, logger *slog.Logger) (*Receiver, error) {
	if err := cfg.Validate("receiver"); err != nil {
		return nil, err
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	return &Receiver{
		cfg:      cfg,
		access:   access,
		consumer: consumer,
		logger:   logger,
		now:      time.Now,
		queue:    make(chan job, defaultQueueCapacity),
		gate:     &gate{limit: int64(cfg.MaxQueueBytes)},
	}, nil
}

// Received returns the number of spans accepted since start.
func (r *Receiver) Received() int64 { return r.received.Load() }

// Start starts the workers and, when their addresses are set, the gRPC and
// HTTP servers. It fails when an address cannot be bound.
func (r *Receiver) Start() error {
	tlsCfg, err := r.cfg.TLS.ServerConfig("receiver.tls", r.logger)
	if err != nil {
		return err
	}
	for i := 0; i < r.cfg.Workers; i++ {
		r.workers.Add(1)
		go r.work()
	}
	if r.cfg.GRPCAddr != "" {
		lis, err := net.Listen("tcp", r.cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("OTLP/gRPC cannot listen on %s (otlp_grpc): %w", r.cfg.GRPCAddr, err)
		}
		r.grpcLis = lis
		r.grpcServer = r.newGRPCServer(tlsCfg)
		go func() { _ = r.grpcServer.Serve(lis) }()
		r.logger.Info("OTLP/gRPC listening", "addr", lis.Addr().String())
	}
	if r.cfg.HTTPAddr != "" {
		lis, err := net.Listen("tcp", r.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("OTLP/HTTP cannot listen on %s (otlp_http): %w", r.cfg.HTTPAddr, err)
		}
		r.httpLis = lis
		mux := http.NewServeMux()
		mux.Handle("/v1/traces", r.HTTPHandler())
		r.httpServer = &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: r.cfg.HTTPReadHeaderTimeout,
			ReadTimeout:       r.cfg.HTTPReadTimeout,
			WriteTimeout:      r.cfg.HTTPWriteTimeout,
			IdleTimeout:       r.cfg.HTTPIdleTimeout,
			TLSConfig:         tlsCfg,
		}
		if tlsCfg != nil {
			go func() { _ = r.httpServer.ServeTLS(lis, "", "") }()
		} else {
			go func() { _ = r.httpServer.Serve(lis) }()
		}
		r.logger.Info("OTLP/HTTP listening", "addr", lis.Addr().String(), "path", "/v1/traces")
	}
	return nil
}

// GRPCAddr returns the bound gRPC address, or "" when not listening.
func (r *Receiver) GRPCAddr() string { return addr(r.grpcLis) }

// HTTPAddr returns the bound HTTP address, or "" when not listening.
func (r *Receiver) HTTPAddr() string { return addr(r.httpLis) }

func addr(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Stop stops the servers, then processes everything queued.
func (r *Receiver) Stop(ctx context.Context) {
	if r.grpcServer != nil {
		done := make(chan struct{})
		go func() { r.grpcServer.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			r.grpcServer.Stop()
		}
	}
	if r.httpServer != nil {
		_ = r.httpServer.Shutdown(ctx)
	}
	r.closeMu.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	r.closeMu.Unlock()
	r.workers.Wait()
}

func (r *Receiver) work() {
	defer r.workers.Done()
	for j := range r.queue {
		r.consumer.Consume(j.tenant, j.batch)
		j.batch.Release() // gives its memory back to the gate
		queueRequests.Dec()
	}
}

// Refusal is an error that chooses the sender's answer: the limits'
// errors, and Admit's when it refuses a tenant for a reason the sender can
// act on (Admit's other errors are 503 / Unavailable).
type Refusal interface {
	error
	HTTPStatus() int
	// RetryAfterHeader is the Retry-After value, "" when retrying cannot
	// help.
	RetryAfterHeader() string
	GRPCStatus() *status.Status
}

// errQueueFull and errShuttingDown are retryable refusals.
var (
	errQueueFull    = errors.New("the processing queue is full; retry later")
	errShuttingDown = errors.New("the receiver is shutting down; retry against another instance or later")
	errNotAdmitted  = errors.New("the tenant cannot be served")
)

// accept validates the batch's spans, queues what is this instance's and
// hands the rest to the instances that own their traces: the parts of pl,
// made before b was decoded (planRaw), or of b (planBatch). It returns the
// number of spans refused with the reason to tell the sender. It takes
// ownership of b unless it returns an error, and always of pl.
//
// The per-tenant limits apply to what this instance processes: the owner
// of a forwarded part applies them to it.
func (r *Receiver) accept(o origin, tenant, protocol string, b *otlp.Batch, pl *plan) (rejected int, reason string, err error) {
	drop := func() {
		if pl != nil {
			r.release(pl)
			pl = nil
		}
	}
	if b.SpanCount == 0 && pl == nil {
		b.Release()
		return 0, "", nil
	}
	rt, err := r.routerOf(o)
	if err != nil {
		drop()
		why := ReasonJoining
		if errors.Is(err, errShuttingDown) {
			why = ReasonShuttingDown
		}
		r.refuse("", protocol, why, b.SpanCount)
		return 0, "", err
	}
	if o.forwarded {
		protocol = protocolForwarded
	}
	// Before anything is counted under the tenant's name, and not counted
	// under it when refused: series per tenant stay bounded by max_tenants
	// whatever ids senders make up.
	if err := r.consumer.Admit(tenant); err != nil {
		drop()
		why := ReasonNotAdmitted
		var rr interface{ RefusalReason() string }
		if errors.As(err, &rr) {
			why = rr.RefusalReason()
		}
		r.refuse("", protocol, why, b.SpanCount)
		return 0, "", fmt.Errorf("%w: %w", errNotAdmitted, err)
	}
	rejected, reason = r.validate(tenant, protocol, b)
	if pl == nil && rt != nil && b.SpanCount > 0 {
		if pl, err = r.planBatch(rt, tenant, protocol, b); err != nil {
			return 0, "", err
		}
	}
	// After Admit, so that the limits' per-tenant state is bounded by
	// max_tenants. On error b is unchanged and still the caller's.
	if r.access.Limits != nil && b.SpanCount > 0 {
		n := b.SpanCount
		limited, why, err := r.access.Limits.Apply(tenant, b)
		if err != nil {
			drop()
			var le *limits.Error
			errors.As(err, &le)
			r.refuse(tenant, protocol, le.Reason, n)
			return 0, "", err
		}
		if limited > 0 {
			spansRejected.WithLabelValues(tenant, protocol, limits.ReasonTooManyAttributes).Add(float64(limited))
			rejected, reason = rejected+limited, limits.JoinReasons(reason, why)
		}
	}
	if pl != nil {
		more, why, err := r.deliver(pl, o, tenant, protocol, b)
		if err != nil {
			return 0, "", err
		}
		return rejected + more, limits.JoinReasons(reason, why), nil
	}
	if b.SpanCount == 0 {
		b.Release()
		return rejected, reason, nil
	}
	return rejected, reason, r.enqueue(tenant, protocol, b)
}

// enqueue queues b for the workers, which take ownership of it, or
// returns the retryable refusal and leaves b to the caller.
func (r *Receiver) enqueue(tenant, protocol string, b *otlp.Batch) error {
	r.closeMu.RLock()
	defer r.closeMu.RUnlock()
	if r.closed {
		r.refuse(tenant, protocol, ReasonShuttingDown, b.SpanCount)
		return errShuttingDown
	}
	n := b.SpanCount
	select {
	case r.queue <- job{tenant: tenant, batch: b}:
	default:
		r.refuse(tenant, protocol, ReasonQueueFull, n)
		return errQueueFull
	}
	queueRequests.Inc()
	r.received.Add(int64(n))
	spansReceived.WithLabelValues(tenant, protocol).Add(float64(n))
	return nil
}

func (r *Receiver) refuse(tenant, protocol, reason string, spans int) {
	requestsRejected.WithLabelValues(protocol, reason).Inc()
	spansRejected.WithLabelValues(tenant, protocol, reason).Add(float64(spans))
}

// spanChecks are the reasons validate refuses spans for, in the order the
// partial_success message lists them.
var spanChecks = [...]struct{ reason, what string }{
	{ReasonInvalidUTF8, "with text that is not UTF-8"},
	{ReasonInvalidID, "with invalid ids"},
	{ReasonInvalidEnum, "with an enum name that OTLP/JSON does not define"},
	{ReasonNoStartTime, "without a start time"},
	{ReasonOutsideSlack, "ending more than %s from now"},
}

const (
	checkUTF8 = iota
	checkID
	checkEnum
	checkStart
	checkSlack
)

// validate removes the spans that cannot be processed, counts them per
// reason and describes them for partial_success: spans the decoder flagged
// (otlp.Fault), malformed ids, no start time (a 0 start would be a latency
// of 57 years), and end times outside the ingestion slack.
//
// A span that ends before it starts is kept, with a latency of 0, as
// Tempo's generator does (spanmetrics: "Spans with negative latency are
// treated as zero"; servicegraphs clamps the same way) and the Collector's
// spanmetrics connector too: its call and its error still count, and a
// sender moving from Tempo does not see spans refused that Tempo took.
func (r *Receiver) validate(tenant, protocol string, b *otlp.Batch) (int, string) {
	now := r.now()
	lo := uint64(now.Add(-r.cfg.IngestionSlack).UnixNano())
	hi := uint64(now.Add(r.cfg.IngestionSlack).UnixNano())
	var n [len(spanChecks)]int
	var first [len(spanChecks)]string
	b.Filter(func(_ *otlp.ResourceSpans, s *otlp.Span) bool {
		var check int
		fault, why := s.Fault()
		switch {
		case fault == otlp.FaultUTF8:
			check = checkUTF8
		case fault == otlp.FaultID:
			check = checkID
		case fault == otlp.FaultEnum:
			check = checkEnum
		case s.IDError() != "":
			check, why = checkID, s.IDError()
		case s.Start == 0:
			check, why = checkStart, "start_time_unix_nano is 0"
		case s.End < lo || s.End > hi:
			check, why = checkSlack, "ingestion_slack"
		default:
			return true
		}
		if n[check] == 0 {
			first[check] = why
		}
		n[check]++
		return false
	})
	total := 0
	var parts []string
	for i, c := range spanChecks {
		if n[i] == 0 {
			continue
		}
		total += n[i]
		spansRejected.WithLabelValues(tenant, protocol, c.reason).Add(float64(n[i]))
		what := c.what
		if i == checkSlack {
			what = fmt.Sprintf(what, r.cfg.IngestionSlack)
		}
		parts = append(parts, fmt.Sprintf("%d %s (%s)", n[i], what, first[i]))
	}
	return total, strings.Join(parts, "; ")
}
