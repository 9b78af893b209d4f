package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/loadgen"
)

// ringMember is one instance of a test ring: its process and what it needs
// to start again with the same identity.
type ringMember struct {
	*process
	id, gossip, dataDir string
	args                []string
}

// startRing starts n serve processes on loopback that form one ring and
// remote-write to prom, and waits until each sees all n healthy.
func startRing(t *testing.T, bin, prom, cfgFile string, n int) []*ringMember {
	t.Helper()
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = freePort(t)
	}
	members := make([]*ringMember, n)
	for i := range members {
		m := &ringMember{id: fmt.Sprintf("node-%d", i), gossip: gossip[i], dataDir: t.TempDir()}
		m.args = []string{"--config", cfgFile, "--remote-write-url", "http://" + prom + "/api/v1/write",
			"--cluster-join", strings.Join(gossip, ","), "--cluster-listen", m.gossip,
			"--cluster-advertise", "127.0.0.1", "--cluster-instance-id", m.id}
		m.process = startServer(t, bin, m.dataDir, m.args...)
		members[i] = m
	}
	for _, m := range members {
		waitHealthy(t, m, n)
	}
	return members
}

// restart starts m again on its ports, data and identity.
func (m *ringMember) restart(t *testing.T, bin string) {
	t.Helper()
	m.process = startServerOn(t, bin, m.dataDir, &process{grpc: m.grpc, otlpHTTP: m.otlpHTTP, http: m.http}, m.args...)
}

// ringHealth is the part of /-/health that tells the ring.
type ringHealth struct {
	Ring struct {
		State   string `json:"state"`
		Healthy int    `json:"healthy"`
	} `json:"ring"`
}

// healthyMembers returns how many healthy members m sees, -1 when it
// cannot tell. It may run on any goroutine.
func healthyMembers(m *ringMember) int {
	resp, err := http.Get("http://" + m.http + "/-/health")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var h ringHealth
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return -1
	}
	return h.Ring.Healthy
}

func waitHealthy(t *testing.T, m *ringMember, n int) {
	t.Helper()
	eventually(t, m.id+" sees the ring", func() string {
		if got := healthyMembers(m); got != n {
			return fmt.Sprintf("%d healthy members, want %d", got, n)
		}
		return ""
	})
}

