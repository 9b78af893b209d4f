package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/spangraph/spangraph/pkg/otlptest"
)

// testTenantLifecycle drives a real `spangraph serve` over a data_dir with
// four tenant stores, one of them damaged (a stray WAL segment), and
// max_tenants 2 with a one-second tenant_idle_timeout: the server starts;
// the healthy tenants answer queries in turn (idle ones close to make
// room); the damaged one is quarantined: listed in /-/tenants and
// /metrics with the file and the repair, its spans refused with 500 (not
// retried by OTLP exporters) naming the repair; an invalid tenant id and
// an unauthenticated request make no directory and no series under their
// name; `spangraph repair --tenant` moves the stray segment into
// quarantine/, keeping it, and the tenant then serves its old data and
// takes spans, while the server keeps running.
func testTenantLifecycle(t *testing.T, bin string) {
	dataDir := t.TempDir()
	tenants := []string{"a", "b", "c", "bad"}
	srv := startServer(t, bin, dataDir)
	for _, tenant := range tenants {
		if code := sendSpans(t, srv.otlpHTTP, "svc-"+tenant, headers{"X-Scope-OrgID": tenant}); code != http.StatusOK {
			t.Fatalf("send to %s: %d", tenant, code)
		}
	}
	for _, tenant := range tenants {
		waitTenantCalls(t, srv.http, tenant, "svc-"+tenant, 3)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = srv.cmd.Wait()
	stray := filepath.Join(dataDir, "tenants", "bad", "wal", "00000099")
	if err := os.WriteFile(stray, []byte("not a segment of this log"), 0o600); err != nil {
		t.Fatal(err)
	}

	cfgFile := filepath.Join(t.TempDir(), "spangraph.yaml")
	cfg := `max_tenants: 2
tenant_idle_timeout: 1s
auth:
  required: false
  tenants:
    - id: secret
      bearer_tokens: [token-secret]
    - id: ops
      bearer_tokens: [token-ops]
      allow_org_id_header: true
`
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, bin, dataDir, "--config", cfgFile)
	for _, tenant := range []string{"a", "b", "c"} {
		waitTenantCalls(t, srv.http, tenant, "svc-"+tenant, 3)
	}

	var body string
	eventually(t, "the damaged tenant's spans refused with 500", func() string {
		code, out := do(t, http.MethodPost, "http://"+srv.otlpHTTP+"/v1/traces", otlptest.Marshal(t, request("svc-bad")),
			headers{"X-Scope-OrgID": "bad", "Content-Type": "application/x-protobuf"})
		body = string(out)
		if code != http.StatusInternalServerError {
			return "answer " + http.StatusText(code) + ": " + body // 429 while two others are open
		}
		return ""
	})
	if !strings.Contains(body, "spangraph repair --tenant bad") || !strings.Contains(body, "wal/00000099") {
		t.Errorf("the refusal does not name the file and the repair: %s", body)
	}
	if _, m := apiGet(t, srv.http, "/metrics", nil, operator); !strings.Contains(m, `spangraph_tenant_quarantined{tenant="bad"} 1`) {
		t.Errorf("/metrics has no spangraph_tenant_quarantined{tenant=\"bad\"} 1")
	}
	if st := tenantState(t, srv.http, "bad"); st.State != "quarantined" || !strings.Contains(st.Problem, "wal/00000099") {
		t.Errorf("/-/tenants says bad is %+v", st)
	}
	if st := tenantState(t, srv.http, "c"); st.State != "open" && st.State != "closed" {
		t.Errorf("/-/tenants says c is %+v", st)
	}
	waitLog(t, srv, `tenant store cannot be opened.*tenant=bad.*wal/00000099.*spangraph repair --tenant bad`)
	if code, _ := callsByService(t, srv.http, headers{"X-Scope-OrgID": "bad"}); code == http.StatusOK {
		t.Errorf("a query of the quarantined tenant answered 200")
	}
	if code, _ := apiGet(t, srv.http, "/-/ready", nil, nil); code != http.StatusOK {
		t.Errorf("ready with a quarantined tenant: %d", code)
	}

	// Refused ids leave nothing under their name.
	if code := sendSpans(t, srv.otlpHTTP, "svc-x", headers{"X-Scope-OrgID": "../x"}); code != http.StatusBadRequest {
		t.Errorf("invalid tenant id: %d, want 400", code)
	}
	if code := sendSpans(t, srv.otlpHTTP, "svc-x", headers{"X-Scope-OrgID": "secret"}); code != http.StatusUnauthorized {
		t.Errorf("protected tenant without its token: %d, want 401", code)
	}
	_, m := apiGet(t, srv.http, "/metrics", nil, operator)
	if strings.Contains(m, `tenant="../x"`) || strings.Contains(m, `tenant="secret"`) {
		t.Errorf("/metrics has series of refused tenants:\n%s", grepLines(m, `tenant="(\.\./x|secret)"`))
	}
	if got := strings.Join(tenantDirs(t, dataDir), ","); got != "a,b,bad,c" {
		t.Errorf("tenant directories %s, want a,b,bad,c", got)
	}

	out, err := exec.Command(bin, "repair", "--tenant", "bad", "--data-dir", dataDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "moved wal/00000099") {
		t.Fatalf("spangraph repair: %v\n%s", err, out)
	}
	kept, _ := filepath.Glob(filepath.Join(dataDir, "quarantine", "bad-*", "wal", "00000099"))
	if len(kept) != 1 {
		t.Errorf("the stray segment is not kept under quarantine/: %v", kept)
	}
	eventually(t, "the repaired tenant takes spans", func() string {
		if code := sendSpans(t, srv.otlpHTTP, "svc-bad-after", headers{"X-Scope-OrgID": "bad"}); code != http.StatusOK {
			return http.StatusText(code)
		}
		return ""
	})
	waitTenantCalls(t, srv.http, "bad", "svc-bad", 3)
	waitTenantCalls(t, srv.http, "bad", "svc-bad-after", 3)
	if _, m := apiGet(t, srv.http, "/metrics", nil, operator); strings.Contains(m, `spangraph_tenant_quarantined{tenant="bad"}`) {
		t.Errorf("still reported quarantined after the repair")
	}
}

