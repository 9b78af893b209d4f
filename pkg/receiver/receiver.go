// Package receiver accepts OTLP trace exports over gRPC and HTTP, checks
// and decodes them, and hands the batches to a Consumer through a bounded
// queue.
//
// A request is answered once its spans are queued, not once they are
// processed; the queue is bounded in bytes, and when it is full the sender
// gets HTTP 429 / gRPC Unavailable, which OTLP exporters retry. Spans that
// are answered with success are never dropped afterwards: Stop drains the
// queue.
package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/limits"
	"github.com/spangraph/spangraph/pkg/otlp"
)

// Consumer processes decoded batches. It must not keep b, or strings read
// from it, after it returns.
type Consumer interface {
	// Admit is called before a tenant's batch is accepted; an error
	// refuses the request (503 / Unavailable) with its message.
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
	// MaxQueueBytes caps the decoded requests waiting to be processed.
	MaxQueueBytes int `yaml:"max_queue_bytes"`
	// Workers is the number of processing goroutines; 0 means GOMAXPROCS.
	Workers int `yaml:"workers"`
	// IngestionSlack: spans that end further than this from now are
	// refused, since they would distort rates.
	IngestionSlack time.Duration `yaml:"ingestion_slack"`
	// TLS of both OTLP listeners; empty cert_file means plain text.
	TLS auth.TLSConfig `yaml:"tls"`

	// Auth decides the tenant of a request (nil: X-Scope-OrgID, as
	// before); Limits applies the per-tenant limits (nil: none). Both are
	// built by the engine from the top-level auth: and limits: sections.
	Auth   *auth.Authenticator `yaml:"-"`
	Limits *limits.Limits      `yaml:"-"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxRequestBytes: 16 << 20,
		MaxQueueBytes:   256 << 20,
		IngestionSlack:  30 * time.Second,
	}
}

// Validate checks the config; errors name the key under prefix.
func (c *Config) Validate(prefix string) error {
	switch {
	case c.MaxRequestBytes <= 0:
		return fmt.Errorf("%s.max_request_bytes: must be positive, got %d", prefix, c.MaxRequestBytes)
	case c.MaxQueueBytes < c.MaxRequestBytes:
		return fmt.Errorf("%s.max_queue_bytes: must be at least max_request_bytes (%d), got %d", prefix, c.MaxRequestBytes, c.MaxQueueBytes)
	case c.Workers < 0:
		return fmt.Errorf("%s.workers: must not be negative, got %d", prefix, c.Workers)
	case c.IngestionSlack <= 0:
		return fmt.Errorf("%s.ingestion_slack: must be positive, got %s", prefix, c.IngestionSlack)
	}
	return c.TLS.Validate(prefix + ".tls")
}

// Reasons for refusing requests and spans, as self-metric label values.
const (
	ReasonMalformed      = "malformed"
	ReasonMediaType      = "unsupported_media_type"
	ReasonTooLarge       = "too_large"
	ReasonQueueFull      = "queue_full"
	ReasonBadTenant      = "bad_tenant"
	ReasonBadMethod      = "bad_method"
	ReasonInvalidID      = "invalid_id"
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
		Help: "Bytes of decoded requests waiting to be processed.",
	})
	queueRequests = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spangraph_receiver_queue_requests",
		Help: "Requests waiting to be processed.",
	})
)

type job struct {
	tenant string
	batch  *otlp.Batch
	bytes  int64
}

// Receiver is the OTLP intake.
type Receiver struct {
	cfg      Config
	consumer Consumer
	logger   *slog.Logger
	now      func() time.Time

	queue   chan job
	bytes   atomic.Int64
	closeMu sync.RWMutex
	closed  bool
	workers sync.WaitGroup

	grpcServer *grpc.Server
	httpServer *http.Server
	grpcLis    net.Listener
	httpLis    net.Listener

	received atomic.Int64 // spans accepted, for health
}

// New returns a receiver that feeds consumer. Call Start to listen.
func New(cfg Config, consumer Consumer, logger *slog.Logger) (*Receiver, error) {
	if err := cfg.Validate("receiver"); err != nil {
		return nil, err
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	return &Receiver{
		cfg:      cfg,
		consumer: consumer,
		logger:   logger,
		now:      time.Now,
		queue:    make(chan job, defaultQueueCapacity),
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
		r.httpServer = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsCfg}
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
		j.batch.Release()
		r.bytes.Add(-j.bytes)
		queueBytes.Sub(float64(j.bytes))
		queueRequests.Dec()
	}
}

// errQueueFull and errShuttingDown are retryable refusals.
var (
	errQueueFull    = errors.New("the processing queue is full; retry later")
	errShuttingDown = errors.New("the receiver is shutting down; retry against another instance or later")
	errNotAdmitted  = errors.New("the tenant cannot be served")
)

// accept validates the batch's spans, queues what is left and returns the
// number of spans refused with the reason to tell the sender. It takes
// ownership of b unless it returns an error.
func (r *Receiver) accept(tenant, protocol string, b *otlp.Batch) (rejected int, reason string, err error) {
	rejected, reason = r.validate(tenant, protocol, b)
	if b.SpanCount == 0 {
		b.Release()
		return rejected, reason, nil
	}
	if err := r.consumer.Admit(tenant); err != nil {
		r.refuse(tenant, protocol, ReasonNotAdmitted, b.SpanCount)
		return 0, "", fmt.Errorf("%w: %v", errNotAdmitted, err)
	}
	// After Admit, so that the limits' per-tenant state is bounded by
	// max_tenants. On error b is unchanged and still the caller's.
	if r.cfg.Limits != nil {
		n := b.SpanCount
		limited, why, err := r.cfg.Limits.Apply(tenant, b)
		if err != nil {
			var le *limits.Error
			errors.As(err, &le)
			r.refuse(tenant, protocol, le.Reason, n)
			return 0, "", err
		}
		if limited > 0 {
			spansRejected.WithLabelValues(tenant, protocol, limits.ReasonTooManyAttributes).Add(float64(limited))
			rejected, reason = rejected+limited, limits.JoinReasons(reason, why)
		}
		if b.SpanCount == 0 {
			b.Release()
			return rejected, reason, nil
		}
	}
	cost := batchCost(b)
	if r.bytes.Add(cost) > int64(r.cfg.MaxQueueBytes) {
		r.bytes.Add(-cost)
		r.refuse(tenant, protocol, ReasonQueueFull, b.SpanCount)
		return 0, "", errQueueFull
	}
	r.closeMu.RLock()
	defer r.closeMu.RUnlock()
	if r.closed {
		r.bytes.Add(-cost)
		r.refuse(tenant, protocol, ReasonShuttingDown, b.SpanCount)
		return 0, "", errShuttingDown
	}
	n := b.SpanCount
	select {
	case r.queue <- job{tenant: tenant, batch: b, bytes: cost}:
	default:
		r.bytes.Add(-cost)
		r.refuse(tenant, protocol, ReasonQueueFull, n)
		return 0, "", errQueueFull
	}
	queueBytes.Add(float64(cost))
	queueRequests.Inc()
	r.received.Add(int64(n))
	spansReceived.WithLabelValues(tenant, protocol).Add(float64(n))
	return rejected, reason, nil
}

func (r *Receiver) refuse(tenant, protocol, reason string, spans int) {
	requestsRejected.WithLabelValues(protocol, reason).Inc()
	spansRejected.WithLabelValues(tenant, protocol, reason).Add(float64(spans))
}

// batchCost estimates the memory a queued batch holds.
func batchCost(b *otlp.Batch) int64 {
	const perSpan = 256 // decoded span plus a few attributes
	return int64(cap(b.Buffer())) + int64(b.SpanCount)*perSpan
}

// validate removes spans with malformed ids or end times outside the
// ingestion slack, counts them and describes them for partial_success.
func (r *Receiver) validate(tenant, protocol string, b *otlp.Batch) (int, string) {
	now := r.now()
	lo := uint64(now.Add(-r.cfg.IngestionSlack).UnixNano())
	hi := uint64(now.Add(r.cfg.IngestionSlack).UnixNano())
	badID, outside := 0, 0
	firstIDErr := ""
	b.Filter(func(_ *otlp.ResourceSpans, s *otlp.Span) bool {
		if e := s.IDError(); e != "" {
			if firstIDErr == "" {
				firstIDErr = e
			}
			badID++
			return false
		}
		if s.End < lo || s.End > hi {
			outside++
			return false
		}
		return true
	})
	if badID == 0 && outside == 0 {
		return 0, ""
	}
	var parts []string
	if badID > 0 {
		spansRejected.WithLabelValues(tenant, protocol, ReasonInvalidID).Add(float64(badID))
		parts = append(parts, fmt.Sprintf("%d with invalid ids (%s)", badID, firstIDErr))
	}
	if outside > 0 {
		spansRejected.WithLabelValues(tenant, protocol, ReasonOutsideSlack).Add(float64(outside))
		parts = append(parts, fmt.Sprintf("%d ending more than %s from now (ingestion_slack)", outside, r.cfg.IngestionSlack))
	}
	return badID + outside, strings.Join(parts, "; ")
}
