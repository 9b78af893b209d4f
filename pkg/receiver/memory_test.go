package receiver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// tinyAttrRequest encodes a request of about size bytes: spans of 100
// one-letter attributes each, the worst case for decoded size per byte.
func tinyAttrRequest(size int) []byte {
	now := uint64(time.Now().UnixNano())
	kv := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("a"))
	kv = protowire.AppendTag(kv, 2, protowire.BytesType)
	kv = protowire.AppendBytes(kv, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("b")))
	var span []byte
	span = protowire.AppendBytes(protowire.AppendTag(span, 1, protowire.BytesType), bytes.Repeat([]byte{1}, 16))
	span = protowire.AppendBytes(protowire.AppendTag(span, 2, protowire.BytesType), bytes.Repeat([]byte{2}, 8))
	span = protowire.AppendBytes(protowire.AppendTag(span, 5, protowire.BytesType), []byte("op"))
	span = protowire.AppendVarint(protowire.AppendTag(span, 6, protowire.VarintType), 2)
	span = protowire.AppendFixed64(protowire.AppendTag(span, 7, protowire.Fixed64Type), now-1e6)
	span = protowire.AppendFixed64(protowire.AppendTag(span, 8, protowire.Fixed64Type), now)
	for range 100 {
		span = protowire.AppendBytes(protowire.AppendTag(span, 9, protowire.BytesType), kv)
	}
	var scope []byte
	for len(scope) < size {
		scope = protowire.AppendBytes(protowire.AppendTag(scope, 2, protowire.BytesType), span)
	}
	rs := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), scope)
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), rs)
}

// heapPeak samples HeapInuse until stop is called, which returns the peak
// above the level when it started.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		return peak.Load() - min(base, peak.Load())
	}
}

// rawBytes is a request already encoded, sent by rawClientCodec as it is,
// so that the client holds one copy for all its calls.
type rawBytes []byte

type rawClientCodec struct{}

func (rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*rawBytes))}, nil
}

func (rawClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawClientCodec) Name() string { return "proto" }

// TestMemoryBurst: 16 concurrent large requests of tiny attributes against
// a 64 MiB max_queue_bytes and a consumer that blocks. Before, each was
// decoded in full before the queue looked at it (6–7 GB for 16 × 15 MiB);
// now the gate stops them while they are read or decoded: the sender gets
// the retryable refusal, only what fits is answered 200, and the heap
// stays within the budget plus a margin.
func TestMemoryBurst(t *testing.T) {
	const budget = 64 << 20
	// The budget counts live memory; with GOGC at 20 the garbage the heap
	// may hold on top is a fifth of it. The margin covers that, the gRPC
	// transport's copy of messages it reads before the codec can charge
	// them, refused batches not collected yet, and the clients' buffers.
	const margin = 96 << 20
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	pb := tinyAttrRequest(4 << 20)
	// The JSON of 1 MiB of protobuf is about 4 MiB.
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(tinyAttrRequest(1<<20), &req); err != nil {
		t.Fatal(err)
	}
	js, err := otlp.MarshalJSON(&req)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		body []byte
		send func(r *Receiver, body []byte) (ok bool, refusal string)
	}{
		{"http protobuf", pb, func(r *Receiver, body []byte) (bool, string) {
			return postBurst(r, "application/x-protobuf", body)
		}},
		{"http json", js, func(r *Receiver, body []byte) (bool, string) {
			return postBurst(r, "application/json", body)
		}},
		{"grpc", pb, exportBurst},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			rec.block = make(chan struct{})
			cfg := DefaultConfig()
			cfg.MaxRequestBytes = 16 << 20
			cfg.MaxQueueBytes = budget
			cfg.Workers = 1
			r := start(t, cfg, rec)
			defer func() { close(rec.block); r.Stop(context.Background()) }()
			refusedBefore := testutil.ToFloat64(requestsRejected.WithLabelValues(protocolOf(tc.name), ReasonMemory))

			stop := heapPeak()
			var wg sync.WaitGroup
			var ok, refused atomic.Int64
			var mu sync.Mutex
			var bad []string
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					accepted, refusal := tc.send(r, tc.body)
					switch {
					case accepted:
						ok.Add(1)
					case refusal == "":
						refused.Add(1)
					default:
						mu.Lock()
						bad = append(bad, refusal)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			peak := stop()
			t.Logf("%d answered 200, %d refused with a retry hint; heap peak %d MiB above the start", ok.Load(), refused.Load(), peak>>20)
			if len(bad) > 0 {
				t.Fatalf("answers other than success or a retryable refusal: %q", bad)
			}
			if refused.Load() == 0 {
				t.Error("no request was refused")
			}
			if ok.Load() == 0 {
				t.Error("no request was accepted")
			}
			if got := int64(testutil.ToFloat64(requestsRejected.WithLabelValues(protocolOf(tc.name), ReasonMemory)) - refusedBefore); got != refused.Load() {
				t.Errorf("requests_rejected_total{reason=memory} rose by %d, want %d", got, refused.Load())
			}
			// The consumer holds every accepted batch, so all of them are
			// charged at once.
			if used := r.gate.used.Load(); used > budget {
				t.Errorf("the gate holds %d bytes, over max_queue_bytes", used)
			}
			if peak > budget+margin {
				t.Errorf("heap peak %d MiB above the start, want at most %d MiB (max_queue_bytes + margin)", peak>>20, (budget+margin)>>20)
			}
		})
	}
}

