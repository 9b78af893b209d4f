package remotewrite

import (
	"testing"
	"time"
)

// Tests against a real Prometheus 2.42 (remote-write receiver, refuses
// out-of-order samples).

func promConfig(p *promServer) string {
	return "remote_write:\n  - url: " + p.WriteURL() + "\n    name: prom\n" + fastQueue
}

// TestShipToPrometheus: what the store gets, Prometheus gets, same series,
// timestamps and values.
func TestShipToPrometheus(t *testing.T) {
	t.Parallel()
	p := startPrometheus(t)
	e := &fakeEngine{st: openStore(t, t.TempDir(), "acme"), series: 5}
	t.Cleanup(func() { _ = e.st.Close() })
	w := startWriter(t, parseConfig(t, promConfig(p)), "acme", e)
	waitLive(t, w, 5*time.Second)

	e.collectFor(t, 1500*time.Millisecond, 100*time.Millisecond)
	assertAll(t, p, e, 30*time.Second) // generous: -race on a loaded machine

	st := w.Status()[0]
	if want := float64(len(e.stamps) * e.series); st.SamplesSent < want || st.SamplesFailed != 0 || st.LastError != "" {
		t.Errorf("status %+v, want %v samples sent, none failed, no error", st, want)
	}
}

// TestReceiverDown: the queue keeps what Prometheus could not take while
// it was down and delivers it after, without a gap.
func TestReceiverDown(t *testing.T) {
	t.Parallel()
	p := startPrometheus(t)
	e := &fakeEngine{st: openStore(t, t.TempDir(), "acme"), series: 3}
	t.Cleanup(func() { _ = e.st.Close() })
	w := startWriter(t, parseConfig(t, promConfig(p)), "acme", e)
	waitLive(t, w, 5*time.Second)

	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	p.Stop()
	e.collectFor(t, 2*time.Second, 100*time.Millisecond)
	waitFor(t, "the outage in LastError", 5*time.Second, func() bool { return w.Status()[0].LastError != "" })
	p.Restart()
	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	assertAll(t, p, e, 15*time.Second)
	if st := w.Status()[0]; st.SamplesFailed != 0 {
		t.Errorf("status %+v: nothing may fail", st)
	}
}

// TestRestartWhileReceiverDown: Spangraph stops while Prometheus is down,
// collects more after a restart (store reopened), and Prometheus comes back
// while the new Writer is catching up: every collection arrives, nothing is
// refused but samples Prometheus already had.
func TestRestartWhileReceiverDown(t *testing.T) {
	t.Parallel()
	p := startPrometheus(t)
	dataDir := t.TempDir()
	e := &fakeEngine{st: openStore(t, dataDir, "acme"), series: 3}
	cfg := parseConfig(t, promConfig(p))
	w := startWriter(t, cfg, "acme", e)
	waitLive(t, w, 5*time.Second)

	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	assertAll(t, p, e, 30*time.Second) // generous: -race on a loaded machine
	p.Stop()
	e.collectFor(t, time.Second, 100*time.Millisecond)

	// Spangraph stops: the queue cannot flush.
	w.Stop()
	e.setWriter(nil)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	m, ok, err := loadMarker(markerPath(w.dir, "prom"))
	if !ok || err != nil {
		t.Fatalf("no marker after Stop: %v", err)
	}
	t.Logf("marker %d; collections %v", m.ResumeFromMs, e.stamps)

	// Spangraph restarts: collects, while the receiver is still down.
	e.st = openStore(t, dataDir, "acme")
	t.Cleanup(func() { _ = e.st.Close() })
	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	w2 := startWriter(t, cfg, "acme", e)
	e.collectFor(t, time.Second, 100*time.Millisecond)
	if st := w2.Status()[0]; !st.CatchingUp {
		t.Fatalf("status %+v: must still be catching up while the receiver is down", st)
	}

	p.Restart()
	for end := time.Now().Add(10 * time.Second); w2.Status()[0].CatchingUp && time.Now().Before(end); {
		e.collectFor(t, 200*time.Millisecond, 100*time.Millisecond)
	}
	waitLive(t, w2, time.Second)
	e.collectFor(t, 500*time.Millisecond, 100*time.Millisecond)
	assertAll(t, p, e, 15*time.Second)

	st := w2.Status()[0]
	if st.SamplesFailed != 0 {
		t.Errorf("status %+v: nothing may fail", st)
	}
	// Prometheus refuses a whole request at its first out-of-order
	// sample, counting one; the only ones allowed are the catch-up's
	// offers of samples after the marker it already had, counted as
	// already delivered.
	ooo := p.metric("prometheus_tsdb_out_of_order_samples_total")
	w2.ep0().mu.Lock()
	refused := w2.ep0().catchup.refused
	w2.ep0().mu.Unlock()
	t.Logf("catch-up: %+v; refused as already delivered: %v samples; prometheus out-of-order refusals: %v", st, refused, ooo)
	if ooo > 0 && refused == 0 {
		t.Errorf("prometheus refused %v requests as out of order, none of them counted as already delivered", ooo)
	}
}

func (w *Writer) ep0() *endpoint { return w.eps[0] }
