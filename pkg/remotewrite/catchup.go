package remotewrite

import (
	"cmp"
	"context"
	"slices"
	"strings"
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
//   - in the second after a marker taken from the queue (whole seconds, see
//     markerAmbiguity) the endpoint may already hold some timestamps: there
//     a request holds one timestamp only, and an out-of-order refusal means
//     "already delivered", not a failure.
const (
	// leadingZeroLookback covers the registry's leading zero, which a new
	// series gets at the end of the previous minute (up to 61 s before its
	// first value).
	leadingZeroLookback = 61_000
	initialStep         = int64(time.Minute / time.Millisecond)
	// targetChunkSamples bounds the memory a chunk takes (~50 B a sample).
	targetChunkSamples = 200_000
)

// catchup is one endpoint's catch-up.
type catchup struct {
	w  *Writer
	ep *endpoint
	// base is where this catch-up started (the marker): a leading zero
	// before it is sent only with a first value that certainly was not.
	base           int64
	ambiguousUntil int64
	step           int64
	cursor         cursor
	lastWarn       time.Time

	lb  *labels.Builder
	buf []byte
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

// catchUp runs rounds up to "now" until one is short, then a final round
// and the switch to the queue under the collection lock.
func (w *Writer) catchUp(ctx context.Context, ep *endpoint, resumeFrom int64) {
	c := &catchup{
		w:              w,
		ep:             ep,
		base:           resumeFrom,
		ambiguousUntil: resumeFrom + markerAmbiguity,
		step:           initialStep,
		cursor:         cursor{key: resumeFrom - 1, all: true},
		lb:             labels.NewBuilder(labels.EmptyLabels()),
	}
	w.logger.Info("remote write catching up from the store", "remote_name", ep.name, "url", ep.url,
		"from", time.UnixMilli(resumeFrom).UTC(), "behind", time.Since(time.UnixMilli(resumeFrom)).Round(time.Second))
	for ctx.Err() == nil {
		// Every collection stamped before to is committed once the lock
		// has been taken, and every later one is stamped after to.
		w.lock.Lock()
		to := time.Now().UnixMilli() - 1
		w.lock.Unlock()
		start := time.Now()
		before := c.sent()
		if err := c.run(ctx, to); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.logger.Error("remote write catch-up cannot read the store; retrying", "remote_name", ep.name, "err", err)
			w.setError(ep, "catch-up: "+err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			continue
		}
		w.logger.Info("remote write catch-up round done", "remote_name", ep.name,
			"until", time.UnixMilli(to).UTC(), "samples", c.sent()-before, "took", time.Since(start).Round(time.Millisecond))
		if time.Since(start) < shortRound && w.finalRound(ctx, c) {
			return
		}
	}
}

func (c *catchup) sent() float64 {
	c.ep.mu.Lock()
	defer c.ep.mu.Unlock()
	return c.ep.catchup.sent
}

// finalRound sends the rest and starts the queue, holding the collection
// lock so that no collection falls between the two. It gives up after
// finalRoundTimeout (the receiver failed just now) and the caller goes on
// catching up without the lock.
func (w *Writer) finalRound(ctx context.Context, c *catchup) bool {
	w.lock.Lock()
	defer w.lock.Unlock()
	rctx, cancel := context.WithTimeout(ctx, finalRoundTimeout)
	err := c.run(rctx, time.Now().UnixMilli())
	cancel()
	if err != nil {
		return false
	}
	if err := w.applyLive(ctx, c.ep); err != nil {
		w.logger.Error("remote write queue not started", "remote_name", c.ep.name, "err", err)
		w.setError(c.ep, err.Error())
		return true
	}
	c.ep.mu.Lock()
	c.ep.catchingUp = false
	c.ep.mu.Unlock()
	w.persist()
	return true
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
		hasPrev, first := false, true
		it = s.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			t := it.AtT()
			if vt != chunkenc.ValFloat {
				hasPrev = false // a histogram is never a leading zero
				if t < from {
					continue
				}
				first = false
				if !keep {
					dropped++
					continue
				}
				// As the queue, which does not read them otherwise.
				if !c.ep.cfg.SendNativeHistograms {
					continue
				}
				e := entry{key: t, t: t, series: idx}
				if vt == chunkenc.ValHistogram {
					_, e.h = it.AtHistogram(nil)
				} else {
					_, e.fh = it.AtFloatHistogram(nil)
				}
				entries = append(entries, e)
				continue
			}
			t, v := it.At()
			if t < from {
				prevT, prevV, hasPrev = t, v, true
				continue
			}
			if !keep {
				dropped++
				continue
			}
			// A new series' leading zero lies before the marker but was
			// written with this value; send it along unless the value may
			// have been delivered, in which case so was the zero.
			if first && hasPrev && prevT < c.base && t > c.ambiguousUntil && isLeadingZero(prevT, prevV, t) {
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

// isLeadingZero tells whether (t0, v0) is the zero the registry writes
// before a new series' first value at t1: at the end of the previous minute
// minus one second.
func isLeadingZero(t0 int64, v0 float64, t1 int64) bool {
	return v0 == 0 && t0 == t1-t1%60_000-1000
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
// max_samples_per_send, cut only between (timestamp, series) groups and, in
// the ambiguous second, at every timestamp.
func (c *catchup) sendEntries(ctx context.Context, entries []entry, orig, out []labels.Labels) error {
	maxSamples := c.ep.cfg.QueueConfig.MaxSamplesPerSend
	var (
		req   prompb.WriteRequest
		index = map[int32]int{}
		n     int
	)
	flush := func(last entry) error {
		data, err := req.Marshal()
		if err != nil {
			return err
		}
		c.buf = snappy.Encode(c.buf[:cap(c.buf)], data)
		if err := c.send(ctx, c.buf, n, last.key <= c.ambiguousUntil); err != nil {
			return err
		}
		c.cursor = cursor{key: last.key, lbls: orig[last.series]}
		c.w.advance(c.ep, last.key)
		req.Timeseries = req.Timeseries[:0]
		clear(index)
		n = 0
		return nil
	}
	for i, e := range entries {
		if i > 0 {
			prev := entries[i-1]
			newKey := e.key != prev.key
			if (newKey || e.series != prev.series) && (n >= maxSamples || (newKey && prev.key <= c.ambiguousUntil)) {
				if err := flush(prev); err != nil {
					return err
				}
			}
		}
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
		n++
	}
	if n > 0 {
		return flush(entries[len(entries)-1])
	}
	return nil
}

// send delivers one request, retrying recoverable errors (network, 5xx,
// 429 when retry_on_http_429) with the endpoint's backoff until it succeeds
// or ctx ends; a request refused for good is counted and skipped, as the
// queue does.
func (c *catchup) send(ctx context.Context, body []byte, samples int, ambiguous bool) error {
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
		if isRecoverable(err) {
			c.w.setError(ep, "catch-up: "+err.Error())
			if time.Since(c.lastWarn) > 30*time.Second {
				c.lastWarn = time.Now()
				c.w.logger.Warn("remote write catch-up cannot send; retrying", "remote_name", ep.name,
					"url", ep.url, "retries", bo.NumRetries(), "err", err)
			}
			bo.Wait()
			continue
		}
		ep.mu.Lock()
		if ambiguous && isOutOfOrder(err) {
			ep.catchup.refused += float64(samples)
			ep.mu.Unlock()
			c.w.logger.Debug("remote write catch-up: endpoint already has these samples", "remote_name", ep.name)
			return nil
		}
		ep.catchup.failed += float64(samples)
		ep.mu.Unlock()
		c.w.setError(ep, "catch-up: "+err.Error())
		c.w.logger.Error("remote write catch-up request refused; skipping it", "remote_name", ep.name,
			"url", ep.url, "samples", samples, "err", err)
		return nil
	}
	return bo.Err()
}

// isOutOfOrder recognises Prometheus' and Mimir's refusal of a sample older
// than the newest of its series.
func isOutOfOrder(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "out of order") || strings.Contains(s, "out-of-order")
}
