package remotewrite

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/store"
)

// flakyProxy forwards remote-write requests to target but answers 503 to
// every other one, deterministically. It tracks how far a batch being
// retried lags behind what the endpoint already took: the moment a kill
// loses samples if the marker is a maximum over shards.
type flakyProxy struct {
	target string
	n      atomic.Int64

	mu       sync.Mutex
	accepted int64            // newest sample timestamp taken
	retried  map[string]int64 // failed request body → its oldest timestamp
}

func (f *flakyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	oldest, newest := requestSpan(body)
	if f.n.Add(1)%2 == 0 {
		f.mu.Lock()
		if oldest <= newest {
			f.retried[string(body)] = oldest
		}
		f.mu.Unlock()
		http.Error(w, "flaky", http.StatusServiceUnavailable)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, f.target, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 {
		f.mu.Lock()
		delete(f.retried, string(body))
		if oldest <= newest {
			f.accepted = max(f.accepted, newest)
		}
		f.mu.Unlock()
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(b)
}

// reset forgets a killed process' requests.
func (f *flakyProxy) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accepted = 0
	clear(f.retried)
}

// lag is how far the oldest batch being retried is behind the newest
// sample accepted.
func (f *flakyProxy) lag() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var d int64
	for _, oldest := range f.retried {
		d = max(d, f.accepted-oldest)
	}
	return time.Duration(d) * time.Millisecond
}

func requestSpan(body []byte) (oldest, newest int64) {
	oldest, newest = math.MaxInt64, math.MinInt64
	data, err := snappy.Decode(nil, body)
	var req prompb.WriteRequest
	if err != nil || req.Unmarshal(data) != nil {
		return oldest, newest
	}
	for _, ts := range req.Timeseries {
		for _, s := range ts.Samples {
			oldest, newest = min(oldest, s.Timestamp), max(newest, s.Timestamp)
		}
	}
	return oldest, newest
}

const crashChildEnv = "SPANGRAPH_RW_CRASH_CHILD"

// TestCrashChild is the process TestFlakyEndpointAndCrashes kills: it
// collects and ships until killed. It does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("run by TestFlakyEndpointAndCrashes")
	}
	cfgYAML, err := os.ReadFile(dir + "/rw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := &fakeEngine{st: openStore(t, dir, "acme"), series: crashSeries}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	w, err := Open(parseConfig(t, string(cfgYAML)), "acme", e.st, Options{Lock: &e.mu, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	e.setWriter(w)
	_, caughtUp, _ := loadMarker(markerPath(store.Dir(dir, "acme"), "flaky"))
	w.Start(context.Background())
	if !caughtUp {
		// A new endpoint ships what is collected once it is live.
		waitLive(t, w, 5*time.Second)
	}
	for {
		e.collect(t)
		time.Sleep(crashInterval)
	}
}

const (
	crashSeries = 24
	// crashInterval is twenty times batch_send_deadline, as the defaults
	// (15 s, 5 s): the queue empties between collections.
	crashInterval = 500 * time.Millisecond
)

// TestFlakyEndpointAndCrashes: an endpoint that answers 503 to every other
// request, four shards with small batches, and three kill -9 of the
// process: every sample in the store reaches Prometheus.
func TestFlakyEndpointAndCrashes(t *testing.T) {
	t.Parallel()
	p := startPrometheus(t)
	flaky := &flakyProxy{target: p.WriteURL(), retried: map[string]int64{}}
	proxy := httptest.NewServer(flaky)
	t.Cleanup(proxy.Close)
	cfgYAML := `
remote_write:
  - url: ` + proxy.URL + `/api/v1/write
    name: flaky
    queue_config: {min_shards: 4, max_shards: 4, max_samples_per_send: 50, batch_send_deadline: 25ms, min_backoff: 50ms, max_backoff: 2s}
`
	dataDir := t.TempDir()
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dataDir+"/rw.yaml", []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		flaky.reset()
		var logs otlptest.LogBuffer
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dataDir)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill while a batch being retried is more than a second older
		// than samples the endpoint took (a marker taken as the highest
		// sent, in whole seconds, is then past it), or after 8 s.
		start := time.Now()
		time.Sleep(2 * time.Second)
		for time.Since(start) < 8*time.Second && flaky.lag() < 1100*time.Millisecond {
			time.Sleep(5 * time.Millisecond)
		}
		lag := flaky.lag()
		_ = cmd.Process.Kill() // SIGKILL: no Stop, no flush, no marker save
		_ = cmd.Wait()
		m, _, _ := loadMarker(markerPath(store.Dir(dataDir, "acme"), "flaky"))
		t.Logf("crash %d after %s, a retried batch %s behind; marker %d", i+1, time.Since(start).Round(time.Millisecond), lag, m.ResumeFromMs)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("child %d logs:\n%s", i+1, logs.String())
			}
		})
	}

	e := &fakeEngine{st: openStore(t, dataDir, "acme"), series: crashSeries}
	t.Cleanup(func() { _ = e.st.Close() })
	w := startWriter(t, parseConfig(t, cfgYAML), "acme", e)
	e.collectFor(t, 2*time.Second, crashInterval)
	waitLive(t, w, 20*time.Second)
	e.collectFor(t, 2*time.Second, crashInterval)

	local := storeSamples(t, e)
	var total int
	for _, s := range local {
		total += len(s)
	}
	var missing []string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		missing = missing[:0]
		for series, want := range local {
			got := p.rawSamples(fmt.Sprintf(`spangraph_test_total{series=%q}`, series))
			for ts, v := range want {
				if g, ok := got[ts]; !ok || g != v {
					missing = append(missing, fmt.Sprintf("series %s at %d", series, ts))
				}
			}
			for ts := range got {
				if _, ok := want[ts]; !ok {
					missing = append(missing, fmt.Sprintf("series %s at %d: in prometheus, not in the store", series, ts))
				}
			}
		}
		if len(missing) == 0 {
			break
		}
	}
	st := w.Status()[0]
	w.ep0().mu.Lock()
	c := w.ep0().catchup
	w.ep0().mu.Unlock()
	t.Logf("%d samples of %d series in the store; status %+v; catch-up %+v", total, len(local), st, c)
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Errorf("%d samples of %d missing, e.g. %v", len(missing), total, missing[:min(10, len(missing))])
	}
}