// promVector evaluates q on Prometheus and returns each series' value by
// its labels.
func promVector(t *testing.T, prom, q string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + prom + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pr struct {
		Status, Error string
		Data          struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		t.Fatal(err)
	}
	if pr.Status != "success" {
		t.Fatalf("%s: %s", q, pr.Error)
	}
	out := map[string]float64{}
	for _, r := range pr.Data.Result {
		var ls []string
		for k, v := range r.Metric {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		v, _ := strconv.ParseFloat(r.Value[1].(string), 64)
		out[strings.Join(ls, ",")] = v
	}
	return out
}

// selfMetric sums the samples of a self-metric of m whose line matches re.
func selfMetric(t *testing.T, m *process, re string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + m.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := regexp.MustCompile(re)
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "#") || !r.MatchString(line) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// spray sends spans of the shop over endpoints, round-robin, at rate
// spans/s (0: as fast as accepted). A run of a given number of spans has
// one sender, so that the same seed sends the same traces.
func spray(t *testing.T, endpoints []string, spans int64, rate float64, split bool, seed uint64, d time.Duration) loadgen.Report {
	t.Helper()
	o := loadgen.DefaultOptions()
	o.Endpoint, o.Spans, o.Rate, o.Duration, o.SplitByService, o.Seed = strings.Join(endpoints, ","), spans, rate, d, split, seed
	if spans > 0 {
		o.Concurrency = 1
	}
	o.TracesPerRequest = 20
	rep, err := loadgen.Run(context.Background(), o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// The figures a ring must reproduce, by series, as Prometheus sums them;
// sel picks the ring's series or the single instance's.
var ringFigures = []string{
	`sum by (service, span_name, span_kind, status_code) (traces_spanmetrics_calls_total{%s})`,
	`sum by (service, le) (traces_spanmetrics_latency_bucket{%s})`,
	`sum by (client, server, connection_type) (traces_service_graph_request_total{%s})`,
	`sum by (client, server) (traces_service_graph_request_failed_total{%s})`,
	`sum by (client, server, le) (traces_service_graph_request_server_seconds_bucket{%s})`,
}

// forwardFailed matches the self-metric of spans the ring could not hand
// to their owner.
const forwardFailed = `^spangraph_receiver_spans_rejected_total\{.*reason="forward_failed"`

const (
	ringSeries   = `__metrics_gen_instance=~"node-.*"`
	singleSeries = `__metrics_gen_instance=""`
)

// TestRing: three `spangraph serve` instances in a ring, sprayed
// round-robin with whole traces and with each service's spans apart, write
// to one Prometheus exactly the figures one instance writes of the same
// traces. Then an instance is killed: within the heartbeat timeout the
// others skip it, and every span sent meanwhile is either stored or
// refused to the sender and counted; an instance stopped cleanly loses
// nothing.
func TestRing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus and four servers")
	}
	bin := binary(t)
	prom := startPrometheus(t)
	cfgFile := filepath.Join(t.TempDir(), "spangraph.yaml")
	// Edges to databases and peers that never answer settle after wait.
	if err := os.WriteFile(cfgFile, []byte("servicegraph:\n  wait: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ring := startRing(t, bin, prom, cfgFile, 3)
	single := startServer(t, bin, t.TempDir(), "--config", cfgFile, "--remote-write-url", "http://"+prom+"/api/v1/write")

	var ringHTTP []string
	for _, m := range ring {
		ringHTTP = append(ringHTTP, "http://"+m.otlpHTTP)
	}
	const n = 40_000
	var sent int64
	for i, split := range []bool{false, true} {
		for _, to := range [][]string{ringHTTP, {"http://" + single.otlpHTTP}} {
			rep := spray(t, to, n, 0, split, uint64(i+1), 0)
			if rep.Spans != n || rep.SpansRefused != 0 {
				t.Fatalf("split %v to %v: %d spans accepted, %d refused (%v), want %d and none", split, to, rep.Spans, rep.SpansRefused, rep.Refusals, n)
			}
		}
		sent += n
	}
	promCalls := func(sel string) float64 {
		return promVector(t, prom, `sum(traces_spanmetrics_calls_total{`+sel+`})`)[""]
	}
	eventually(t, "every span in Prometheus", func() string {
		if r, s := promCalls(ringSeries), promCalls(singleSeries); r != float64(sent) || s != float64(sent) {
			return fmt.Sprintf("the ring wrote %v calls, the single instance %v, want %d each", r, s, sent)
		}
		return ""
	})
	for _, f := range ringFigures {
		eventually(t, "the ring's figures equal the single instance's", func() string {
			r, s := promVector(t, prom, fmt.Sprintf(f, ringSeries)), promVector(t, prom, fmt.Sprintf(f, singleSeries))
			if len(s) == 0 {
				return "no series for " + f
			}
			for k, v := range s {
				if r[k] != v {
					return fmt.Sprintf("%s: %s is %v from the ring, %v from one instance", f, k, r[k], v)
				}
			}
			if len(r) != len(s) {
				return fmt.Sprintf("%s: %d series from the ring, %d from one instance", f, len(r), len(s))
			}
			return ""
		})
	}
	perInstance := promVector(t, prom, `sum by (__metrics_gen_instance) (traces_spanmetrics_calls_total{`+ringSeries+`})`)
	if len(perInstance) != 3 {
		t.Errorf("series from %d instances, want 3: %v", len(perInstance), perInstance)
	}
	t.Logf("%d spans counted the same by the ring as by one instance; by instance: %v", sent, perInstance)

	// kill -9, traffic resuming at once over the two others: until the
	// heartbeat times out they still forward the dead member's traces,
	// which fails and is refused to the sender.
	failedBefore := selfMetric(t, ring[0].process, forwardFailed) + selfMetric(t, ring[1].process, forwardFailed)
	ring[2].kill9(t)
	killed := time.Now()
	healed := make(chan time.Duration, 1)
	go func() {
		for healthyMembers(ring[0]) != 2 && time.Since(killed) < time.Minute {
			time.Sleep(100 * time.Millisecond)
		}
		healed <- time.Since(killed)
	}()
	survivors := []string{ringHTTP[0], ringHTTP[1]}
	rep := spray(t, survivors, 0, 4000, true, 9, 10*time.Second)
	heal := <-healed
	// cluster.heartbeat_timeout is 5s; heartbeats are stamped in whole
	// seconds and gossiped.
	if heal > 8*time.Second {
		t.Errorf("the ring took %s to skip a killed member", heal)
	}
	failed := selfMetric(t, ring[0].process, forwardFailed) + selfMetric(t, ring[1].process, forwardFailed) - failedBefore
	if float64(rep.SpansRefused) != failed {
		t.Errorf("after the kill the senders were refused %d spans, the ring counted %v forward_failed", rep.SpansRefused, failed)
	}
	sent += rep.Spans
	t.Logf("kill -9: healed in %s; %d spans accepted, %d refused and counted as forward_failed while the ring healed",
		heal.Round(100*time.Millisecond), rep.Spans, rep.SpansRefused)
	// It comes back with its data; its counters start again from zero
	// (its checkpoint predates its last collection), which totals count
	// as Prometheus' rate() does, across resets.
	ring[2].restart(t, bin)
	waitHealthy(t, ring[0], 3)
	waitHealthy(t, ring[1], 3)
	// Its remote write first sends what the kill kept from Prometheus; a
	// stop before that ends leaves the rest to its next start.
	eventually(t, "node-2 ships live", func() string {
		calls(t, ring[2].http, "") // a query opens the tenant, and its remote write
		resp, err := http.Get("http://" + ring[2].http + "/-/health?tenant=single-tenant")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		var h struct {
			Open struct {
				RemoteWrite []struct{ CatchingUp bool } `json:"remote_write"`
			} `json:"open"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			return err.Error()
		}
		if len(h.Open.RemoteWrite) != 1 || h.Open.RemoteWrite[0].CatchingUp {
			return fmt.Sprintf("remote write %+v", h.Open.RemoteWrite)
		}
		return ""
	})
	eventually(t, "every span accepted before the clean stop is in Prometheus", func() string {
		if r := counterTotal(t, prom, `traces_spanmetrics_calls_total{`+ringSeries+`}`); r != float64(sent) {
			return fmt.Sprintf("the ring wrote %v calls, the senders had %d accepted", r, sent)
		}
		return ""
	})

	// A clean stop under traffic: the member leaves the ring before its
	// receiver closes, so nothing sent to the others is refused.
	done := make(chan loadgen.Report)
	go func() { done <- spray(t, survivors, 0, 4000, true, 11, 6*time.Second) }()
	time.Sleep(2 * time.Second)
	if err := ring[2].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = ring[2].cmd.Wait()
	rep = <-done
	if rep.SpansRefused != 0 {
		t.Errorf("a clean stop made the ring refuse %d spans (%v): %s", rep.SpansRefused, rep.Refusals, rep.LastError)
	}
	sent += rep.Spans
	// Its store has everything it counted; what its remote write had not
	// shipped when it stopped (the last collections, when the machine is
	// loaded) goes when it starts again.
	ring[2].restart(t, bin)
	eventually(t, "every span accepted is in Prometheus", func() string {
		calls(t, ring[2].http, "") // a query opens the tenant, and its remote write
		if r := counterTotal(t, prom, `traces_spanmetrics_calls_total{`+ringSeries+`}`); r != float64(sent) {
			return fmt.Sprintf("the ring wrote %v calls, the senders had %d accepted", r, sent)
		}
		return ""
	})
}
