package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spangraph/spangraph/pkg/otlptest"
)

// headers are request headers of the helpers below; nil for none.
type headers map[string]string

func bearer(token string) headers { return headers{"Authorization": "Bearer " + token} }

func (h headers) with(k, v string) headers {
	out := headers{k: v}
	for k, v := range h {
		out[k] = v
	}
	return out
}

// do sends one request and returns its status and body.
func do(t *testing.T, method, u string, body []byte, h headers) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// sendSpans posts request(service) (three spans) over OTLP/HTTP protobuf
// and returns the status code.
func sendSpans(t *testing.T, otlpAddr, service string, h headers) int {
	t.Helper()
	code, _ := do(t, http.MethodPost, "http://"+otlpAddr+"/v1/traces", otlptest.Marshal(t, request(service)), h.with("Content-Type", "application/x-protobuf"))
	return code
}

// apiGet reads the query API and returns the status and the body.
func apiGet(t *testing.T, httpAddr, path string, params url.Values, h headers) (int, string) {
	t.Helper()
	code, body := do(t, http.MethodGet, "http://"+httpAddr+path+"?"+params.Encode(), nil, h)
	return code, string(body)
}

// callsByService returns sum by (service) (traces_spanmetrics_calls_total)
// as the given credentials see it; the status is not 200 on refusal.
func callsByService(t *testing.T, httpAddr string, h headers) (int, map[string]float64) {
	t.Helper()
	code, body := apiGet(t, httpAddr, "/api/v1/query", url.Values{"query": {`sum by (service) (traces_spanmetrics_calls_total)`}}, h)
	if code != http.StatusOK {
		return code, nil
	}
	var pr promResponse
	if err := json.Unmarshal([]byte(body), &pr); err != nil || pr.Status != "success" {
		t.Fatalf("query: %v %s", err, body)
	}
	out := map[string]float64{}
	for _, r := range pr.Data.Result {
		v, err := strconv.ParseFloat(r.Value[1].(string), 64)
		if err != nil {
			t.Fatalf("query: value %v", r.Value)
		}
		out[r.Metric["service"]] = v
	}
	return code, out
}

