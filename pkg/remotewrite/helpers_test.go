package remotewrite

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"gopkg.in/yaml.v3"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/promtest"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/store"
)

// testLogger logs into a buffer that is printed only when the test fails,
// so that goroutines that log after the test ended cannot make t.Log panic.
func testLogger(t testing.TB) *slog.Logger {
	l, _ := testLogs(t)
	return l
}

// testLogs is testLogger with the buffer, for tests that read the logs.
func testLogs(t testing.TB) (*slog.Logger, *otlptest.LogBuffer) {
	buf := &otlptest.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})), buf
}

// fakeEngine writes collections as pkg/engine does: under the collection
// lock, stamped with time.Now() taken after acquiring it, committed, then
// Notify.
type fakeEngine struct {
	mu     sync.Mutex
	st     *store.Store
	w      *Writer
	series int
	n      int
	stamps []int64
	// reg, when set, is collected too: each collection observes one more
	// span in native (see nativeEngine).
	reg    *registry.Registry
	native *registry.Histogram
}

func (e *fakeEngine) collect(t testing.TB) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now().UnixMilli()
	app := e.st.Appender(context.Background())
	for i := range e.series {
		l := labels.FromStrings(labels.MetricName, "spangraph_test_total", "series", strconv.Itoa(i))
		if _, err := app.Append(0, l, now, float64(e.n)); err != nil {
			t.Fatal(err)
		}
	}
	if e.reg != nil {
		// As the engine: leading zeros go where the queue reads.
		if e.w != nil {
			if from := e.w.ShipsFrom(); from < now {
				e.reg.SetZeroFloor(from - 1)
			}
		}
		e.native.Observe(registry.MakeLabelValues([]string{"checkout"}), 0.001*float64(e.n+1), 1, nil, 0)
		if _, err := e.reg.Collect(app, time.UnixMilli(now)); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	e.n++
	e.stamps = append(e.stamps, now)
	if e.w != nil {
		e.w.Notify()
	}
}

// collectFor collects every interval for d.
func (e *fakeEngine) collectFor(t testing.TB, d, interval time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(interval) {
		e.collect(t)
	}
}

func (e *fakeEngine) setWriter(w *Writer) {
	e.mu.Lock()
	e.w = w
	e.mu.Unlock()
}

func openStore(t testing.TB, dataDir, tenant string) *store.Store {
	st, err := store.Open(dataDir, tenant, store.Options{Retention: 24 * time.Hour}, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// parseConfig decodes a remote_write list the way pkg/config will.
func parseConfig(t testing.TB, y string) Config {
	var doc struct {
		RemoteWrite Config `yaml:"remote_write"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(y)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if err := doc.RemoteWrite.Validate("remote_write"); err != nil {
		t.Fatal(err)
	}
	return doc.RemoteWrite
}

// fastQueue keeps test latency low: small batches flushed every 100 ms,
// retries capped at 200 ms.
const fastQueue = `
    queue_config:
      batch_send_deadline: 100ms
      min_backoff: 20ms
      max_backoff: 200ms
`

func startWriter(t testing.TB, cfg Config, tenant string, e *fakeEngine) *Writer {
	w, err := Open(cfg, tenant, e.st, Options{Lock: &e.mu, Logger: testLogger(t), FlushDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.setWriter(w)
	w.Start(context.Background())
	t.Cleanup(w.Stop)
	return w
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

func waitLive(t testing.TB, w *Writer, d time.Duration) {
	t.Helper()
	waitFor(t, "live shipping", d, func() bool {
		for _, s := range w.Status() {
			if s.CatchingUp {
				return false
			}
		}
		return true
	})
}

// promServer is a real Prometheus (package promtest), with the readers
// these tests need.
type promServer struct {
	*promtest.Server
	t testing.TB
}

func startPrometheus(t testing.TB) *promServer {
	return &promServer{Server: promtest.Start(t), t: t}
}

// histogramCounts returns the raw native histogram samples (ms → count)
// of the last hour of the series a selector picks.
func (p *promServer) histogramCounts(selector string) map[int64]float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + p.Addr + "/api/v1/query?query=" + url.QueryEscape(selector+"[1h]"))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Histograms [][2]json.RawMessage `json:"histograms"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		p.t.Fatal(err)
	}
	out := map[int64]float64{}
	for _, r := range body.Data.Result {
		for _, h := range r.Histograms {
			var ts float64
			var v struct {
				Count string `json:"count"`
			}
			if json.Unmarshal(h[0], &ts) != nil || json.Unmarshal(h[1], &v) != nil {
				p.t.Fatalf("histogram sample %s", h)
			}
			out[int64(ts*1000+0.5)], _ = strconv.ParseFloat(v.Count, 64)
		}
	}
	return out
}

// samples returns the raw samples (ms → value) of one test series.
func (p *promServer) samples(series int) map[int64]float64 {
	p.t.Helper()
	return p.rawSamples(fmt.Sprintf(`spangraph_test_total{series="%d"}`, series))
}

// rawSamples returns the raw samples (ms → value) of the last hour of the
// series a selector picks.
func (p *promServer) rawSamples(selector string) map[int64]float64 {
	p.t.Helper()
	q := selector + "[1h]"
	resp, err := http.Get("http://" + p.Addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		p.t.Fatal(err)
	}
	out := map[int64]float64{}
	for _, r := range body.Data.Result {
		for _, v := range r.Values {
			ts := int64(v[0].(float64)*1000 + 0.5)
			f, _ := strconv.ParseFloat(v[1].(string), 64)
			out[ts] = f
		}
	}
	return out
}

// metric reads one of the server's own metrics (summed over labels).
func (p *promServer) metric(name string) float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + p.Addr + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(name)) || len(line) <= len(name) || (line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		f := bytes.Fields(line)
		v, _ := strconv.ParseFloat(string(f[len(f)-1]), 64)
		sum += v
	}
	return sum
}

// assertAll checks that every collection of every series reached p with
// its value.
func assertAll(t testing.TB, p *promServer, e *fakeEngine, d time.Duration) {
	t.Helper()
	e.mu.Lock()
	stamps := append([]int64(nil), e.stamps...)
	series := e.series
	e.mu.Unlock()
	var missing []int64
	waitFor(t, "every collection in prometheus", d, func() bool {
		missing = missing[:0]
		for s := range series {
			got := p.samples(s)
			for i, ts := range stamps {
				if v, ok := got[ts]; !ok || v != float64(i) {
					missing = append(missing, ts)
				}
			}
		}
		return len(missing) == 0
	})
}

// recorder is a remote-write receiver that keeps each request's headers
// and samples; it answers 401 on /unauthorized, 204 elsewhere.
type recorder struct {
	mu       sync.Mutex
	requests []recorded
}

type recorded struct {
	path   string
	header http.Header
	req    prompb.WriteRequest
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	rec := recorded{path: req.URL.Path, header: req.Header.Clone()}
	if data, err := snappy.Decode(nil, body); err == nil {
		_ = rec.req.Unmarshal(data)
	}
	r.mu.Lock()
	r.requests = append(r.requests, rec)
	r.mu.Unlock()
	if req.URL.Path == "/unauthorized" {
		http.Error(w, "no such token", http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// last returns the last request to path that carried samples.
func (r *recorder) last(path string) (recorded, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.requests) - 1; i >= 0; i-- {
		if r.requests[i].path == path && len(r.requests[i].req.Timeseries) > 0 {
			return r.requests[i], true
		}
	}
	return recorded{}, false
}
