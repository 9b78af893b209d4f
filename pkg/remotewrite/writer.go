// Package remotewrite sends every series a tenant stores to remote-write
// endpoints (Prometheus, Mimir, …) with Prometheus' own queue manager,
// which tails the tenant TSDB's WAL (sharding, batching, retries with
// backoff, resharding, remote write 1.0 and 2.0).
//
// Prometheus' WAL watcher always starts at time.Now(), so on its own it
// skips everything collected while Spangraph was down or restarting with
// the receiver unreachable. The Writer closes that gap: it persists, per
// endpoint, how far the endpoint has got (marker.go); on start it first
// catches up from the TSDB (catchup.go), and switches to the queue under the
// engine's collection lock, so that no collection falls between the two and
// none reaches the endpoint out of order.
package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"

	"github.com/spangraph/spangraph/pkg/store"
)

// TSDB is what the Writer needs of a tenant's store (*store.Store).
type TSDB interface {
	storage.Queryable
	// WALDir is <tsdb dir>/wal, which the queue tails.
	WALDir() string
}

// Options are settings that are not per endpoint.
type Options struct {
	// ExternalLabels are added to every series sent that lacks them, as
	// Prometheus' global external_labels.
	ExternalLabels labels.Labels
	// FlushDeadline bounds how long Stop waits for queued samples
	// (default 10 s). What is not flushed is not lost: the marker stays
	// behind it and the next start catches it up.
	FlushDeadline time.Duration
}

const (
	defaultFlushDeadline = 10 * time.Second
	// markerInterval is how often markers are read from the queues and
	// saved: the most a crash (no Stop) re-sends.
	markerInterval = 2 * time.Second
	// finalRoundTimeout bounds the catch-up round run under the collection
	// lock, so that a receiver failing at that moment delays one
	// collection, not all of them.
	finalRoundTimeout = 10 * time.Second
	// shortRound: once a catch-up round takes less than this, what is left
	// is small enough to send under the collection lock.
	shortRound = time.Second
	// watcherStartTimeout bounds the wait for a new queue's WAL watcher to
	// take its start time.
	watcherStartTimeout = time.Second
)

// EndpointStatus is one endpoint's state, for health checks and
// self-metrics.
type EndpointStatus struct {
	Name, URL string
	// SamplesSent were accepted by the endpoint (queue and catch-up).
	SamplesSent float64
	// SamplesFailed were refused for good (4xx other than 429) and dropped.
	SamplesFailed float64
	// SamplesDropped were dropped by write_relabel_configs or for age.
	SamplesDropped float64
	// SamplesPending wait in the queue's shards.
	SamplesPending float64
	// HighestSent: the endpoint has been offered everything before this
	// (to the second: Prometheus' queue reports whole seconds).
	HighestSent time.Time
	// Lag is the newest collection minus HighestSent.
	Lag time.Duration
	// CatchingUp is true until the endpoint ships live from the queue.
	CatchingUp bool
	// LastError is the last send error, cleared once sending succeeds again.
	LastError string
}

