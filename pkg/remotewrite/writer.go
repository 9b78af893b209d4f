// Package remotewrite sends every series a tenant stores to remote-write
// endpoints (Prometheus, Mimir, …) with Prometheus' own queue manager,
// which tails the tenant TSDB's WAL (sharding, batching, retries with
// backoff, resharding, remote write 1.0 and 2.0).
//
// Prometheus' WAL watcher always starts at time.Now(), so on its own it
// skips everything collected while Spangraph was down or restarting with
// the receiver unreachable. The Writer closes that gap: it persists, per
// endpoint, a marker before which the endpoint has acknowledged every
// sample (marker.go); on start it first catches up from the TSDB
// (catchup.go), and switches to the queue under the engine's collection
// lock, so that no collection falls between the two and none reaches the
// endpoint out of order.
//
// The marker of a live queue. The queue's shards send independently, and
// its only progress figure, the highest timestamp sent, is a maximum over
// them: a shard retrying an old batch does not hold it back, so it cannot
// be the marker. The queue does count the samples it holds (pending: from
// enqueue until the batch is done with, accepted or refused for good). The
// WAL holds collections in stamp order and the watcher enqueues in WAL
// order, so when a read of pending that follows a read of the highest sent
// second H finds zero, every sample stamped before H was enqueued before
// the one that set H, and is done with. The marker then moves to H (in ms,
// inclusive: the rest of second H is re-sent after a crash). Hard
// shutdowns of the shards (resharding, Stop) drop samples while counting
// them done, so around them the marker does not move, and when the queue
// reports having dropped samples the endpoint catches up again from its
// marker.
package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"path/filepath"
	"slices"
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

	"github.com/spangraph/spangraph/pkg/tenant"
)

// TSDB is what the Writer needs of a tenant's store (*store.Store).
type TSDB interface {
	storage.Queryable
	// WALDir is <tsdb dir>/wal, which the queue tails.
	WALDir() string
}

// Options configure a Writer.
type Options struct {
	// Lock is held by the engine around each collection, which it stamps
	// with time.Now() taken after acquiring it (required). The Writer
	// holds it at most LockBound at a time, whatever the endpoints do.
	Lock sync.Locker
	// Logger (nil: discard).
	Logger *slog.Logger
	// Registerer (may be nil) receives Prometheus' remote-storage metrics
	// and Spangraph's own, labelled with the tenant.
	Registerer prometheus.Registerer
	// ExternalLabels are added to every series sent that lacks them, as
	// Prometheus' global external_labels.
	ExternalLabels labels.Labels
	// FlushDeadline bounds how long Stop lets a working endpoint take
	// what is queued (default 10 s); a failing one gets stopGrace. What is
	// not flushed is not lost: the marker stays behind it and the next
	// start catches it up.
	FlushDeadline time.Duration
}

// LockBound is the longest the Writer holds the collection lock: the last
// catch-up round and the switch to the queue. A slow or failing endpoint
// makes the Writer let go and try again later, never hold on.
const LockBound = time.Second

const (
	defaultFlushDeadline = 10 * time.Second
	// markerInterval is how often markers are saved.
	markerInterval = 2 * time.Second
	// refreshInterval is how often the queues are read: the marker moves
	// only when a read finds nothing pending, so read often.
	refreshInterval = 250 * time.Millisecond
	// switchReserve is the part of LockBound kept for starting the queue
	// after the last catch-up round.
	switchReserve = 250 * time.Millisecond
	// shortRound: once a catch-up round takes less than this, what is left
	// is small enough to try under the collection lock.
	shortRound = time.Second
	// finalRetryMin and finalRetryMax space the attempts at a last round
	// that did not fit in LockBound, so that a slow endpoint does not take
	// the lock for a full LockBound at every collection.
	finalRetryMin = time.Second
	finalRetryMax = 30 * time.Second
	// stopGrace is how long Stop waits for queues that make no progress.
	stopGrace = time.Second
)

var errStopped = errors.New("writer stopped")

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
	// HighestSent is the marker: the endpoint has acknowledged every
	// sample before it (to the second while live: the queue reports whole
	// seconds).
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
	notify chan struct{}

	liveMu sync.Mutex
	live   []*config.RemoteWriteConfig
	closed bool

	persistMu sync.Mutex
	stopping  atomic.Bool // Stop began: hard shutdowns are expected
	final     atomic.Bool // markers saved for the last time

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
	// shipsFrom: see ShipsFrom. It only grows under the collection lock.
	shipsFrom atomic.Int64

	mu         sync.Mutex
	resumeFrom int64 // ms, see marker; 0 until known
	dirty      bool  // resumeFrom not saved yet
	catchingUp bool
	lastErr    string
	errSeen    bool       // an error since the last refresh
	queue      queueStats // last read from the queue
	delivered  float64    // queue samples delivered at the last refresh
	catchup    catchupStats
	// started is closed when the live queue's WAL watcher has taken its
	// start time (watcherStart, ms, an upper bound of it).
	started      chan struct{}
	watcherStart int64
	// lost: the live queue dropped samples it will never send; the marker
	// stays put and the endpoint catches up again.
	lost bool
	// frozenUntil: a reshard may hard-stop the shards until then.
	frozenUntil time.Time
}

