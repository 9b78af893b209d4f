package remotewrite

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/dskit/backoff"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// The catch-up reads the tenant TSDB from the endpoint's marker to now and
// sends it in time order, with the endpoint's settings, as remote write
// 1.0 requests. Endpoints configured for 2.0 get the catch-up in 1.0 too:
// every 2.0 receiver we know of (Prometheus, Mimir) accepts 1.0, 2.0's gains
// (interned symbols, metadata) do not matter for a one-off backlog, and a
// receiver that refuses 1.0 answers 415, which shows in LastError, counts as
// failed, and is logged at start by the probe.
//
// Order matters because receivers such as Prometheus 2.42 refuse a whole
// request when one sample is older than the newest of its series:
//   - requests follow timestamps across all series, so an endpoint has a
//     time prefix of the backlog and progress is one timestamp (plus, within
//     it, the last series) at any moment;
//   - time is read in chunks, so a receiver's head, which refuses samples
//     older than its newest minus an hour, never sees a series run ahead;
//   - after the marker the endpoint may already hold samples (the queue's
//     shards ran ahead of the marker, see the package comment), each series
//     a time prefix of its own, since a series stays in one shard and a
//     shard sends in order. A request refused as out of order is split
//     until the refusal names one sample of one series, which the endpoint
//     therefore has (it has a newer one); the rest is sent.
const (
	// leadingZeroLookback covers the registry's leading zero, which a new
	// series gets at the end of the previous minute (up to 61 s before its
	// first value).
	leadingZeroLookback = 61_000
	initialStep         = int64(time.Minute / time.Millisecond)
	// walkParallel is how many series are walked at once past samples the
	// endpoint already has: one request each per sample.
	walkParallel = 8
	// targetChunkSamples bounds the memory a chunk takes (~50 B a sample).
	targetChunkSamples = 200_000
)

// catchup is one endpoint's catch-up.
type catchup struct {
	w  *Writer
	ep *endpoint
	// base is where this catch-up started (the marker): a leading zero
	// before it is sent with its value.
	base     int64
	step     int64
	cursor   cursor
	lastWarn atomic.Int64 // unix ns

	lb *labels.Builder
}

// cursor is the catch-up's exact progress: everything before key, and at
// key every series up to lbls (all of them when all), was handled.
type cursor struct {
	key  int64
	lbls labels.Labels
	all  bool
}

func (c cursor) next() int64 {
	if c.all {
		return c.key + 1
	}
	return c.key
}

// entry is one sample to send. key orders it: its own timestamp, or that of
// the value a leading zero precedes, so that the two travel together.
type entry struct {
	key, t int64
	v      float64
	series int32
	h      *histogram.Histogram
	fh     *histogram.FloatHistogram
}

// catchUp runs rounds up to "now" until one is short, then tries a final
// round and the switch to the queue under the collection lock.
func (w *Writer) catchUp(ctx context.Context, ep *endpoint, resumeFrom int64) {
	c := &catchup{
		w:      w,
		ep:     ep,
		base:   resumeFrom,
		step:   initialStep,
		cursor: cursor{key: resumeFrom - 1, all: true},
		lb:     labels.NewBuilder(labels.EmptyLabels()),
	}
	w.logger.Info("remote write catching up from the store", "remote_name", ep.name, "url", ep.url,
		"from", time.UnixMilli(resumeFrom).UTC(), "behind", time.Since(time.UnixMilli(resumeFrom)).Round(time.Second))
	retry := finalRetryMin
	for ctx.Err() == nil {
		// Every collection stamped up to to is committed once the lock
		// has been taken, and every later one is stamped after to+1.
		w.lock.Lock()
		to := time.Now().UnixMilli() - 1
		w.shipFrom(ep, to+1)
		w.lock.Unlock()
		start := time.Now()
		before := c.sent()
		if err := c.run(ctx, to); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.logger.Error("remote write catch-up cannot read the store; retrying", "remote_name", ep.name, "err", err)
			w.setError(ep, "catch-up: "+err.Error())
			if !sleep(ctx, 5*time.Second) {
				return
			}
			continue
		}
		w.logger.Info("remote write catch-up round done", "remote_name", ep.name,
			"until", time.UnixMilli(to).UTC(), "samples", c.sent()-before, "took", time.Since(start).Round(time.Millisecond))
		if time.Since(start) >= shortRound {
			continue
		}
		done, err := w.finalRound(ctx, c)
		if done {
			w.persist()
			return
		}
		w.logger.Warn("remote write: the endpoint did not take the last catch-up round within the collection lock's bound; catching up without the lock and trying again",
			"remote_name", ep.name, "bound", LockBound, "retry_in", retry, "err", err)
		if !sleep(ctx, retry) {
			return
		}
		retry = min(2*retry, finalRetryMax)
	}
}