// Writer ships one tenant's series to its endpoints.
type Writer struct {
	dir           string
	db            storage.Queryable
	lock          sync.Locker
	logger        *slog.Logger
	global        config.GlobalConfig
	flushDeadline time.Duration
	eps           []*endpoint

	tee    *teeRegisterer
	public prometheus.Registerer
	self   *selfMetrics
	ws     *remote.WriteStorage

	newest atomic.Int64 // unix ms of the last Notify: the newest collection

	liveMu sync.Mutex
	live   []*config.RemoteWriteConfig
	closed bool

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

type catchupStats struct{ sent, failed, dropped, refused float64 }

type endpoint struct {
	cfg        *config.RemoteWriteConfig // this tenant's copy
	name, url  string
	markerPath string
	// client sends the catch-up, with the endpoint's settings but always
	// remote write 1.0 (see catchup.go).
	client remote.WriteClient

	mu         sync.Mutex
	resumeFrom int64 // ms, see marker; 0 until known
	dirty      bool  // resumeFrom not saved yet
	catchingUp bool
	lastErr    string
	errSeen    bool       // an error since the last refresh
	queue      queueStats // last read from the queue
	delivered  float64    // queue samples delivered at the last refresh
	catchup    catchupStats
}

// New builds the Writer of one tenant. db is the tenant's store;
// collectLock is held by the engine around each collection, which it stamps
// with time.Now() taken after acquiring it. reg (may be nil) receives
// Prometheus' remote-storage metrics and Spangraph's own, labelled with the
// tenant.
func New(cfgs Config, tenant string, db TSDB, collectLock sync.Locker, logger *slog.Logger, reg prometheus.Registerer, opts Options) (*Writer, error) {
	if err := cfgs.Validate("remote_write"); err != nil {
		return nil, err
	}
	logger = logger.With("component", "remotewrite", "tenant", tenant)
	w := &Writer{
		dir:           filepath.Dir(db.WALDir()),
		db:            db,
		lock:          collectLock,
		logger:        logger,
		global:        config.DefaultGlobalConfig,
		flushDeadline: opts.FlushDeadline,
	}
	w.global.ExternalLabels = opts.ExternalLabels
	if w.flushDeadline <= 0 {
		w.flushDeadline = defaultFlushDeadline
	}
	for _, rw := range cfgs {
		c := tenantConfig(rw, tenant)
		client, err := remote.NewWriteClient(c.Name, &remote.ClientConfig{
			URL:              c.URL,
			Timeout:          c.RemoteTimeout,
			HTTPClientConfig: c.HTTPClientConfig,
			SigV4Config:      c.SigV4Config,
			AzureADConfig:    c.AzureADConfig,
			GoogleIAMConfig:  c.GoogleIAMConfig,
			Headers:          c.Headers,
			RetryOnRateLimit: c.QueueConfig.RetryOnRateLimit,
			RoundRobinDNS:    c.RoundRobinDNS,
			WriteProtoMsg:    remoteapi.WriteV1MessageType,
		})
		if err != nil {
			// Say, a tls_config file that cannot be read.
			return nil, fmt.Errorf("remote_write %q: %w", c.Name, err)
		}
		w.eps = append(w.eps, &endpoint{
			cfg:        c,
			name:       c.Name,
			url:        c.URL.Redacted(),
			markerPath: markerPath(w.dir, c.Name),
			client:     client,
			catchingUp: true,
		})
	}
	if reg != nil {
		w.public = prometheus.WrapRegistererWith(prometheus.Labels{"tenant": tenant}, reg)
	}
	w.tee = newTee(w.public)
	w.tee.beforeUnregister = w.refresh
	w.self = newSelfMetrics(w)
	if w.public != nil {
		if err := w.public.Register(w.self); err != nil {
			return nil, fmt.Errorf("remote write metrics of tenant %q: %w", tenant, err)
		}
	}
	tap := &errorTap{inner: logger.Handler(), onError: w.onQueueError}
	w.ws = remote.NewWriteStorage(slog.New(tap), w.tee, w.dir, w.flushDeadline, nil, false)
	return w, nil
}

// tenantConfig copies an endpoint's config for one tenant.
func tenantConfig(rw *config.RemoteWriteConfig, tenant string) *config.RemoteWriteConfig {
	c := *rw
	c.Name = endpointName(rw)
	c.Headers = maps.Clone(rw.Headers)
	if tenant != store.DefaultTenant {
		set := false
		for h := range c.Headers {
			set = set || strings.EqualFold(h, "X-Scope-OrgID")
		}
		if !set {
			if c.Headers == nil {
				c.Headers = map[string]string{}
			}
			c.Headers["X-Scope-OrgID"] = tenant
		}
	}
	// Prometheus takes metadata from its scrape manager, which Spangraph
	// does not have (the metadata watcher would wait for it forever).
	c.MetadataConfig.Send = false
	return &c
}

// Start loads the markers and, in the background, catches every endpoint
// up and switches it to live shipping. It never blocks ingestion: the
// collection lock is only taken for the short final round.
func (w *Writer) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	for _, ep := range w.eps {
		resume, ok := w.loadMarker(ep)
		if ep.cfg.ProtobufMessage == remoteapi.WriteV2MessageType {
			w.logger.Info("endpoint ships remote write 2.0 live; a catch-up after a restart is sent as remote write 1.0",
				"remote_name", ep.name, "url", ep.url)
		}
		w.wg.Add(2)
		go func() {
			defer w.wg.Done()
			w.probe(ctx, ep)
		}()
		go func() {
			defer w.wg.Done()
			if ok {
				w.catchUp(ctx, ep, resume)
			} else {
				w.goLive(ctx, ep)
			}
		}()
	}
	w.wg.Add(1)
	go w.maintain(ctx)
}