// storeSamples reads every test sample in the store, by series label.
func storeSamples(t *testing.T, e *fakeEngine) map[string]map[int64]float64 {
	t.Helper()
	q, err := e.st.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string]map[int64]float64{}
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "spangraph_test_total"))
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		m := map[int64]float64{}
		it = s.Iterator(it)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			m[ts] = v
		}
		out[s.Labels().Get("series")] = m
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// timedLock is the collection lock as the Writer sees it: it records the
// longest the Writer held it.
type timedLock struct {
	mu      sync.Locker
	held    atomic.Bool
	since   time.Time
	longest atomic.Int64 // ns
}

func (l *timedLock) Lock() {
	l.mu.Lock()
	l.since = time.Now()
	l.held.Store(true)
}

func (l *timedLock) Unlock() {
	d := time.Since(l.since)
	if int64(d) > l.longest.Load() {
		l.longest.Store(int64(d))
	}
	l.held.Store(false)
	l.mu.Unlock()
}

// TestLockBoundWhileEndpointHangs: the endpoint answers the catch-up at
// once, except while the Writer holds the collection lock, when it hangs.
// The Writer never holds the lock longer than LockBound, so collections
// (another tenant's, with the engine's shared lock) go on; once the
// endpoint stops hanging the Writer goes live.
func TestLockBoundWhileEndpointHangs(t *testing.T) {
	t.Parallel()
	var lock timedLock
	var hang atomic.Bool
	hang.Store(true)
	var hung, hanging, stillHung atomic.Int64
	released := make(chan struct{})
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() && lock.held.Load() {
			hung.Add(1)
			hanging.Add(1)
			defer hanging.Add(-1)
			select {
			case <-r.Context().Done():
			case <-released:
				stillHung.Add(1)
			}
			return
		}
		// Slow enough that collections land between a catch-up round and
		// the final one.
		time.Sleep(150 * time.Millisecond)
		rec.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		// The queues' hard stop may finish after Stop returns (up to the
		// flush deadline, and later when -race and a loaded machine slow
		// the queues' goroutines down: 5 s was not always enough in CI).
		// A sender that gives up does so well within 15 s; one that never
		// does would wait for remote_timeout, 30 s.
		for end := time.Now().Add(15 * time.Second); hanging.Load() > 0 && time.Now().Before(end); {
			time.Sleep(20 * time.Millisecond)
		}
		close(released)
		if n := stillHung.Load(); n > 0 {
			t.Errorf("%d requests were still waiting on the hung endpoint: their sender never gave up", n)
		}
	})
	cfg := parseConfig(t, "remote_write:\n  - url: "+srv.URL+"\n    name: slow\n"+fastQueue)
	e := &fakeEngine{st: openStore(t, t.TempDir(), "acme"), series: 3}
	t.Cleanup(func() { _ = e.st.Close() })
	lock.mu = &e.mu
	e.collectFor(t, 300*time.Millisecond, 100*time.Millisecond)
	// A marker 5 s ago: the Writer catches up, then needs the lock.
	if err := saveMarker(markerPath(dirOf(e), "slow"), marker{URL: cfg[0].URL.Redacted(), ResumeFromMs: time.Now().UnixMilli() - 5000}); err != nil {
		t.Fatal(err)
	}
	w, err := Open(cfg, "acme", e.st, Options{Lock: &lock, Logger: testLogger(t), FlushDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.setWriter(w)
	w.Start(context.Background())
	t.Cleanup(w.Stop)

	var slowest time.Duration
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		start := time.Now()
		e.collect(t)
		slowest = max(slowest, time.Since(start))
	}
	if hung.Load() == 0 {
		t.Fatal("the endpoint never hung under the lock: the test did not test")
	}
	longest := time.Duration(lock.longest.Load())
	t.Logf("endpoint hung %d requests; lock held at most %s; slowest collection %s", hung.Load(), longest, slowest)
	if longest > LockBound+200*time.Millisecond || slowest > LockBound+300*time.Millisecond {
		t.Errorf("lock held up to %s, a collection waited %s; bound %s", longest, slowest, LockBound)
	}
	hang.Store(false)
	for end := time.Now().Add(15 * time.Second); w.Status()[0].CatchingUp && time.Now().Before(end); {
		e.collectFor(t, 200*time.Millisecond, 100*time.Millisecond)
	}
	waitLive(t, w, time.Second)
}