// tenantDirs lists the directories under <dataDir>/tenants.
func tenantDirs(t *testing.T, dataDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "tenants"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// onlyUnder fails when root holds anything but dataDir and what is inside
// it: a tenant id must never make a path outside data_dir.
func onlyUnder(t *testing.T, root, dataDir string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root || p == dataDir || strings.HasPrefix(p, dataDir+string(filepath.Separator)) {
			return nil
		}
		t.Errorf("%s exists outside data_dir %s", p, dataDir)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// pathLikeTenants are X-Scope-OrgID values that would be paths.
var pathLikeTenants = []string{"../x", "..", ".", "a/b", "../../../../tmp/x", "/x", "x/..", `a\b`, "%2e%2e", "a b", strings.Repeat("a", 151)}

// testTenantIsolation drives a real `spangraph serve` with two tenants
// that have bearer tokens (and a gateway allowed to name tenants): spans
// sent with A's token are visible with A's token only, through every read
// endpoint; B's token naming team-a is refused (403), no token is refused
// (401); path-like tenant ids are refused at the receivers and the query
// API and never make a directory outside data_dir.
func testTenantIsolation(t *testing.T, bin string) {
	root := t.TempDir()
	dataDir := filepath.Join(root, "data")
	cfgFile := filepath.Join(t.TempDir(), "spangraph.yaml")
	cfg := `auth:
  tenants:
    - id: team-a
      bearer_tokens: [token-a]
    - id: team-b
      bearer_tokens: [token-b]
    - id: gateway
      bearer_tokens: [token-gw]
      allow_org_id_header: true
`
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, bin, dataDir, "--config", cfgFile)
	a, b, gw := bearer("token-a"), bearer("token-b"), bearer("token-gw")

	if code := sendSpans(t, srv.otlpHTTP, "svc-a", a); code != http.StatusOK {
		t.Fatalf("spans with token A: %d", code)
	}
	if code := sendSpans(t, srv.otlpHTTP, "svc-b", b); code != http.StatusOK {
		t.Fatalf("spans with token B: %d", code)
	}
	// Token B naming team-a may not write there either.
	if code := sendSpans(t, srv.otlpHTTP, "svc-b-into-a", b.with("X-Scope-OrgID", "team-a")); code != http.StatusForbidden {
		t.Errorf("spans with token B and X-Scope-OrgID team-a: %d, want 403", code)
	}
	if code := sendSpans(t, srv.otlpHTTP, "svc-anonymous", nil); code != http.StatusUnauthorized {
		t.Errorf("spans without a token: %d, want 401", code)
	}
	conn, err := grpc.NewClient(srv.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer token-b", "x-scope-orgid", "team-a")
	if _, err := coltracepb.NewTraceServiceClient(conn).Export(ctx, request("svc-b-grpc-into-a")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC with token B and X-Scope-OrgID team-a: %v, want PermissionDenied", err)
	}

	eventually(t, "each tenant sees its own spans", func() string {
		_, ca := callsByService(t, srv.http, a)
		_, cb := callsByService(t, srv.http, b)
		if len(ca) != 1 || ca["svc-a"] != 3 || len(cb) != 1 || cb["svc-b"] != 3 {
			return "team-a sees " + mapString(ca) + ", team-b sees " + mapString(cb)
		}
		return ""
	})
	// The gateway may read team-a by naming it: the positive control of
	// the header itself.
	if _, c := callsByService(t, srv.http, gw.with("X-Scope-OrgID", "team-a")); c["svc-a"] != 3 || len(c) != 1 {
		t.Errorf("gateway naming team-a sees %s", mapString(c))
	}

	const ts0, ts1 = "0", "9999999999"
	reads := []struct {
		path   string
		params url.Values
	}{
		{"/api/v1/query", url.Values{"query": {`traces_spanmetrics_calls_total`}}},
		{"/api/v1/query_range", url.Values{"query": {`traces_spanmetrics_calls_total`}, "start": {"1700000000"}, "end": {"1700000600"}, "step": {"60"}}},
		{"/api/v1/labels", url.Values{"match[]": {`{service="svc-a"}`}}},
		{"/api/v1/label/service/values", nil},
		{"/api/v1/series", url.Values{"match[]": {`{__name__=~".+"}`}}},
		{"/api/v1/query_exemplars", url.Values{"query": {`traces_spanmetrics_latency_bucket`}, "start": {ts0}, "end": {ts1}}},
		{"/api/v1/service-graph", nil},
		{"/api/v1/red", nil},
	}
	for _, r := range reads {
		// Token B sees nothing of team-a, whatever it asks.
		code, body := apiGet(t, srv.http, r.path, r.params, b)
		if code != http.StatusOK || strings.Contains(body, "svc-a") {
			t.Errorf("%s with token B: %d %s", r.path, code, body)
		}
		// Token A sees nothing of team-b.
		code, body = apiGet(t, srv.http, r.path, r.params, a)
		if code != http.StatusOK || strings.Contains(body, "svc-b") {
			t.Errorf("%s with token A: %d %s", r.path, code, body)
		}
		// Token B naming team-a is refused outright.
		if code, body := apiGet(t, srv.http, r.path, r.params, b.with("X-Scope-OrgID", "team-a")); code != http.StatusForbidden || strings.Contains(body, "svc-a") {
			t.Errorf("%s with token B and X-Scope-OrgID team-a: %d %s, want 403", r.path, code, body)
		}
		if code, _ := apiGet(t, srv.http, r.path, r.params, headers{"X-Scope-OrgID": "team-a"}); code != http.StatusUnauthorized {
			t.Errorf("%s without a token, naming team-a: %d, want 401", r.path, code)
		}
		if code, _ := apiGet(t, srv.http, r.path, r.params, bearer("token-x")); code != http.StatusUnauthorized {
			t.Errorf("%s with an unknown token: %d, want 401", r.path, code)
		}
	}
	// And the positive controls of the metadata endpoints.
	if _, body := apiGet(t, srv.http, "/api/v1/label/service/values", nil, a); !strings.Contains(body, `"svc-a"`) {
		t.Errorf("team-a's label values: %s", body)
	}
	if _, body := apiGet(t, srv.http, "/api/v1/series", url.Values{"match[]": {`{service="svc-b"}`}}, b); !strings.Contains(body, `"svc-b"`) {
		t.Errorf("team-b's series: %s", body)
	}

	// Path-like tenant ids: 401 without credentials, 403 for a tenant
	// that may not name others, 400 for the gateway that may.
	for _, id := range pathLikeTenants {
		for _, tc := range []struct {
			h    headers
			want int
		}{{nil, http.StatusUnauthorized}, {a, http.StatusForbidden}, {gw, http.StatusBadRequest}} {
			if code := sendSpans(t, srv.otlpHTTP, "svc-path", tc.h.with("X-Scope-OrgID", id)); code != tc.want {
				t.Errorf("OTLP/HTTP with X-Scope-OrgID %q and %v: %d, want %d", id, tc.h, code, tc.want)
			}
			if code, _ := apiGet(t, srv.http, "/api/v1/labels", nil, tc.h.with("X-Scope-OrgID", id)); code != tc.want {
				t.Errorf("query API with X-Scope-OrgID %q and %v: %d, want %d", id, tc.h, code, tc.want)
			}
		}
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer token-gw", "x-scope-orgid", id)
		if _, err := coltracepb.NewTraceServiceClient(conn).Export(ctx, request("svc-path")); status.Code(err) != codes.InvalidArgument {
			t.Errorf("gRPC with X-Scope-OrgID %q: %v, want InvalidArgument", id, err)
		}
	}
	if got := strings.Join(tenantDirs(t, dataDir), ","); got != "team-a,team-b" {
		t.Errorf("tenant directories %s, want team-a,team-b", got)
	}
	onlyUnder(t, root, dataDir)
}

// testPathLikeTenantsWithoutAuth: without auth, X-Scope-OrgID names the
// tenant, so a path-like value is the sender's to choose: every one is
// refused with 400 / InvalidArgument, the longest valid id (150 bytes) is
// taken, and nothing is created outside data_dir.
func testPathLikeTenantsWithoutAuth(t *testing.T, bin string) {
	root := t.TempDir()
	dataDir := filepath.Join(root, "data")
	srv := startServer(t, bin, dataDir)
	conn, err := grpc.NewClient(srv.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, id := range pathLikeTenants {
		if code := sendSpans(t, srv.otlpHTTP, "svc-path", headers{"X-Scope-OrgID": id}); code != http.StatusBadRequest {
			t.Errorf("OTLP/HTTP with X-Scope-OrgID %q: %d, want 400", id, code)
		}
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-scope-orgid", id)
		if _, err := coltracepb.NewTraceServiceClient(conn).Export(ctx, request("svc-path")); status.Code(err) != codes.InvalidArgument {
			t.Errorf("gRPC with X-Scope-OrgID %q: %v, want InvalidArgument", id, err)
		}
		if code, _ := apiGet(t, srv.http, "/api/v1/labels", nil, headers{"X-Scope-OrgID": id}); code != http.StatusBadRequest {
			t.Errorf("query API with X-Scope-OrgID %q: %d, want 400", id, code)
		}
	}
	longest := strings.Repeat("a", 150)
	for _, id := range []string{longest, "..a", "a..", "team.(x)*'!"} {
		if code := sendSpans(t, srv.otlpHTTP, "svc-ok", headers{"X-Scope-OrgID": id}); code != http.StatusOK {
			t.Errorf("X-Scope-OrgID %q: %d, want 200", id, code)
		}
	}
	want := []string{"..a", "a..", longest, "team.(x)*'!"}
	sort.Strings(want)
	if got := tenantDirs(t, dataDir); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("tenant directories %q, want %q", got, want)
	}
	onlyUnder(t, root, dataDir)
}

func mapString(m map[string]float64) string {
	b, _ := json.Marshal(m)
	return string(b)
}