func (w *Writer) loadMarker(ep *endpoint) (int64, bool) {
	m, ok, err := loadMarker(ep.markerPath)
	switch {
	case err != nil:
		w.logger.Error("unreadable remote write marker; shipping live without catching up",
			"remote_name", ep.name, "err", err)
		return 0, false
	case !ok:
		w.logger.Info("new remote write endpoint: shipping from now on", "remote_name", ep.name, "url", ep.url)
		return 0, false
	case m.URL != ep.url:
		w.logger.Info("remote write endpoint changed URL: shipping from now on", "remote_name", ep.name,
			"url", ep.url, "previous_url", m.URL)
		return 0, false
	}
	ep.mu.Lock()
	ep.resumeFrom = m.ResumeFromMs
	ep.mu.Unlock()
	return m.ResumeFromMs, true
}

// probe sends an empty write request, so that a wrong URL, TLS setting or
// credential shows at start rather than at the first collection.
func (w *Writer) probe(ctx context.Context, ep *endpoint) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(ep.cfg.RemoteTimeout))
	defer cancel()
	_, err := ep.client.Store(ctx, snappy.Encode(nil, nil), 0)
	switch {
	case err == nil:
		w.logger.Info("remote write endpoint accepts writes", "remote_name", ep.name, "url", ep.url)
		return
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return // stopping
	case isRecoverable(err):
		w.logger.Warn("remote write endpoint unreachable for now; samples wait in the store and are retried",
			"remote_name", ep.name, "url", ep.url, "err", err)
	default:
		w.logger.Error("remote write endpoint refuses writes (check url, credentials, headers, protobuf_message); what it refuses is dropped and counted",
			"remote_name", ep.name, "url", ep.url, "err", err)
	}
	w.setError(ep, "probe: "+err.Error())
}

func isRecoverable(err error) bool {
	var rec remote.RecoverableError
	return errors.As(err, &rec)
}

// goLive starts an endpoint that has no marker (a new endpoint): it ships
// what is collected from now on.
func (w *Writer) goLive(ctx context.Context, ep *endpoint) {
	w.lock.Lock()
	now := time.Now().UnixMilli()
	err := w.applyLive(ctx, ep)
	w.lock.Unlock()
	if err != nil {
		w.logger.Error("remote write queue not started", "remote_name", ep.name, "err", err)
		w.setError(ep, err.Error())
		return
	}
	ep.mu.Lock()
	ep.catchingUp = false
	ep.mu.Unlock()
	// The first marker: everything collected from here on is this
	// endpoint's, even if it never acknowledges anything before a restart.
	w.advance(ep, now)
	w.persist()
}

// applyLive adds the endpoint to the queues and waits until its WAL watcher
// has taken its start time. The caller holds the collection lock, so the
// next collection is stamped after that start time and is shipped by the
// queue, and every earlier one was caught up.
func (w *Writer) applyLive(ctx context.Context, ep *endpoint) error {
	w.liveMu.Lock()
	if w.closed {
		w.liveMu.Unlock()
		return errors.New("writer stopped")
	}
	live := append(w.live[:len(w.live):len(w.live)], ep.cfg)
	// ApplyConfig keeps the queues whose config did not change, so adding
	// one endpoint does not disturb the others.
	err := w.ws.ApplyConfig(&config.Config{GlobalConfig: w.global, RemoteWriteConfigs: live})
	if err == nil {
		w.live = live
	}
	w.liveMu.Unlock()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(watcherStartTimeout)
	for time.Now().Before(deadline) {
		// The watcher sets its start time first thing, then reads the
		// WAL: records read means the start time is set. An empty WAL
		// has no records to read, hence the deadline.
		if _, read := gatherQueues(w.tee.private); read[ep.name] > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
	// The watcher keeps samples strictly after its start time (ms): make
	// sure the next collection's stamp is later.
	time.Sleep(2 * time.Millisecond)
	w.logger.Info("remote write shipping live", "remote_name", ep.name, "url", ep.url)
	return nil
}

// Notify tells the queues that a collection was committed, so that they
// read the WAL at once rather than at their next poll.
func (w *Writer) Notify() {
	w.newest.Store(time.Now().UnixMilli())
	w.ws.Notify()
}

// maintain reads the queues' progress into the markers and saves them.
func (w *Writer) maintain(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(markerInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.refresh()
			w.persist()
		}
	}
}

