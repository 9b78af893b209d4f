package plugin

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/cluster"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/remotewrite"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// CheckHealth says whether the process receives and stores spans, in words
// that tell a person what to do next. No traffic is not an error: a fresh
// install has none, and the message says how to send some.
func (i *Instance) CheckHealth(ctx context.Context, _ *backend.CheckHealthRequest) (*backend.CheckHealthResult, error) {
	if err := i.svc.failure(); err != nil {
		return &backend.CheckHealthResult{Status: backend.HealthStatusError, Message: err.Error()}, nil
	}
	cfg := i.svc.eng.Config()
	h := i.svc.eng.Health(i.settings.Tenant)
	ok := h.OK()
	var parts []string

	var listening, broken []string
	for _, r := range h.Receivers {
		if r.Bound == "" {
			broken = append(broken, fmt.Sprintf("%s is not listening on %s (%s)", r.Name, r.Want, r.Key))
		} else {
			listening = append(listening, r.Name+" "+r.Bound)
		}
	}
	if len(broken) > 0 {
		parts = append(parts, strings.Join(broken, ", "))
	}
	switch {
	case len(listening) > 0:
		parts = append(parts, "Spangraph is receiving: "+strings.Join(listening, ", "))
	case len(broken) == 0:
		parts = append(parts, "Spangraph receives only through Grafana (otlp_grpc and otlp_http are off): POST to this datasource's resource otlp/v1/traces")
	}

	n, over := i.svc.spans.last(time.Now())
	if n > 0 {
		parts = append(parts, fmt.Sprintf("%d spans in the last %s", n, describeWindow(over)))
	} else {
		parts = append(parts, "no spans received in the last "+describeWindow(over)+": "+i.howToSend())
	}

	switch o := h.Open; {
	case h.Tenant.State == engine.TenantQuarantined:
		parts = append(parts, h.Tenant.Problem)
	case o == nil && h.Tenant.State == engine.TenantClosed:
		parts = append(parts, fmt.Sprintf("tenant %q is closed, idle for tenant_idle_timeout (%s): its data is on disk and it opens on its next span or query",
			i.settings.Tenant, cfg.TenantIdleTimeout))
	case o == nil:
		parts = append(parts, fmt.Sprintf("tenant %q has no data yet", i.settings.Tenant))
	default:
		parts = append(parts, fmt.Sprintf("%d active series", o.ActiveSeries))
		switch age := time.Since(o.LastCollection); {
		case o.LastCollection.IsZero():
			parts = append(parts, fmt.Sprintf("first collection within %s", cfg.CollectionInterval))
		case o.CollectionLate:
			parts = append(parts, fmt.Sprintf("last collection %s ago although collections run every %s: writing to %s fails (full disk?); the Grafana server log has the plugin's error",
				age.Round(time.Second), cfg.CollectionInterval, cfg.DataDir))
		default:
			parts = append(parts, fmt.Sprintf("last collection %s ago", age.Round(time.Second)))
		}
		if st := o.EdgeStore; st != nil && st.Dropped > 0 {
			parts = append(parts, fmt.Sprintf("service graph edge store full (%d of %d half edges): %d spans dropped from the graph; raise servicegraph.max_items or memory_limit, or lower servicegraph.wait",
				st.Pending, st.Capacity, st.Dropped))
		}
		for _, rw := range o.RemoteWrite {
			msg, good := remoteWriteHealth(rw, cfg.CollectionInterval)
			ok = ok && good
			parts = append(parts, msg)
		}
	}

	if r := h.Ring; r != nil {
		parts = append(parts, ringHealth(*r))
	}
	if b := i.svc.backend; b != nil {
		if err := b.Check(ctx); err != nil {
			ok = false
			parts = append(parts, fmt.Sprintf("reads go to query_backend %s, which does not answer: %v", b, err))
		} else {
			parts = append(parts, fmt.Sprintf("reads go to query_backend %s", b))
		}
	}

	status := backend.HealthStatusOk
	if !ok {
		status = backend.HealthStatusError
	}
	return &backend.CheckHealthResult{Status: status, Message: strings.Join(parts, "; ")}, nil
}