func (c *catchup) sent() float64 {
	c.ep.mu.Lock()
	defer c.ep.mu.Unlock()
	return c.ep.catchup.sent
}

// finalRound sends the rest and starts the queue, holding the collection
// lock so that no collection falls between the two, for at most LockBound.
// It reports false, with the reason, when that was not enough (the
// endpoint is slow or failing); what it sent stays sent.
func (w *Writer) finalRound(ctx context.Context, c *catchup) (bool, error) {
	w.lock.Lock()
	defer w.lock.Unlock()
	deadline := time.Now().Add(LockBound)
	to := time.Now().UnixMilli()
	rctx, cancel := context.WithDeadline(ctx, deadline.Add(-switchReserve))
	err := c.run(rctx, to)
	cancel()
	if ctx.Err() != nil {
		return true, nil
	}
	if err != nil {
		w.shipFrom(c.ep, to+1)
		return false, err
	}
	if err := w.applyLive(ctx, c.ep, deadline); err != nil {
		if errors.Is(err, errStopped) {
			return true, nil
		}
		w.shipFrom(c.ep, to+1)
		w.setError(c.ep, err.Error())
		return false, err
	}
	c.ep.mu.Lock()
	c.ep.catchingUp = false
	c.ep.mu.Unlock()
	return true, nil
}

// run sends everything from the cursor to to (inclusive), chunk by chunk.
// It returns only when done or when ctx ends.
func (c *catchup) run(ctx context.Context, to int64) error {
	for from := c.cursor.next(); from <= to; from = c.cursor.next() {
		end := min(from+c.step-1, to)
		n, err := c.chunk(ctx, from, end)
		if err != nil {
			return err
		}
		c.cursor = cursor{key: end, all: true}
		c.w.advance(c.ep, end+1)
		// Size the next chunk for targetChunkSamples at this density.
		if n > 0 {
			c.step = min(max(c.step*targetChunkSamples/int64(n), 1000), int64(time.Hour/time.Millisecond))
		} else {
			c.step = min(c.step*2, int64(time.Hour/time.Millisecond))
		}
	}
	return ctx.Err()
}

// chunk reads and sends [from, end]; it returns the samples read.
func (c *catchup) chunk(ctx context.Context, from, end int64) (int, error) {
	q, err := c.w.db.Querier(from-leadingZeroLookback, end)
	if err != nil {
		return 0, err
	}
	defer q.Close()
	ss := q.Select(ctx, true, nil, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+"))
	var (
		orig, out []labels.Labels
		entries   []entry
		dropped   int
		it        chunkenc.Iterator
	)
	for ss.Next() {
		s := ss.At()
		idx := int32(len(orig))
		lbls, keep := c.process(s.Labels())
		orig, out = append(orig, s.Labels()), append(out, lbls)
		var prevT int64
		var prevV float64
		var prevH entry // the sample before from, when it is a histogram
		nPrev, first := 0, true
		it = s.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			t := it.AtT()
			if vt != chunkenc.ValFloat {
				// As the queue, which does not read them otherwise.
				if !c.ep.cfg.SendNativeHistograms {
					if t >= from && !keep {
						dropped++
					}
					continue
				}
				e := entry{key: t, t: t, series: idx}
				if vt == chunkenc.ValHistogram {
					_, e.h = it.AtHistogram(nil)
				} else {
					_, e.fh = it.AtFloatHistogram(nil)
				}
				if t < from {
					prevH = e
					nPrev++
					continue
				}
				if !keep {
					dropped++
					continue
				}
				// A native series' leading zero is an empty histogram,
				// sent along as a float one is (below).
				if first && nPrev == 1 && (prevH.h != nil || prevH.fh != nil) && prevH.t < c.base && isLeadingZero(prevH.t, histCount(prevH), t) {
					prevH.key = t
					entries = append(entries, prevH)
				}
				first = false
				entries = append(entries, e)
				continue
			}
			t, v := it.At()
			if t < from {
				prevT, prevV = t, v
				nPrev++
				continue
			}
			if !keep {
				dropped++
				continue
			}
			// A new series' leading zero lies before the marker but was
			// written with this value: send it along (if the endpoint has
			// it, it refuses it as out of order or takes it as a duplicate).
			if first && nPrev == 1 && prevT < c.base && isLeadingZero(prevT, prevV, t) {
				entries = append(entries, entry{key: t, t: prevT, v: prevV, series: idx})
			}
			first = false
			entries = append(entries, entry{key: t, t: t, v: v, series: idx})
		}
		if err := it.Err(); err != nil {
			return 0, err
		}
	}
	if err := ss.Err(); err != nil {
		return 0, err
	}
	if dropped > 0 {
		c.ep.mu.Lock()
		c.ep.catchup.dropped += float64(dropped)
		c.ep.mu.Unlock()
	}
	if !c.cursor.all {
		// Resuming within a timestamp: skip the series already handled.
		entries = slices.DeleteFunc(entries, func(e entry) bool {
			return e.key == c.cursor.key && labels.Compare(orig[e.series], c.cursor.lbls) <= 0
		})
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.series, b.series), cmp.Compare(a.t, b.t))
	})
	return len(entries), c.sendEntries(ctx, entries, orig, out)
}

