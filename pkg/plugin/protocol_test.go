package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend/grpcplugin"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/grafana/grafana-plugin-sdk-go/genproto/pluginv2"
	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/loadgen"
)

// TestPluginProtocol builds the plugin binary and drives it the way Grafana
// does: go-plugin over gRPC, protocol 2, the datasource magic cookie, with
// the process settings in GF_PLUGIN_* variables. Traces go to the plugin's
// own OTLP/HTTP port; health, every query type, a resource call and a
// stream are then checked for real values.
func TestPluginProtocol(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin binary")
	}
	dir := t.TempDir()
	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	rpc := startPlugin(t,
		"GF_PLUGIN_OTLP_HTTP="+httpAddr,
		"GF_PLUGIN_OTLP_GRPC="+grpcAddr,
		"GF_PLUGIN_DATA_DIR="+filepath.Join(dir, "data"),
		"GF_PLUGIN_COLLECTION_INTERVAL=1s",
	)
	dispense := func(name string) any {
		raw, err := rpc.Dispense(name)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	diag := dispense("diagnostics").(grpcplugin.DiagnosticsClient)
	dataClient := dispense("data").(grpcplugin.DataClient)
	resources := dispense("resource").(grpcplugin.ResourceClient)
	streams := dispense("stream").(grpcplugin.StreamClient)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pctx := &pluginv2.PluginContext{
		OrgId:    1,
		PluginId: PluginID,
		DataSourceInstanceSettings: &pluginv2.DataSourceInstanceSettings{
			Id: 1, Uid: "spangraph-uid", Name: "Spangraph",
			JsonData: []byte(`{"tracesDatasourceUid":"tempo"}`), LastUpdatedMS: 1,
		},
	}

	// Before any traffic: healthy, and saying how to send traces.
	health, err := diag.CheckHealth(ctx, &pluginv2.CheckHealthRequest{PluginContext: pctx})
	if err != nil {
		t.Fatal(err)
	}
	if health.Status != pluginv2.CheckHealthResponse_OK || !strings.Contains(health.Message, "no spans received") {
		t.Fatalf("health before traffic: %v %q", health.Status, health.Message)
	}

	// 50 shop traces over OTLP/HTTP to the plugin's receiver.
	gen := loadgen.NewGenerator(loadgen.Shop(10, nil), 7)
	body, err := proto.Marshal(gen.Request(50, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+httpAddr+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("OTLP export: %s", resp.Status)
	}

	query := func(refID string, model map[string]any) (data.Frames, string) {
		raw, _ := json.Marshal(model)
		now := time.Now()
		res, err := dataClient.QueryData(ctx, &pluginv2.QueryDataRequest{
			PluginContext: pctx,
			Queries: []*pluginv2.DataQuery{{
				RefId: refID, Json: raw, IntervalMS: 1000, MaxDataPoints: 300,
				TimeRange: &pluginv2.TimeRange{FromEpochMS: now.Add(-5 * time.Minute).UnixMilli(), ToEpochMS: now.UnixMilli()},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		r := res.Responses[refID]
		frames, err := data.UnmarshalArrowFrames(r.Frames)
		if err != nil {
			t.Fatal(err)
		}
		return frames, r.Error
	}

	// The frontend service served exactly the 50 traces: wait for the
	// collections that carry them.
	calls := map[string]any{"refId": "A", "instant": true, "range": false,
		"expr": `sum(traces_spanmetrics_calls_total{service="frontend", span_kind="SPAN_KIND_SERVER"})`}
	deadline := time.Now().Add(30 * time.Second)
	for {
		frames, errMsg := query("A", calls)
		if errMsg != "" {
			t.Fatal(errMsg)
		}
		if len(frames) == 1 && len(frames[0].Fields) == 2 && frames[0].Fields[1].Len() == 1 {
			if v := frames[0].Fields[1].At(0).(float64); v == 50 {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("frontend calls = %v, want 50", v)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("no frontend calls after 30s: %v", frames)
		}
		time.Sleep(200 * time.Millisecond)
	}

	health, err = diag.CheckHealth(ctx, &pluginv2.CheckHealthRequest{PluginContext: pctx})
	if err != nil {
		t.Fatal(err)
	}
	if health.Status != pluginv2.CheckHealthResponse_OK || !strings.Contains(health.Message, "OTLP gRPC "+grpcAddr) ||
		!strings.Contains(health.Message, "spans in the last") || !strings.Contains(health.Message, "active series") {
		t.Fatalf("health after traffic: %v %q", health.Status, health.Message)
	}
	t.Logf("health: %s", health.Message)

	// A range query over the same series, and a bad one that fails alone.
	frames, errMsg := query("B", map[string]any{"expr": `sum by (service) (traces_spanmetrics_calls_total)`, "legendFormat": "{{service}}"})
	if errMsg != "" || len(frames) < 10 || frames[0].Meta.Type != data.FrameTypeTimeSeriesMulti {
		t.Fatalf("range query: %q, %d frames", errMsg, len(frames))
	}
	if name := frames[0].Fields[1].Config.DisplayNameFromDS; name != "ad" {
		t.Errorf("first series is named %q, want ad", name)
	}
	if _, errMsg := query("C", map[string]any{"expr": `sum(rate(x[5m])`}); !strings.Contains(errMsg, "1:16: parse error") {
		t.Fatalf("bad PromQL: %q", errMsg)
	}

	frames, errMsg = query("D", map[string]any{"queryType": "redTable"})
	if errMsg != "" || len(frames) != 1 || frames[0].Name != "red" {
		t.Fatalf("RED table: %q %v", errMsg, frames)
	}
	// Ten shop services, less email, whose spans are Kafka CONSUMER spans.
	if got := frames[0].Fields[0].Len(); got != 9 {
		t.Errorf("RED table rows = %d, want the shop's 9 services with SERVER spans", got)
	}

	frames, errMsg = query("E", map[string]any{"queryType": "serviceGraph"})
	if errMsg != "" || len(frames) != 2 || frames[0].Name != "nodes" || frames[1].Name != "edges" ||
		frames[0].Meta.PreferredVisualization != data.VisTypeNodeGraph {
		t.Fatalf("service graph: %q %v", errMsg, frames)
	}
	// The shop's 10 services, postgres, redis and the payment provider.
	if frames[0].Rows() < 12 || frames[1].Rows() < 12 {
		t.Errorf("service graph: %d nodes, %d edges", frames[0].Rows(), frames[1].Rows())
	}

	rs, err := resources.CallResource(ctx, &pluginv2.CallResourceRequest{
		PluginContext: pctx, Path: "api/v1/labels", Method: http.MethodGet, Url: "api/v1/labels",
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != http.StatusOK || !bytes.Contains(res.Body, []byte(`"span_kind"`)) {
		t.Fatalf("labels: %d %s", res.Code, res.Body)
	}

	sub, err := streams.SubscribeStream(ctx, &pluginv2.SubscribeStreamRequest{
		PluginContext: pctx, Path: "redTable/abc123", Data: []byte(`{"groupBy":"service"}`),
	})
	if err != nil || sub.Status != pluginv2.SubscribeStreamResponse_OK {
		t.Fatalf("subscribe: %v %v", sub, err)
	}
	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	stream, err := streams.RunStream(streamCtx, &pluginv2.RunStreamRequest{
		PluginContext: pctx, Path: "redTable/abc123", Data: []byte(`{"groupBy":"service"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	packet, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var frame data.Frame
	if err := json.Unmarshal(packet.Data, &frame); err != nil {
		t.Fatal(err)
	}
	if frame.Name != "red" || frame.Rows() != 9 {
		t.Fatalf("streamed frame %q with %d rows", frame.Name, frame.Rows())
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startPlugin builds the plugin binary and starts it as Grafana does, with
// env added to the environment, and returns its go-plugin connection.
func startPlugin(t *testing.T, env ...string) goplugin.ClientProtocol {
	t.Helper()
	return launchPlugin(t, buildPlugin(t), env...)
}

// buildPlugin builds the plugin binary once for the processes of a test.
func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gpx_spangraph")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = ".." // the plugin's main package is ./pkg
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// launchPlugin starts bin as Grafana does, with env added to the
// environment, and returns its go-plugin connection; startPlugin is a
// build and a launch.
func launchPlugin(t *testing.T, bin string, env ...string) goplugin.ClientProtocol {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  grpcplugin.ProtocolVersion,
			MagicCookieKey:   grpcplugin.MagicCookieKey,
			MagicCookieValue: grpcplugin.MagicCookieValue,
		},
		VersionedPlugins: map[int]goplugin.PluginSet{grpcplugin.ProtocolVersion: {
			"diagnostics": &grpcplugin.DiagnosticsGRPCPlugin{},
			"data":        &grpcplugin.DataGRPCPlugin{},
			"resource":    &grpcplugin.ResourceGRPCPlugin{},
			"stream":      &grpcplugin.StreamGRPCPlugin{},
		}},
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: io.Discard}),
	})
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		t.Fatal(err)
	}
	return rpc
}

// TestPluginReadAPIAuth: the plugin's standalone read API (http) is the
// standalone server's, with its authentication: no caller reads a tenant
// without its credentials, and self-metrics are for operators.
func TestPluginReadAPIAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin binary")
	}
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "spangraph.yaml")
	if err := os.WriteFile(cfgFile, []byte(`
auth:
  tenants:
    - { id: team-a, bearer_tokens: [token-a] }
    - { id: team-b, bearer_tokens: [token-b] }
    - { id: platform, bearer_tokens: [token-ops], allow_org_id_header: true }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	apiAddr := freeAddr(t)
	startPlugin(t,
		"GF_PLUGIN_CONFIG_FILE="+cfgFile,
		"GF_PLUGIN_HTTP="+apiAddr,
		"GF_PLUGIN_OTLP_HTTP="+freeAddr(t),
		"GF_PLUGIN_OTLP_GRPC="+freeAddr(t),
		"GF_PLUGIN_DATA_DIR="+filepath.Join(dir, "data"),
	)
	get := func(path string, h map[string]string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+apiAddr+path, nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	query := "/api/v1/query?query=up"
	for _, tc := range []struct {
		name, path string
		h          map[string]string
		code       int
		body       string
	}{
		{"no credentials", query, nil, 401, `"errorType":"unauthorized"`},
		{"a header is no credential", query, map[string]string{"X-Scope-OrgID": "team-a"}, 401, `"errorType":"unauthorized"`},
		{"another tenant's credentials", query, map[string]string{"Authorization": "Bearer token-b", "X-Scope-OrgID": "team-a"}, 403, `"errorType":"forbidden"`},
		{"own credentials", query, map[string]string{"Authorization": "Bearer token-a"}, 200, `"status":"success"`},
		{"metrics need an operator", "/metrics", map[string]string{"Authorization": "Bearer token-a"}, 403, "allow_org_id_header"},
		{"metrics for the operator", "/metrics", map[string]string{"Authorization": "Bearer token-ops"}, 200, "spangraph_"},
		{"profiles need credentials", "/debug/pprof/", nil, 401, "authentication required"},
	} {
		code, body := get(tc.path, tc.h)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %.200s; want %d and %q", tc.name, code, body, tc.code, tc.body)
		}
	}
}