// ringHealth describes the ring as this instance sees it.
func ringHealth(r cluster.Health) string {
	var members []string
	for _, m := range r.Members {
		state := m.State
		if !m.Healthy && m.State == "ACTIVE" {
			state = "no heartbeat since " + m.LastHeartbeat.UTC().Format(time.TimeOnly)
		}
		members = append(members, fmt.Sprintf("%s %s %.0f %%", m.ID, state, 100*m.OwnedFraction))
	}
	msg := fmt.Sprintf("ring: %d members, %d healthy (%s)", len(r.Members), r.Healthy, strings.Join(members, ", "))
	if r.State != "ACTIVE" {
		msg = fmt.Sprintf("this instance (%s) is not ACTIVE in its ring but %q: its spans cannot be routed; ", r.InstanceID, r.State) + msg
	}
	return msg
}

func (i *Instance) howToSend() string {
	header := ""
	if i.settings.Tenant != tenant.Default {
		header = fmt.Sprintf(" with header X-Scope-OrgID: %s", i.settings.Tenant)
	}
	var targets []string
	if a := i.svc.eng.Receiver().GRPCAddr(); a != "" {
		targets = append(targets, "OTLP/gRPC "+auth.DialAddr(a, "<grafana-host>"))
	}
	if a := i.svc.eng.Receiver().HTTPAddr(); a != "" {
		targets = append(targets, "OTLP/HTTP http://"+auth.DialAddr(a, "<grafana-host>")+"/v1/traces")
	}
	targets = append(targets, "Grafana's /api/datasources/uid/"+i.uid+"/resources/otlp/v1/traces")
	return "point an OpenTelemetry SDK or Collector at " + strings.Join(targets, " or ") + header
}

// describeWindow names the span of time a count covers: a minute, or
// less just after the plugin started.
func describeWindow(d time.Duration) string {
	if d >= 55*time.Second {
		return "minute"
	}
	return d.Round(time.Second).String() + " (since the plugin started)"
}

// rateTracker samples a monotonic counter so that health can tell how
// much it grew over the last window, however rarely health is checked.
type rateTracker struct {
	read     func() int64
	window   time.Duration
	mu       sync.Mutex
	samples  []rateSample // oldest first, spanning at most window
	done     chan struct{}
	stopOnce sync.Once
}

type rateSample struct {
	t time.Time
	v int64
}

func newRateTracker(read func() int64, window time.Duration, slots int) *rateTracker {
	t := &rateTracker{read: read, window: window, done: make(chan struct{})}
	t.sample(time.Now())
	go t.loop(window / time.Duration(slots))
	return t
}

func (t *rateTracker) loop(every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case now := <-tick.C:
			t.sample(now)
		}
	}
}

func (t *rateTracker) sample(now time.Time) {
	v := t.read()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.samples = append(t.samples, rateSample{now, v})
	// Keep the newest sample at least window old, as the baseline.
	for len(t.samples) > 1 && now.Sub(t.samples[1].t) >= t.window {
		t.samples = t.samples[1:]
	}
}

// last returns the counter's growth since the oldest sample still in the
// window and how long ago that sample was taken (less than window just
// after start).
func (t *rateTracker) last(now time.Time) (int64, time.Duration) {
	v := t.read()
	t.mu.Lock()
	defer t.mu.Unlock()
	base := t.samples[0]
	for _, s := range t.samples {
		if now.Sub(s.t) < t.window {
			break
		}
		base = s
	}
	return v - base.v, now.Sub(base.t)
}

func (t *rateTracker) stop() { t.stopOnce.Do(func() { close(t.done) }) }

// remoteWriteHealth describes one endpoint; it is bad when the endpoint
// has fallen more than ten collections behind or refuses everything.
func remoteWriteHealth(rw remotewrite.EndpointStatus, interval time.Duration) (string, bool) {
	msg := fmt.Sprintf("remote write %s (%s): %.0f samples sent", rw.Name, rw.URL, rw.SamplesSent)
	good := true
	if rw.CatchingUp {
		msg += ", catching up after a restart"
	}
	if !rw.HighestSent.IsZero() {
		msg += fmt.Sprintf(", %s behind", rw.Lag.Round(time.Second))
		if rw.Lag > 10*interval {
			good = false
		}
	}
	if rw.SamplesFailed > 0 {
		msg += fmt.Sprintf(", %.0f refused for good", rw.SamplesFailed)
		if rw.SamplesSent == 0 {
			good = false
		}
	}
	if rw.LastError != "" {
		msg += "; last error: " + rw.LastError
	}
	return msg, good
}
