package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlptest"
)

// TestAbuse runs live ingestion next to everything a hostile or careless
// client can send at once: queries that would take gigabytes or overflow
// the stack, oversized requests that amplify when decoded, a crowd of
// tenants, and connections that trickle or idle. Throughout, the server
// stays up and within its memory budget, and every span it accepted
// reaches the store.
//
// SPANGRAPH_ABUSE_DURATION sets how long the abuse lasts (default 15s;
// .ci/soak --abuse runs it for minutes).
func TestAbuse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and abuses it for a while")
	}
	duration := 15 * time.Second
	if v := os.Getenv("SPANGRAPH_ABUSE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SPANGRAPH_ABUSE_DURATION: %v", err)
		}
		duration = d
	}
	const memoryLimit = 512 << 20
	bin := binary(t)
	dir := t.TempDir()
	cfgFile := dir + "/spangraph.yaml"
	if err := os.WriteFile(cfgFile, []byte(`
memory_limit: 512MiB
max_tenants: 4
tenant_idle_timeout: 5s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, dir+"/data", "--config", cfgFile)

	var rss rssSampler
	rss.start(t, s.cmd.Process.Pid)

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	run := func(f func(ctx context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	var accepted, liveRefused atomic.Int64
	var transportErrors atomic.Int64
	var refused sync.Map // what each kind of abuse was answered: "kind status" → count
	count := func(kind string, code int) {
		v, _ := refused.LoadOrStore(fmt.Sprintf("%s %d", kind, code), new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	client := &http.Client{Timeout: 30 * time.Second}

	// Live ingestion: the one tenant that must never lose a span.
	run(func(ctx context.Context) {
		for ctx.Err() == nil {
			// Fresh spans each time: the same ones would fall outside
			// ingestion_slack after 30 s and be refused in partial_success.
			body, _ := proto.Marshal(request("live"))
			code, err := post(client, "http://"+s.otlpHTTP+"/v1/traces", body, "application/x-protobuf", nil)
			switch {
			case err != nil:
				transportErrors.Add(1)
			case code == http.StatusOK:
				accepted.Add(3)
			case code == http.StatusTooManyRequests:
				liveRefused.Add(1)
			default:
				t.Errorf("live ingestion answered %d", code)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	// Queries that would kill an unbounded engine.
	hostile := []string{
		`max_over_time(vector(1)[365d:1ms])`,
		`max_over_time(vector(1)[1d:2ms])`,
		strings.Repeat("abs(", 100_000) + "vector(1)" + strings.Repeat(")", 100_000),
		strings.Repeat("(", 100_000) + "1" + strings.Repeat(")", 100_000),
		strings.TrimSuffix(strings.Repeat("vector(1)+", 100_000), "+"),
	}
	for i := range 4 {
		run(func(ctx context.Context) {
			for j := i; ctx.Err() == nil; j++ {
				q := hostile[j%len(hostile)]
				code, err := post(client, "http://"+s.http+"/api/v1/query", []byte(url.Values{"query": {q}}.Encode()),
					"application/x-www-form-urlencoded", nil)
				if err != nil {
					transportErrors.Add(1)
					continue
				}
				if code == http.StatusOK {
					t.Errorf("hostile query %.40q… was answered 200", q)
				}
				count("query", code)
			}
		})
	}

	// Requests of about 15 MiB that decode into many times that, from
	// another tenant.
	big := amplifiedRequest(t, 15<<20)
	for range 8 {
		run(func(ctx context.Context) {
			for ctx.Err() == nil {
				code, err := post(client, "http://"+s.otlpHTTP+"/v1/traces", big, "application/x-protobuf",
					map[string]string{"X-Scope-OrgID": "amplifier"})
				if err != nil {
					transportErrors.Add(1)
					continue
				}
				count("amplified", code)
			}
		})
	}

	// More tenants than max_tenants, each briefly.
	run(func(ctx context.Context) {
		for i := 0; ctx.Err() == nil; i++ {
			body, _ := proto.Marshal(request("crowd"))
			code, err := post(client, "http://"+s.otlpHTTP+"/v1/traces", body, "application/x-protobuf",
				map[string]string{"X-Scope-OrgID": fmt.Sprintf("crowd-%d", i%12)})
			if err != nil {
				transportErrors.Add(1)
				continue
			}
			count("tenants", code)
			time.Sleep(20 * time.Millisecond)
		}
	})

	// Connections that send a header and then nothing.
	run(func(ctx context.Context) {
		for ctx.Err() == nil {
			var conns []net.Conn
			for _, addr := range []string{s.otlpHTTP, s.http} {
				for range 25 {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						continue
					}
					_, _ = io.WriteString(c, "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
					conns = append(conns, c)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			for _, c := range conns {
				c.Close()
			}
		}
	})

	wg.Wait()
	if err := s.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the server died under abuse: %v", err)
	}
	if n := transportErrors.Load(); n > 0 {
		t.Errorf("%d requests failed at the transport (the server dropped connections it should have answered)", n)
	}
	refused.Range(func(k, v any) bool {
		t.Logf("answers: %s × %d", k, v.(*atomic.Int64).Load())
		return true
	})
	if accepted.Load() == 0 {
		t.Fatal("live ingestion got no span accepted")
	}
	// Huge requests may not shut an ordinary exporter out: they may fill
	// only three quarters of the request gate.
	if r, a := liveRefused.Load(), accepted.Load()/3; r > (r+a)/10 {
		t.Errorf("live ingestion: %d of %d requests refused with 429", r, r+a)
	}
	want := float64(accepted.Load())
	eventually(t, "every accepted live span in the store", func() string {
		if got := countedCalls(t, s.http, "live"); got != want {
			return fmt.Sprintf("calls_total{service=live} counted %v, accepted %v", got, want)
		}
		return ""
	})
	peak := rss.stop()
	t.Logf("accepted %d live spans in %s; peak RSS %d MiB with memory_limit %d MiB", accepted.Load(), duration, peak>>20, memoryLimit>>20)
	// The budget bounds what grows with load; the Go runtime, code and
	// the TSDB's fixed structures come on top, within a quarter more.
	if peak > memoryLimit*5/4 {
		t.Fatalf("peak RSS %d MiB over memory_limit %d MiB + 25%%", peak>>20, memoryLimit>>20)
	}
}

// countedCalls adds up every call of service in the store, across the
// counter resets of a tenant that was closed when idle and reopened.
func countedCalls(t *testing.T, httpAddr, service string) float64 {
	t.Helper()
	return counterTotal(t, httpAddr, `traces_spanmetrics_calls_total{service="`+service+`"}`)
}

// counterTotal adds up the counters sel picks from their raw samples of
// the last hour, through the query API at addr (Spangraph's or
// Prometheus'), across counter resets (a restarted or reopened tenant
// counts from zero again): the last value before each reset, and the last
// one, as rate() counts them but without extrapolating.
func counterTotal(t *testing.T, addr, sel string) float64 {
	t.Helper()
	q := sel + `[1h]`
	code, body := apiGet(t, addr, "/api/v1/query", url.Values{"query": {q}}, nil)
	var pr struct {
		Data struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &pr); code != http.StatusOK || err != nil {
		t.Fatalf("query %s: %d %v %s", q, code, err, body)
	}
	total := 0.0
	for _, r := range pr.Data.Result {
		last := 0.0
		for _, v := range r.Values {
			f, _ := strconv.ParseFloat(v[1].(string), 64)
			if f < last {
				total += last
			}
			last = f
		}
		total += last
	}
	return total
}

func post(client *http.Client, u string, body []byte, contentType string, h map[string]string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// amplifiedRequest is an export request of about size bytes whose spans
// carry as many tiny attributes as fit: a few bytes each on the wire, tens
// of bytes each decoded.
func amplifiedRequest(t *testing.T, size int) []byte {
	t.Helper()
	attrs := make([]*commonpb.KeyValue, 1000)
	for i := range attrs {
		attrs[i] = otlptest.Int(strconv.Itoa(i%10), 1)
	}
	span := otlptest.Span(7, "amp", tracepb.Span_SPAN_KIND_SERVER, time.Now(), time.Millisecond, attrs...)
	one := proto.Size(span)
	spans := make([]*tracepb.Span, size/one)
	for i := range spans {
		spans[i] = span
	}
	return otlptest.Marshal(t, otlptest.Request(otlptest.Service("amplifier", spans...)))
}

// rssSampler records the peak resident memory of a process.
type rssSampler struct {
	peak atomic.Int64
	done chan struct{}
	wg   sync.WaitGroup
}

func (r *rssSampler) start(t *testing.T, pid int) {
	r.done = make(chan struct{})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			if v, err := rssOf(pid); err == nil && v > r.peak.Load() {
				r.peak.Store(v)
			}
			select {
			case <-r.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { r.stop() })
}

func (r *rssSampler) stop() int64 {
	select {
	case <-r.done:
	default:
		close(r.done)
	}
	r.wg.Wait()
	return r.peak.Load()
}

// rssOf reads VmRSS from /proc.
func rssOf(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}
