package remotewrite

import (
	"math"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/registry"
)

// nativeEngine is a fakeEngine whose collections also write the
// registry's native histogram spangraph_test_seconds{service="checkout"},
// one more observation each time.
func nativeEngine(t *testing.T, dataDir string) *fakeEngine {
	reg := registry.New(registry.DefaultConfig())
	h := reg.NewHistogramWith("spangraph_test_seconds", []string{"service"}, nil,
		registry.HistogramOptions{Mode: registry.Native, Native: registry.DefaultNativeOptions()})
	return &fakeEngine{st: openStore(t, dataDir, "acme"), series: 1, reg: reg, native: h}
}

// assertNative checks that p has the native histogram of every
// collection, with its count, and the leading zero before the first.
func assertNative(t *testing.T, p *promServer, e *fakeEngine, d time.Duration) {
	t.Helper()
	e.mu.Lock()
	stamps := append([]int64(nil), e.stamps...)
	e.mu.Unlock()
	complete := func(got map[int64]float64) bool {
		zeros := 0
		for ts, c := range got {
			if ts < stamps[0] && c == 0 {
				zeros++
			}
		}
		if zeros != 1 {
			return false
		}
		for i, ts := range stamps {
			if c, ok := got[ts]; !ok || c != float64(i+1) {
				return false
			}
		}
		return len(got) == len(stamps)+1
	}
	var got map[int64]float64
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if got = p.histogramCounts(`spangraph_test_seconds{service="checkout"}`); complete(got) {
			return
		}
	}
	t.Fatalf("prometheus has the native histogram counts %v; want a 0 before %d (the leading zero) and 1, 2… at %v", got, stamps[0], stamps)
}

// TestShipNativeHistograms: with send_native_histograms, the registry's
// native histograms reach a real Prometheus (2.42, its native-histograms
// feature on) live, through the queue tailing the WAL, and, for what was
// collected while remote write was off (Spangraph stopped it and started
// again) and after a restart while Prometheus was down, through the
// catch-up from the store: every collection, and the leading zero.
func TestShipNativeHistograms(t *testing.T) {
	t.Parallel()
	p := startPrometheus(t)
	dataDir := t.TempDir()
	e := nativeEngine(t, dataDir)
	t.Cleanup(func() { _ = e.st.Close() })
	cfg := parseConfig(t, promConfig(p)+"    send_native_histograms: true\n")
	w := startWriter(t, cfg, "acme", e)
	waitLive(t, w, 5*time.Second)
	e.collectFor(t, time.Second, 100*time.Millisecond)
	assertNative(t, p, e, 10*time.Second)

	// Stopped with everything delivered; collections go on into the
	// store; the next writer catches up from its marker.
	w.Stop()
	e.setWriter(nil)
	// A series born in the gap: its leading zero, at the end of the
	// previous minute, usually lies before the marker, where the catch-up
	// looks back for it.
	e.mu.Lock()
	e.native.Observe(registry.MakeLabelValues([]string{"cart"}), 0.002, 1, nil, 0)
	e.mu.Unlock()
	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	w2 := startWriter(t, cfg, "acme", e)
	for end := time.Now().Add(10 * time.Second); w2.Status()[0].CatchingUp && time.Now().Before(end); {
		e.collectFor(t, 200*time.Millisecond, 100*time.Millisecond)
	}
	waitLive(t, w2, time.Second)
	e.collectFor(t, 300*time.Millisecond, 100*time.Millisecond)
	assertNative(t, p, e, 15*time.Second)
	if got := p.histogramCounts(`spangraph_test_seconds{service="cart"}`); len(got) < 2 || minCount(got) != 0 {
		t.Errorf("the series born in the gap reached prometheus as %v; want its leading zero and its count", got)
	}
	w2.ep0().mu.Lock()
	caughtUp := w2.ep0().catchup.sent
	w2.ep0().mu.Unlock()
	if st := w2.Status()[0]; st.SamplesFailed != 0 || caughtUp == 0 {
		t.Errorf("status %+v, %v samples caught up: nothing may fail, the catch-up must have sent the gap", st, caughtUp)
	}

	// Prometheus goes down, Spangraph restarts (store reopened) and
	// catches up while Prometheus comes back. The catch-up offers again
	// the histogram at its marker, which Prometheus 2.42 refuses as a
	// duplicate where it takes a float: counted as delivered, not failed.
	p.Stop()
	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	w2.Stop()
	e.setWriter(nil)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	e.st = openStore(t, dataDir, "acme")
	e.collectFor(t, 300*time.Millisecond, 100*time.Millisecond)
	w3 := startWriter(t, cfg, "acme", e)
	p.Restart()
	for end := time.Now().Add(10 * time.Second); w3.Status()[0].CatchingUp && time.Now().Before(end); {
		e.collectFor(t, 200*time.Millisecond, 100*time.Millisecond)
	}
	waitLive(t, w3, time.Second)
	e.collectFor(t, 300*time.Millisecond, 100*time.Millisecond)
	assertNative(t, p, e, 15*time.Second)
	if st := w3.Status()[0]; st.SamplesFailed != 0 {
		t.Errorf("status %+v after the restart: nothing may fail", st)
	}
}

// TestNativeHistogramsNeedTheSetting: without send_native_histograms, as
// in Prometheus, native histograms stay home and the float series go.
func TestNativeHistogramsNeedTheSetting(t *testing.T) {
	t.Parallel()
	p := startPrometheus(t)
	e := nativeEngine(t, t.TempDir())
	t.Cleanup(func() { _ = e.st.Close() })
	w := startWriter(t, parseConfig(t, promConfig(p)), "acme", e)
	waitLive(t, w, 5*time.Second)
	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	assertAll(t, p, e, 30*time.Second) // generous: -race on a loaded machine
	if got := p.histogramCounts(`spangraph_test_seconds`); len(got) != 0 {
		t.Errorf("native histograms sent without send_native_histograms: %v", got)
	}
}

// minCount is the count of the earliest sample.
func minCount(samples map[int64]float64) float64 {
	first := int64(math.MaxInt64)
	for ts := range samples {
		first = min(first, ts)
	}
	return samples[first]
}
