package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
)

// binary builds the spangraph command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "spangraph")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("building spangraph: %v", err)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a spangraph serve process on loopback ports.
type process struct {
	cmd                  *exec.Cmd
	grpc, otlpHTTP, http string
	log                  *otlptest.LogBuffer
}

func startServer(t *testing.T, bin, dataDir string, extra ...string) *process {
	t.Helper()
	return startServerOn(t, bin, dataDir, &process{grpc: freePort(t), otlpHTTP: freePort(t), http: freePort(t)}, extra...)
}

// startServerOn starts a server on the ports of s.
func startServerOn(t *testing.T, bin, dataDir string, s *process, extra ...string) *process {
	t.Helper()
	s.log = &otlptest.LogBuffer{}
	args := append([]string{"serve", "--data-dir", dataDir, "--otlp-grpc", s.grpc, "--otlp-http", s.otlpHTTP,
		"--http", s.http, "--collection-interval", "1s"}, extra...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + s.http + "/-/ready"); err == nil {
			resp.Body.Close()
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server did not become ready; log:\n%s", s.log.String())
	return nil
}

// request makes three SERVER spans "op" of service: 1 ms and 20 ms that
// succeed and 5 ms that fails, ending now.
func request(service string) *coltracepb.ExportTraceServiceRequest {
	now := time.Now()
	failed := otlptest.Span(3, "op", tracepb.Span_SPAN_KIND_SERVER, now, 5*time.Millisecond)
	failed.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	return otlptest.Request(otlptest.Service(service,
		otlptest.Span(1, "op", tracepb.Span_SPAN_KIND_SERVER, now, time.Millisecond),
		otlptest.Span(2, "op", tracepb.Span_SPAN_KIND_SERVER, now, 20*time.Millisecond),
		failed))
}

func postOTLP(t *testing.T, addr, contentType string, body []byte, gz bool) {
	t.Helper()
	if gz {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = buf.Bytes()
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/traces", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", contentType, resp.StatusCode, out)
	}
}