// refresh reads each live queue's metrics: its highest sent timestamp moves
// the marker (the queue sets it once a batch is done with: accepted, or
// refused for good, never while it is still being retried), and delivery
// without a new error clears LastError.
func (w *Writer) refresh() {
	stats, _ := gatherQueues(w.tee.private)
	for _, ep := range w.eps {
		s := stats[ep.name]
		if s == nil {
			continue
		}
		ep.mu.Lock()
		ep.queue = *s
		delivered := s.samplesTotal - s.retried - s.failed
		if delivered > ep.delivered && !ep.errSeen {
			ep.lastErr = ""
		}
		ep.delivered = delivered
		ep.errSeen = false
		ep.mu.Unlock()
		w.advance(ep, int64(s.highestSent)*1000)
	}
}

// advance moves an endpoint's marker forward (never back).
func (w *Writer) advance(ep *endpoint, resumeFrom int64) {
	ep.mu.Lock()
	if resumeFrom > ep.resumeFrom {
		ep.resumeFrom = resumeFrom
		ep.dirty = true
	}
	ep.mu.Unlock()
}

func (w *Writer) persist() {
	for _, ep := range w.eps {
		ep.mu.Lock()
		m := marker{URL: ep.url, ResumeFromMs: ep.resumeFrom, UpdatedAt: time.Now().UTC()}
		dirty := ep.dirty
		ep.dirty = false
		ep.mu.Unlock()
		if !dirty {
			continue
		}
		if err := saveMarker(ep.markerPath, m); err != nil {
			w.logger.Error("saving remote write marker; a restart may re-send or miss samples",
				"remote_name", ep.name, "path", ep.markerPath, "err", err)
			ep.mu.Lock()
			ep.dirty = true
			ep.mu.Unlock()
		}
	}
}

func (w *Writer) setError(ep *endpoint, msg string) {
	ep.mu.Lock()
	ep.lastErr = msg
	ep.errSeen = true
	ep.mu.Unlock()
}

func (w *Writer) onQueueError(queue, msg string) {
	for _, ep := range w.eps {
		if ep.name == queue {
			w.setError(ep, msg)
		}
	}
}

// Stop ends the catch-up, flushes the queues within the flush deadline and
// saves the markers.
func (w *Writer) Stop() {
	w.stopOnce.Do(func() {
		if w.cancel != nil {
			w.cancel()
		}
		w.wg.Wait()
		w.liveMu.Lock()
		w.closed = true
		w.liveMu.Unlock()
		// Close flushes, then each queue unregisters its metrics; the tee
		// reads the final highest sent timestamp just before.
		if err := w.ws.Close(); err != nil {
			w.logger.Error("closing remote write queues", "err", err)
		}
		w.persist()
		if w.public != nil {
			w.public.Unregister(w.self)
		}
	})
}

// Status returns each endpoint's state.
func (w *Writer) Status() []EndpointStatus {
	stats, _ := gatherQueues(w.tee.private)
	out := make([]EndpointStatus, 0, len(w.eps))
	for _, ep := range w.eps {
		out = append(out, w.endpointStatus(ep, stats))
	}
	return out
}

func (w *Writer) endpointStatus(ep *endpoint, stats map[string]*queueStats) EndpointStatus {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	q := ep.queue
	if s := stats[ep.name]; s != nil {
		q = *s
	}
	st := EndpointStatus{
		Name:           ep.name,
		URL:            ep.url,
		SamplesSent:    q.samplesTotal - q.retried - q.failed + ep.catchup.sent,
		SamplesFailed:  q.failed + ep.catchup.failed,
		SamplesDropped: q.dropped + ep.catchup.dropped,
		SamplesPending: q.pending,
		CatchingUp:     ep.catchingUp,
		LastError:      ep.lastErr,
	}
	highest := max(ep.resumeFrom, int64(q.highestSent)*1000)
	if highest > 0 {
		st.HighestSent = time.UnixMilli(highest)
		if newest := w.newest.Load(); newest > highest {
			st.Lag = time.Duration(newest-highest) * time.Millisecond
		}
	}
	return st
}