func protocolOf(name string) string {
	if strings.HasPrefix(name, "grpc") {
		return protocolGRPC
	}
	return protocolHTTP
}

// postBurst posts body; it reports success, "" for a 429 with
// Retry-After, or what else came back.
func postBurst(r *Receiver, contentType string, body []byte) (bool, string) {
	resp, err := http.Post("http://"+r.HTTPAddr()+"/v1/traces", contentType, bytes.NewReader(body))
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	switch {
	case resp.StatusCode == http.StatusOK:
		return true, ""
	case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "":
		return false, ""
	}
	return false, fmt.Sprintf("status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
}

// exportBurst exports body over gRPC; it reports success, "" for
// ResourceExhausted with RetryInfo, or what else came back.
func exportBurst(r *Receiver, body []byte) (bool, string) {
	conn, err := grpc.NewClient(r.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, err.Error()
	}
	defer conn.Close()
	msg := rawBytes(body)
	err = conn.Invoke(context.Background(), "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
		&msg, &coltracepb.ExportTraceServiceResponse{}, grpc.ForceCodecV2(rawClientCodec{}))
	if err == nil {
		return true, ""
	}
	st := grpcstatus.Convert(err)
	if st.Code() == codes.ResourceExhausted {
		for _, d := range st.Details() {
			if _, ok := d.(*errdetails.RetryInfo); ok {
				return false, ""
			}
		}
	}
	return false, err.Error()
}

// TestRequestThatCanNeverFit: a request whose decoded form alone exceeds
// max_queue_bytes is refused as too large, without a retry hint, on both
// protocols, and the message names the key.
func TestRequestThatCanNeverFit(t *testing.T) {
	body := tinyAttrRequest(15 << 20)
	cfg := DefaultConfig()
	cfg.MaxRequestBytes = 16 << 20
	cfg.MaxQueueBytes = 64 << 20
	r := start(t, cfg, newRecorder())

	resp, out := post(t, r, http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf"}, body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Retry-After") != "" || !bytes.Contains(out, []byte("receiver.max_queue_bytes")) {
		t.Errorf("HTTP: status %d, Retry-After %q, body %q; want 413 naming receiver.max_queue_bytes, no Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), out)
	}
	conn, err := grpc.NewClient(r.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := rawBytes(body)
	err = conn.Invoke(context.Background(), "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
		&msg, &coltracepb.ExportTraceServiceResponse{}, grpc.ForceCodecV2(rawClientCodec{}))
	st := grpcstatus.Convert(err)
	if st.Code() != codes.ResourceExhausted || len(st.Details()) != 0 || !strings.Contains(st.Message(), "receiver.max_queue_bytes") {
		t.Errorf("gRPC: %v %v; want ResourceExhausted without RetryInfo, naming receiver.max_queue_bytes", st.Code(), st.Details())
	}
	if used := r.gate.used.Load(); used != 0 {
		t.Errorf("%d bytes still charged after both refusals", used)
	}
}

// TestHTTPTimeouts: a body that trickles in is cut off after
// http_read_timeout, and a keep-alive connection that sends nothing is
// closed after http_idle_timeout.
func TestHTTPTimeouts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HTTPReadHeaderTimeout = 200 * time.Millisecond
	cfg.HTTPReadTimeout = 300 * time.Millisecond
	cfg.HTTPWriteTimeout = time.Second
	cfg.HTTPIdleTimeout = 300 * time.Millisecond
	r := start(t, cfg, newRecorder())

	t.Run("slow body", func(t *testing.T) {
		conn, err := net.Dial("tcp", r.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n")
		begin := time.Now()
		// One byte every 50 ms would take 50 s; the server must not wait.
		go func() {
			for range 1000 {
				if _, err := conn.Write([]byte{0x0a}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, _ := io.ReadAll(conn)
		if took := time.Since(begin); took > 5*time.Second {
			t.Fatalf("the connection was held %s", took)
		}
		if !bytes.HasPrefix(out, []byte("HTTP/1.1 408")) {
			t.Errorf("answer %q, want 408", out)
		}
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", r.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A first request makes the connection a kept-alive idle one.
		fmt.Fprintf(conn, "GET /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n")
		begin := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, _ := io.ReadAll(conn)
		if !bytes.HasPrefix(out, []byte("HTTP/1.1 405")) {
			t.Fatalf("answer %q, want 405", out)
		}
		if took := time.Since(begin); took > 5*time.Second {
			t.Fatalf("the idle connection was held %s", took)
		}
	})
}