// Open builds the Writer of one tenant. db is the tenant's store.
func Open(cfgs Config, tenant string, db TSDB, opts Options) (*Writer, error) {
	if err := cfgs.Validate("remote_write"); err != nil {
		return nil, err
	}
	if opts.Lock == nil {
		return nil, errors.New("remotewrite.Open: Options.Lock is required")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "remotewrite", "tenant", tenant)
	w := &Writer{
		dir:           filepath.Dir(db.WALDir()),
		db:            db,
		lock:          opts.Lock,
		logger:        logger,
		global:        config.DefaultGlobalConfig,
		flushDeadline: opts.FlushDeadline,
		notify:        make(chan struct{}, 1),
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
		ep := &endpoint{
			cfg:        c,
			name:       c.Name,
			url:        c.URL.Redacted(),
			markerPath: markerPath(w.dir, c.Name),
			client:     client,
			catchingUp: true,
		}
		ep.shipsFrom.Store(math.MaxInt64)
		w.eps = append(w.eps, ep)
	}
	if opts.Registerer != nil {
		w.public = prometheus.WrapRegistererWith(prometheus.Labels{"tenant": tenant}, opts.Registerer)
	}
	w.tee = newTee(w.public)
	w.self = newSelfMetrics(w)
	if w.public != nil {
		if err := w.public.Register(w.self); err != nil {
			return nil, fmt.Errorf("remote write metrics of tenant %q: %w", tenant, err)
		}
	}
	tap := &queueLogTap{inner: logger.Handler(), events: w}
	w.ws = remote.NewWriteStorage(slog.New(tap), w.tee, w.dir, w.flushDeadline, nil, false)
	return w, nil
}

// tenantConfig copies an endpoint's config for one tenant.
func tenantConfig(rw *config.RemoteWriteConfig, tenantID string) *config.RemoteWriteConfig {
	c := *rw
	c.Name = endpointName(rw)
	c.Headers = maps.Clone(rw.Headers)
	if tenantID != tenant.Default {
		set := false
		for h := range c.Headers {
			set = set || strings.EqualFold(h, "X-Scope-OrgID")
		}
		if !set {
			if c.Headers == nil {
				c.Headers = map[string]string{}
			}
			c.Headers["X-Scope-OrgID"] = tenantID
		}
	}
	// Prometheus takes metadata from its scrape manager, which Spangraph
	// does not have (the metadata watcher would wait for it forever).
	c.MetadataConfig.Send = false
	return &c
}

// Start loads the markers and, in the background, catches every endpoint
// up and switches it to live shipping. It never blocks ingestion: the
// collection lock is only taken for at most LockBound at a time.
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
	w.wg.Add(2)
	go w.maintain(ctx)
	go w.notifier(ctx)
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
	ep.shipsFrom.Store(m.ResumeFromMs)
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
	for retry := finalRetryMin; ; retry = min(2*retry, finalRetryMax) {
		w.lock.Lock()
		now := time.Now().UnixMilli()
		err := w.applyLive(ctx, ep, time.Now().Add(LockBound))
		w.lock.Unlock()
		if errors.Is(err, errStopped) {
			return
		}
		if err == nil {
			ep.mu.Lock()
			ep.catchingUp = false
			ep.mu.Unlock()
			// The first marker: everything collected from here on is this
			// endpoint's, even if it acknowledges nothing before a restart.
			w.advance(ep, now)
			w.persist()
			return
		}
		w.logger.Warn("remote write queue did not start; retrying", "remote_name", ep.name, "err", err, "retry_in", retry)
		w.setError(ep, err.Error())
		if !sleep(ctx, retry) {
			return
		}
	}
}