type promResponse struct {
	Status string `json:"status"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
	Error string `json:"error"`
}

// instant runs a PromQL query and returns value by the given label's value.
func instant(t *testing.T, addr, q, by string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pr promResponse
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		t.Fatal(err)
	}
	if pr.Status != "success" {
		t.Fatalf("query %s: %s", q, pr.Error)
	}
	out := map[string]float64{}
	for _, r := range pr.Data.Result {
		v, _ := strconv.ParseFloat(r.Value[1].(string), 64)
		out[r.Metric[by]] = v
	}
	return out
}

// eventually polls f until it returns "" or the deadline passes.
func eventually(t *testing.T, what string, f func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		if last = f(); last == "" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: %s", what, last)
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := binary(t)
	dataDir := t.TempDir()
	srv := startServer(t, bin, dataDir)

	// The same three spans over every transport and encoding.
	conn, err := grpc.NewClient(srv.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := coltracepb.NewTraceServiceClient(conn).Export(context.Background(), request("via-grpc"))
	if err != nil {
		t.Fatalf("gRPC export: %v", err)
	}
	if resp.GetPartialSuccess().GetRejectedSpans() != 0 {
		t.Fatalf("gRPC export rejected spans: %v", resp.PartialSuccess)
	}
	gzResp, err := coltracepb.NewTraceServiceClient(conn).Export(context.Background(), request("via-grpc-gzip"), grpc.UseCompressor("gzip"))
	if err != nil || gzResp.GetPartialSuccess().GetRejectedSpans() != 0 {
		t.Fatalf("gRPC gzip export: %v %v", err, gzResp)
	}
	pb, _ := proto.Marshal(request("via-http-proto"))
	postOTLP(t, srv.otlpHTTP, "application/x-protobuf", pb, false)
	pbz, _ := proto.Marshal(request("via-http-gzip"))
	postOTLP(t, srv.otlpHTTP, "application/x-protobuf", pbz, true)
	js, err := otlp.MarshalJSON(request("via-http-json"))
	if err != nil {
		t.Fatal(err)
	}
	postOTLP(t, srv.otlpHTTP, "application/json", js, false)

	// A client span in one request, its server span in another: an edge.
	now := time.Now()
	clientSpan := otlptest.Span(9, "call", tracepb.Span_SPAN_KIND_CLIENT, now, 30*time.Millisecond)
	clientSpan.SpanId = bytes.Repeat([]byte{7}, 8)
	serverSpan := otlptest.Span(9, "handle", tracepb.Span_SPAN_KIND_SERVER, now, 20*time.Millisecond)
	serverSpan.SpanId, serverSpan.ParentSpanId = bytes.Repeat([]byte{8}, 8), clientSpan.SpanId
	serverSpan.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	for _, side := range []struct {
		service string
		span    *tracepb.Span
	}{{"edge-client", clientSpan}, {"edge-server", serverSpan}} {
		body := otlptest.Marshal(t, otlptest.Request(otlptest.Service(side.service, side.span)))
		postOTLP(t, srv.otlpHTTP, "application/x-protobuf", body, false)
	}
	eventually(t, "service graph edge", func() string {
		total := instant(t, srv.http, `traces_service_graph_request_total{client="edge-client"}`, "server")
		failedEdges := instant(t, srv.http, `traces_service_graph_request_failed_total{client="edge-client"}`, "server")
		if total["edge-server"] != 1 || failedEdges["edge-server"] != 1 {
			return fmt.Sprintf("edge counts total=%v failed=%v", total, failedEdges)
		}
		resp, err := http.Get("http://" + srv.http + "/api/v1/service-graph?service=edge-server&depth=1")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), `"id":"edge-client->edge-server"`) {
			return "service-graph API: " + string(body)
		}
		return ""
	})

	services := []string{"via-grpc", "via-grpc-gzip", "via-http-proto", "via-http-gzip", "via-http-json"}
	check := func() string {
		ok := instant(t, srv.http, `traces_spanmetrics_calls_total{span_name="op",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_UNSET"}`, "service")
		failed := instant(t, srv.http, `traces_spanmetrics_calls_total{status_code="STATUS_CODE_ERROR"}`, "service")
		// 1 ms and 20 ms succeeded: one is within 4 ms, both within 32 ms.
		le4 := instant(t, srv.http, `traces_spanmetrics_latency_bucket{status_code="STATUS_CODE_UNSET",le="0.004"}`, "service")
		le32 := instant(t, srv.http, `traces_spanmetrics_latency_bucket{status_code="STATUS_CODE_UNSET",le="0.032"}`, "service")
		count := instant(t, srv.http, `sum by (service) (traces_spanmetrics_latency_count)`, "service")
		for _, s := range services {
			if ok[s] != 2 || failed[s] != 1 || le4[s] != 1 || le32[s] != 2 || count[s] != 3 {
				return fmt.Sprintf("%s: calls ok=%v failed=%v, buckets le4=%v le32=%v, count=%v", s, ok[s], failed[s], le4[s], le32[s], count[s])
			}
		}
		return ""
	}
	eventually(t, "span metrics after OTLP traffic", check)

	// increase() sees the first spans thanks to the leading zero.
	inc := instant(t, srv.http, `sum by (service) (increase(traces_spanmetrics_calls_total[5m]))`, "service")
	for _, s := range services {
		if inc[s] < 2.5 {
			t.Errorf("increase() for %s = %v, want about 3", s, inc[s])
		}
	}

	// A crash loses nothing that was collected: kill -9, restart, same data.
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = srv.cmd.Wait()
	srv2 := startServer(t, bin, dataDir)
	if msg := func() string { srv.http = srv2.http; return check() }(); msg != "" {
		t.Fatalf("after kill -9 and restart: %s", msg)
	}
	if !strings.Contains(srv2.log.String(), "WAL replay completed") {
		t.Errorf("restart did not replay the WAL; log:\n%s", srv2.log.String())
	}
}