// isLeadingZero tells whether (t0, v0), a series' only sample in the
// lookback, is the zero the registry writes before a new series' first
// value at t1: at the end of the previous minute minus one second, or
// later when ShipsFrom was later.
func isLeadingZero(t0 int64, v0 float64, t1 int64) bool {
	return v0 == 0 && t0 >= t1-t1%60_000-1000 && t0 < t1
}

// histCount is the count of a histogram entry, what isLeadingZero reads
// of it.
func histCount(e entry) float64 {
	if e.h != nil {
		return float64(e.h.Count)
	}
	return e.fh.Count
}

// process applies external labels and write_relabel_configs as the queue
// does (external labels do not override the series' own).
func (c *catchup) process(lbls labels.Labels) (labels.Labels, bool) {
	c.lb.Reset(lbls)
	c.w.global.ExternalLabels.Range(func(l labels.Label) {
		if c.lb.Get(l.Name) == "" {
			c.lb.Set(l.Name, l.Value)
		}
	})
	if !relabel.ProcessBuilder(c.lb, c.ep.cfg.WriteRelabelConfigs...) {
		return labels.EmptyLabels(), false
	}
	return c.lb.Labels(), true
}

// sendEntries sends sorted entries in requests of at most
// max_samples_per_send, cut only between (timestamp, series) groups.
func (c *catchup) sendEntries(ctx context.Context, entries []entry, orig, out []labels.Labels) error {
	maxSamples := c.ep.cfg.QueueConfig.MaxSamplesPerSend
	first := 0
	for i := 1; i <= len(entries); i++ {
		if i < len(entries) {
			prev, e := entries[i-1], entries[i]
			if i-first < maxSamples || (e.key == prev.key && e.series == prev.series) {
				continue
			}
		}
		if err := c.deliver(ctx, entries[first:i], out); err != nil {
			return err
		}
		last := entries[i-1]
		c.cursor = cursor{key: last.key, lbls: orig[last.series]}
		c.w.advance(c.ep, last.key)
		first = i
	}
	return nil
}

// deliver sends entries. A request the endpoint refuses as out of order
// is split by series, which the endpoint takes independently, and each
// series is walked oldest sample first (walkParallel at a time): a single
// sample refused so is one the endpoint has (see the top of this file).
func (c *catchup) deliver(ctx context.Context, entries []entry, out []labels.Labels) error {
	err := c.sendOne(ctx, entries, out)
	if err == nil || !isOutOfOrder(err) {
		return c.settle(ctx, entries, err)
	}
	bySeries := map[int32][]entry{}
	var order []int32
	for _, e := range entries {
		if _, ok := bySeries[e.series]; !ok {
			order = append(order, e.series)
		}
		bySeries[e.series] = append(bySeries[e.series], e)
	}
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, walkParallel)
		errs = make([]error, len(order))
	)
	for i, id := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = c.walk(ctx, bySeries[id], out)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// walk sends one series' entries after a request of all of them was