// applyLive adds the endpoint to the queues and waits, until deadline,
// for its WAL watcher to take its start time. The caller holds the
// collection lock, so the next collection is stamped after that start
// time and is shipped by the queue, and every earlier one was caught up.
// If the watcher does not start in time, the queue is removed again: it
// could skip the next collection.
func (w *Writer) applyLive(ctx context.Context, ep *endpoint, deadline time.Time) error {
	started := make(chan struct{})
	ep.mu.Lock()
	ep.started, ep.watcherStart, ep.lost = started, 0, false
	ep.mu.Unlock()
	w.liveMu.Lock()
	if w.closed {
		w.liveMu.Unlock()
		return errStopped
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
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-started:
	case <-ctx.Done():
		return errStopped // Stop closes the queue
	case <-timer.C:
		w.removeQueue(ep)
		return errors.New("the queue's WAL watcher did not start in time")
	}
	ep.mu.Lock()
	from := ep.watcherStart + 1
	ep.mu.Unlock()
	w.shipFrom(ep, from)
	w.logger.Info("remote write shipping live", "remote_name", ep.name, "url", ep.url)
	return nil
}

// shipFrom sets the endpoint's ShipsFrom; the caller holds the collection
// lock. It returns once the clock has passed it, so that the next
// collection's stamp is later and leaves room for a leading zero.
func (w *Writer) shipFrom(ep *endpoint, from int64) {
	ep.shipsFrom.Store(from)
	for time.Now().UnixMilli() <= from {
		time.Sleep(100 * time.Microsecond)
	}
}

// removeQueue stops the endpoint's queue (flushing it within the flush
// deadline).
func (w *Writer) removeQueue(ep *endpoint) {
	w.liveMu.Lock()
	defer w.liveMu.Unlock()
	live := slices.DeleteFunc(slices.Clone(w.live), func(c *config.RemoteWriteConfig) bool { return c == ep.cfg })
	if err := w.ws.ApplyConfig(&config.Config{GlobalConfig: w.global, RemoteWriteConfigs: live}); err != nil {
		w.logger.Error("remote write queue not stopped", "remote_name", ep.name, "err", err)
		return
	}
	w.live = live
}

// ShipsFrom returns the earliest timestamp (ms) at which a sample appended
// from now on is sure to reach every endpoint: one at ShipsFrom() or later
// does, one before it may not. The registry places a new series' leading
// zero no earlier than this. Call it holding the collection lock: the
// Writer raises it only under that lock, and then waits for the clock to
// pass it, so that it is earlier than the stamp of the collection that
// reads it. The exception is an endpoint not shipping yet (a new endpoint
// before its queue starts, math.MaxInt64): nothing of that collection
// reaches it anyway.
//
// While an endpoint ships live, it is one past its WAL watcher's start
// time, before which the watcher skips every sample. While it catches up,
// it is where the next catch-up round starts reading the store.
func (w *Writer) ShipsFrom() int64 {
	from := int64(math.MinInt64)
	for _, ep := range w.eps {
		from = max(from, ep.shipsFrom.Load())
	}
	return from
}

// Notify tells the queues that a collection was committed, so that they
// read the WAL at once rather than at their next poll. It never blocks: a
// queue being stopped holds the queues' lock for up to the flush deadline.
//
// Just before the queues read a new collection is also the moment they are
// most likely to hold nothing, which is when a marker can move: the queues
// are read then too.
func (w *Writer) Notify() {
	w.newest.Store(time.Now().UnixMilli())
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *Writer) notifier(ctx context.Context) {
	defer w.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.notify:
			w.refresh()
			w.ws.Notify()
		}
	}
}

// maintain moves the markers with the queues' progress, saves them, and
// catches up again an endpoint whose queue dropped samples.
func (w *Writer) maintain(ctx context.Context) {
	defer w.wg.Done()
	read := time.NewTicker(refreshInterval)
	defer read.Stop()
	save := time.NewTicker(markerInterval)
	defer save.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-read.C:
			w.refresh()
			for _, ep := range w.eps {
				ep.mu.Lock()
				relaunch := ep.lost && !ep.catchingUp
				ep.mu.Unlock()
				if relaunch {
					w.relaunch(ctx, ep)
				}
			}
		case <-save.C:
			w.persist()
		}
	}
}

// relaunch replaces a queue that dropped samples with a catch-up from the
// marker, which the drop did not pass.
func (w *Writer) relaunch(ctx context.Context, ep *endpoint) {
	w.removeQueue(ep)
	ep.mu.Lock()
	ep.catchingUp, ep.lost = true, false
	resume := ep.resumeFrom
	ep.mu.Unlock()
	// Lowering needs no lock: the catch-up reads from there.
	ep.shipsFrom.Store(resume)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.catchUp(ctx, ep, resume)
	}()
}