// TestStopWithEndpointDown: a clean stop while the endpoint fails returns
// within stopGrace (not the 10 s flush deadline), logs no ERROR but a
// warning that says what happens to the samples, and the next start sends
// every one of them.
func TestStopWithEndpointDown(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		rec.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := parseConfig(t, "remote_write:\n  - url: "+srv.URL+"\n    name: down\n"+fastQueue)
	dataDir := t.TempDir()
	e := &fakeEngine{st: openStore(t, dataDir, "acme"), series: 3}
	logger, logs := testLogs(t)
	w, err := Open(cfg, "acme", e.st, Options{Lock: &e.mu, Logger: logger}) // default flush deadline
	if err != nil {
		t.Fatal(err)
	}
	e.setWriter(w)
	w.Start(context.Background())
	waitLive(t, w, 5*time.Second)
	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	down.Store(true)
	e.collectFor(t, time.Second, 100*time.Millisecond)

	start := time.Now()
	w.Stop()
	took := time.Since(start)
	t.Logf("Stop took %s with the endpoint down", took)
	if took > 2*time.Second {
		t.Errorf("Stop took %s with the endpoint down, want at most 2 s", took)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("Stop logged an ERROR for samples the next start sends")
	}
	if !strings.Contains(logs.String(), "are sent when Spangraph starts again") {
		t.Errorf("Stop did not say what happens to the samples it did not send")
	}
	e.setWriter(nil)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}

	// The next start, endpoint back: every collection arrives.
	down.Store(false)
	e.st = openStore(t, dataDir, "acme")
	t.Cleanup(func() { _ = e.st.Close() })
	w2 := startWriter(t, cfg, "acme", e)
	waitLive(t, w2, 10*time.Second)
	e.collectFor(t, 300*time.Millisecond, 100*time.Millisecond)
	waitFor(t, "every collection at the endpoint", 10*time.Second, func() bool {
		got := map[string]bool{}
		rec.mu.Lock()
		for _, r := range rec.requests {
			for _, ts := range r.req.Timeseries {
				for _, s := range ts.Samples {
					got[fmt.Sprint(ts.Labels[1].Value, "@", s.Timestamp)] = true
				}
			}
		}
		rec.mu.Unlock()
		for _, stamp := range e.stamps {
			for s := range e.series {
				if !got[fmt.Sprint(s, "@", stamp)] {
					return false
				}
			}
		}
		return true
	})
}

// TestShipsFrom pins ShipsFrom's contract against a real Prometheus: a
// sample appended under the collection lock at ShipsFrom() reaches the
// endpoint; one a second before it never does (the WAL watcher skipped
// it), which is why the registry must not put a leading zero there.
func TestShipsFrom(t *testing.T) {
	t.Parallel()
	p := startPrometheus(t)
	e := &fakeEngine{st: openStore(t, t.TempDir(), "acme"), series: 1}
	t.Cleanup(func() { _ = e.st.Close() })
	w := startWriter(t, parseConfig(t, promConfig(p)), "acme", e)
	waitLive(t, w, 5*time.Second)

	e.mu.Lock()
	from := w.ShipsFrom()
	now := time.Now().UnixMilli()
	app := e.st.Appender(context.Background())
	appendSample(t, app, "at", 0, from, 0)
	appendSample(t, app, "at", 0, now, 1)
	appendSample(t, app, "before", 0, from-1000, 0)
	appendSample(t, app, "before", 0, now, 1)
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	w.Notify()
	e.mu.Unlock()
	if now <= from {
		t.Fatalf("ShipsFrom %d is not before the stamp %d taken under the lock", from, now)
	}
	var at, before map[int64]float64
	waitFor(t, "both series' values in prometheus", 10*time.Second, func() bool {
		at, before = p.rawSamples(`spangraph_at`), p.rawSamples(`spangraph_before`)
		return len(at) == 2 && len(before) >= 1
	})
	if v, ok := at[from]; !ok || v != 0 {
		t.Errorf("sample at ShipsFrom() missing: %v", at)
	}
	if _, ok := before[from-1000]; ok || len(before) != 1 {
		t.Errorf("sample a second before ShipsFrom() arrived: %v; the contract says the watcher skips it", before)
	}
}