// waitTenantCalls waits until tenant's service has want calls; queries
// refused while max_tenants is reached are retried.
func waitTenantCalls(t *testing.T, httpAddr, tenant, service string, want float64) {
	t.Helper()
	eventually(t, tenant+"/"+service+" queryable", func() string {
		code, c := callsByService(t, httpAddr, headers{"X-Scope-OrgID": tenant})
		if code != http.StatusOK {
			_, body := apiGet(t, httpAddr, "/api/v1/query", url.Values{"query": {"up"}}, headers{"X-Scope-OrgID": tenant})
			return tenant + ": " + http.StatusText(code) + " " + body
		}
		if c[service] != want {
			return tenant + ": " + mapString(c)
		}
		return ""
	})
}

type tenantStatus struct {
	ID, State, Problem string
}

// tenantState reads one tenant's entry of /-/tenants.
func tenantState(t *testing.T, httpAddr, tenant string) tenantStatus {
	t.Helper()
	code, body := apiGet(t, httpAddr, "/-/tenants", nil, operator)
	var out struct{ Tenants []tenantStatus }
	if err := json.Unmarshal([]byte(body), &out); code != http.StatusOK || err != nil {
		t.Fatalf("/-/tenants: %d %v %s", code, err, body)
	}
	for _, s := range out.Tenants {
		if s.ID == tenant {
			return s
		}
	}
	return tenantStatus{}
}

// operator reads what concerns every tenant (/metrics, /-/tenants) when
// auth is on: the credentials of a tenant with allow_org_id_header.
var operator = bearer("token-ops")

func grepLines(s, re string) string {
	r := regexp.MustCompile(re)
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if r.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