// refused as out of order: oldest first, one at a time, until the
// endpoint takes one; the rest is newer and goes in one request.
func (c *catchup) walk(ctx context.Context, entries []entry, out []labels.Labels) error {
	for i := range entries {
		err := c.sendOne(ctx, entries[i:i+1], out)
		if err != nil && isOutOfOrder(err) {
			c.ep.mu.Lock()
			c.ep.catchup.refused++
			c.ep.mu.Unlock()
			continue
		}
		if err := c.settle(ctx, entries[i:i+1], err); err != nil {
			return err
		}
		if rest := entries[i+1:]; len(rest) > 0 {
			return c.settle(ctx, rest, c.sendOne(ctx, rest, out))
		}
		return nil
	}
	return nil
}

func (c *catchup) sendOne(ctx context.Context, entries []entry, out []labels.Labels) error {
	body, err := encode(entries, out)
	if err != nil {
		return err
	}
	return c.send(ctx, body, len(entries))
}

// settle counts what a send that was not refused as out of order did.
func (c *catchup) settle(ctx context.Context, entries []entry, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	c.ep.mu.Lock()
	c.ep.catchup.failed += float64(len(entries))
	c.ep.mu.Unlock()
	c.w.setError(c.ep, "catch-up: "+err.Error())
	c.w.logger.Error("remote write catch-up request refused; skipping it", "remote_name", c.ep.name,
		"url", c.ep.url, "samples", len(entries), "err", err)
	return nil
}

// encode builds one remote write 1.0 request.
func encode(entries []entry, out []labels.Labels) ([]byte, error) {
	var req prompb.WriteRequest
	index := map[int32]int{}
	for _, e := range entries {
		j, ok := index[e.series]
		if !ok {
			j = len(req.Timeseries)
			index[e.series] = j
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: prompb.FromLabels(out[e.series], nil)})
		}
		ts := &req.Timeseries[j]
		switch {
		case e.h != nil:
			ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(e.t, e.h))
		case e.fh != nil:
			ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(e.t, e.fh))
		default:
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: e.t, Value: e.v})
		}
	}
	data, err := req.Marshal()
	if err != nil {
		return nil, err
	}
	return snappy.Encode(nil, data), nil
}

// send delivers one request, retrying recoverable errors (network, 5xx,
// 429 when retry_on_http_429) with the endpoint's backoff until it succeeds
// or ctx ends; it returns what refuses the request for good.
func (c *catchup) send(ctx context.Context, body []byte, samples int) error {
	ep := c.ep
	bo := backoff.New(ctx, backoff.Config{
		MinBackoff: time.Duration(ep.cfg.QueueConfig.MinBackoff),
		MaxBackoff: time.Duration(ep.cfg.QueueConfig.MaxBackoff),
	})
	for bo.Ongoing() {
		_, err := ep.client.Store(ctx, body, bo.NumRetries())
		if err == nil {
			ep.mu.Lock()
			ep.catchup.sent += float64(samples)
			ep.lastErr = ""
			ep.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !isRecoverable(err) {
			return err
		}
		c.w.setError(ep, "catch-up: "+err.Error())
		if last := c.lastWarn.Load(); time.Since(time.Unix(0, last)) > 30*time.Second && c.lastWarn.CompareAndSwap(last, time.Now().UnixNano()) {
			c.w.logger.Warn("remote write catch-up cannot send; retrying", "remote_name", ep.name,
				"url", ep.url, "retries", bo.NumRetries(), "err", err)
		}
		bo.Wait()
	}
	return bo.Err()
}

// isOutOfOrder recognises Prometheus' and Mimir's refusal of a sample older
// than the newest of its series, or at its time: Prometheus 2.x takes a
// float sent again at its timestamp but refuses a native histogram so
// ("duplicate sample for timestamp"), and the catch-up offers again the
// sample at its marker, which the endpoint may have.
func isOutOfOrder(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "out of order") || strings.Contains(s, "out-of-order") ||
		strings.Contains(s, "duplicate sample for timestamp")
}
