package remotewrite

import (
	"context"
	"encoding/base64"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/tenant"
)

// TestHeadersAndAuth: credentials and headers as configured, X-Scope-OrgID
// for a named tenant unless configured, and a 401 endpoint reported without
// holding anything up.
func TestHeadersAndAuth(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	cfg := parseConfig(t, `
remote_write:
  - url: `+srv.URL+`/basic
    basic_auth: {username: alice, password: s3cret}
    headers: {X-Custom: yes}
`+fastQueue+`
  - url: `+srv.URL+`/bearer
    authorization: {credentials: tok}
    headers: {x-scope-orgid: configured}
`+fastQueue+`
  - url: `+srv.URL+`/unauthorized
`+fastQueue)

	e := &fakeEngine{st: openStore(t, t.TempDir(), "team-a"), series: 2}
	t.Cleanup(func() { _ = e.st.Close() })
	reg := prometheus.NewRegistry()
	w, err := Open(cfg, "team-a", e.st, Options{Lock: &e.mu, Logger: testLogger(t), Registerer: reg, FlushDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.setWriter(w)
	w.Start(context.Background())
	t.Cleanup(w.Stop)
	waitLive(t, w, 5*time.Second)

	// Collections must not wait for a failing endpoint.
	for range 5 {
		start := time.Now()
		e.collect(t)
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("a collection took %s", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, "samples at every endpoint", 5*time.Second, func() bool {
		_, a := rec.last("/basic")
		_, b := rec.last("/bearer")
		_, c := rec.last("/unauthorized")
		return a && b && c
	})

	basic, _ := rec.last("/basic")
	if got, want := basic.header.Get("Authorization"), "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:s3cret")); got != want {
		t.Errorf("basic: Authorization %q, want %q", got, want)
	}
	if got := basic.header.Get("X-Custom"); got != "yes" {
		t.Errorf("basic: X-Custom %q", got)
	}
	if got := basic.header.Get("X-Scope-OrgID"); got != "team-a" {
		t.Errorf("basic: X-Scope-OrgID %q, want the tenant", got)
	}
	bearer, _ := rec.last("/bearer")
	if got := bearer.header.Get("Authorization"); got != "Bearer tok" {
		t.Errorf("bearer: Authorization %q", got)
	}
	if got := bearer.header.Values("X-Scope-OrgID"); len(got) != 1 || got[0] != "configured" {
		t.Errorf("bearer: X-Scope-OrgID %q, want only the configured one", got)
	}

	waitFor(t, "the 401 in status", 5*time.Second, func() bool {
		st := w.Status()[2]
		return strings.Contains(st.LastError, "401") && st.SamplesFailed > 0
	})
	for _, st := range w.Status()[:2] {
		if st.LastError != "" || st.SamplesFailed != 0 || st.SamplesSent == 0 {
			t.Errorf("status %+v: want samples sent, no error", st)
		}
	}
	// Prometheus' queue metrics and ours, labelled with the tenant.
	if n, err := testutil.GatherAndCount(reg, "prometheus_remote_storage_samples_failed_total", "spangraph_remote_write_lag_seconds"); err != nil || n != 6 {
		t.Errorf("exported metrics: %d series, err %v; want 3 endpoints × 2", n, err)
	}
}

// TestDefaultTenantHasNoOrgID: the default tenant sends no X-Scope-OrgID.
func TestDefaultTenantHasNoOrgID(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	cfg, err := FromURLs([]string{srv.URL + "/default"})
	if err != nil {
		t.Fatal(err)
	}
	cfg[0].QueueConfig.BatchSendDeadline = 100 * 1e6
	e := &fakeEngine{st: openStore(t, t.TempDir(), tenant.Default), series: 1}
	t.Cleanup(func() { _ = e.st.Close() })
	w := startWriter(t, cfg, tenant.Default, e)
	waitLive(t, w, 5*time.Second)
	e.collect(t)
	waitFor(t, "a request", 5*time.Second, func() bool { _, ok := rec.last("/default"); return ok })
	r, _ := rec.last("/default")
	if got := r.header.Values("X-Scope-OrgID"); len(got) != 0 {
		t.Errorf("X-Scope-OrgID %q for the default tenant", got)
	}
}

// TestCatchUpOrderAndLeadingZero: a catch-up sends in time order across
// series, never splits a timestamp it need not, carries a new series'
// leading zero from before the marker, and applies write_relabel_configs.
func TestCatchUpOrderAndLeadingZero(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	cfg := parseConfig(t, `
remote_write:
  - url: `+srv.URL+`/catchup
    name: c
    write_relabel_configs:
      - {source_labels: [series], regex: "1", action: drop}
    queue_config: {max_samples_per_send: 4}
`)
	dataDir := t.TempDir()
	e := &fakeEngine{st: openStore(t, dataDir, "acme"), series: 3}
	t.Cleanup(func() { _ = e.st.Close() })

	// A marker 10 s ago; collections after it, one series new with a
	// leading zero before the marker.
	now := time.Now().UnixMilli()
	marker0 := now - 10_000
	if err := saveMarker(markerPath(dirOf(e), "c"), marker{URL: cfg[0].URL.Redacted(), ResumeFromMs: marker0}); err != nil {
		t.Fatal(err)
	}
	app := e.st.Appender(context.Background())
	var stamps []int64
	for ts := marker0 + 2000; ts < now; ts += 1000 {
		stamps = append(stamps, ts)
	}
	newSeries := stamps[3]
	zero := newSeries - newSeries%60_000 - 1000
	for _, ts := range stamps {
		for s := range 3 {
			appendSample(t, app, "old", s, ts, float64(ts))
		}
		if ts >= newSeries {
			if ts == newSeries {
				appendSample(t, app, "new", 0, zero, 0)
			}
			appendSample(t, app, "new", 0, ts, 1)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}

	w := startWriter(t, cfg, "acme", e)
	waitLive(t, w, 10*time.Second)

	last := map[string]int64{}
	var got int
	var prevMax int64
	zeroSent := false
	rec.mu.Lock()
	for _, r := range rec.requests {
		if r.path != "/catchup" {
			continue
		}
		var minT, maxT int64 = 1 << 62, 0
		for _, ts := range r.req.Timeseries {
			key := ""
			for _, l := range ts.Labels {
				key += l.Name + "=" + l.Value + ","
				if l.Name == "series" && l.Value == "1" {
					t.Errorf("series 1 sent despite write_relabel_configs")
				}
			}
			for _, s := range ts.Samples {
				if s.Timestamp <= last[key] {
					t.Errorf("%s: sample at %d after %d", key, s.Timestamp, last[key])
				}
				last[key] = s.Timestamp
				zeroSent = zeroSent || s.Timestamp == zero
				if s.Timestamp != zero {
					minT, maxT = min(minT, s.Timestamp), max(maxT, s.Timestamp)
				}
				got++
			}
		}
		// Requests follow time: none goes back before the previous one's
		// newest sample (a leading zero travels with its value).
		if len(r.req.Timeseries) > 0 {
			if minT < prevMax {
				t.Errorf("a request starts at %d, before the previous one's %d", minT, prevMax)
			}
			prevMax = maxT
		}

	}
	rec.mu.Unlock()
	want := len(stamps)*2 + (len(stamps) - 3) + 1
	if got != want || !zeroSent {
		t.Errorf("catch-up sent %d samples (leading zero: %v), want %d", got, zeroSent, want)
	}
	st := w.Status()[0]
	if st.SamplesDropped != float64(len(stamps)) || st.SamplesSent != float64(want) {
		t.Errorf("status %+v: want %d sent, %d dropped by relabelling", st, want, len(stamps))
	}
	w.Stop()
	m, ok, err := loadMarker(markerPath(dirOf(e), "c"))
	if err != nil || !ok || m.ResumeFromMs < now {
		t.Errorf("marker after Stop %+v (ok %v, err %v), want past %d", m, ok, err, now)
	}
}

func dirOf(e *fakeEngine) string {
	return strings.TrimSuffix(e.st.WALDir(), string(os.PathSeparator)+"wal")
}

func appendSample(t *testing.T, app storage.Appender, name string, series int, ts int64, v float64) {
	t.Helper()
	l := labels.FromStrings(labels.MetricName, "spangraph_"+name, "series", strconv.Itoa(series))
	if _, err := app.Append(0, l, ts, v); err != nil {
		t.Fatal(err)
	}
}