// refresh reads the queues: the marker rule in the package comment, and
// delivery without a new error clears LastError. It returns the stats.
func (w *Writer) refresh() map[string]*queueStats {
	first := gatherQueues(w.tee.private)
	stats := gatherQueues(w.tee.private)
	now := time.Now()
	for _, ep := range w.eps {
		s, h := stats[ep.name], first[ep.name]
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
		settled := h != nil && s.pending == 0 && !ep.catchingUp && !ep.lost && now.After(ep.frozenUntil)
		ep.mu.Unlock()
		if settled {
			w.advance(ep, int64(h.highestSent)*1000)
		}
	}
	return stats
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
	w.persistMu.Lock()
	defer w.persistMu.Unlock()
	if w.final.Load() {
		return
	}
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

func (w *Writer) endpoint(queue string) *endpoint {
	for _, ep := range w.eps {
		if ep.name == queue {
			return ep
		}
	}
	return nil
}

// watcherStarted implements queueEvents.
func (w *Writer) watcherStarted(queue string, at time.Time) {
	ep := w.endpoint(queue)
	if ep == nil {
		return
	}
	ep.mu.Lock()
	restarted := ep.started == nil
	if restarted {
		ep.lost = true
	} else {
		ep.watcherStart = at.UnixMilli()
		close(ep.started)
		ep.started = nil
	}
	ep.mu.Unlock()
	if restarted {
		w.logger.Warn("remote write queue restarted reading the WAL and skipped what was collected meanwhile; sending it again from the store",
			"remote_name", queue)
	}
}

// sendFailed implements queueEvents.
func (w *Writer) sendFailed(queue, msg string) {
	if ep := w.endpoint(queue); ep != nil {
		w.setError(ep, msg)
	}
}

// abandoned implements queueEvents.
func (w *Writer) abandoned(queue string, n int64) {
	ep := w.endpoint(queue)
	if ep == nil {
		return
	}
	ep.mu.Lock()
	ep.lost = true
	ep.mu.Unlock()
	if !w.stopping.Load() {
		w.logger.Warn("remote write queue dropped samples when resharding (a batch outlived the flush deadline); sending them again from the store",
			"remote_name", queue, "samples", n)
	}
}

// resharding implements queueEvents.
func (w *Writer) resharding(queue string) {
	if ep := w.endpoint(queue); ep != nil {
		ep.mu.Lock()
		ep.frozenUntil = time.Now().Add(w.flushDeadline + time.Second)
		ep.mu.Unlock()
	}
}

// isStopping implements queueEvents.
func (w *Writer) isStopping() bool { return w.stopping.Load() }

// Stop ends the catch-up, lets the queues flush and saves the markers. It
// waits up to the flush deadline while the queues make progress, and
// stopGrace once they make none (endpoint down or hanging): then it
// returns, the queues are hard-stopped in the background within the flush
// deadline, and what they held is sent after the next start (the marker
// is behind it).
func (w *Writer) Stop() {
	w.stopOnce.Do(func() {
		if w.cancel != nil {
			w.cancel()
		}
		w.wg.Wait()
		w.liveMu.Lock()
		w.closed = true
		w.liveMu.Unlock()
		w.stopping.Store(true)
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			if err := w.ws.Close(); err != nil {
				w.logger.Error("closing remote write queues", "err", err)
			}
		}()
		w.awaitFlush(closed)
		w.persist()
		w.final.Store(true)
		if w.public != nil {
			w.public.Unregister(w.self)
		}
	})
}

// awaitFlush follows the queues' flush, moving the markers, until the
// queues are closed or it gives up.
func (w *Writer) awaitFlush(closed <-chan struct{}) {
	start := time.Now()
	// The shards are hard-stopped at the flush deadline, after which
	// nothing pending no longer means everything delivered: stop reading
	// before.
	giveUp := start.Add(max(w.flushDeadline-refreshInterval, 0))
	progress, lastPending, lastDone := start, -1.0, -1.0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return
		case <-tick.C:
		}
		var pending, done float64
		for _, s := range w.refresh() {
			pending += s.pending
			done += s.samplesTotal - s.retried
		}
		now := time.Now()
		if pending != lastPending || done != lastDone {
			progress, lastPending, lastDone = now, pending, done
		}
		if now.After(giveUp) || now.Sub(progress) >= stopGrace {
			w.logger.Warn("remote write stopped before the endpoints took every sample; they are after the saved marker and are sent when Spangraph starts again",
				"samples", pending, "waited", now.Sub(start).Round(time.Millisecond))
			return
		}
	}
}

// Status returns each endpoint's state.
func (w *Writer) Status() []EndpointStatus {
	stats := gatherQueues(w.tee.private)
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
	if ep.resumeFrom > 0 {
		st.HighestSent = time.UnixMilli(ep.resumeFrom)
		if newest := w.newest.Load(); newest > ep.resumeFrom {
			st.Lag = time.Duration(newest-ep.resumeFrom) * time.Millisecond
		}
	}
	return st
}

// sleep waits d or until ctx ends; false when it ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
