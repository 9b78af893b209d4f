package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/query"
)

// start runs an engine with cfgEdit applied and its read API on a
// loopback port, and returns the API's base URL and the log.
func start(t *testing.T, cfgEdit func(*config.Config)) (string, *otlptest.LogBuffer) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.OTLPGRPC, cfg.OTLPHTTP, cfg.HTTP = "", "", "127.0.0.1:0"
	if cfgEdit != nil {
		cfgEdit(&cfg)
	}
	log := &otlptest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(log, nil))
	eng, err := engine.New(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(); err != nil {
		t.Fatal(err)
	}
	srv, err := Start(eng, query.NewQuerier(eng, eng.Config().Query, logger, nil), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eng.Stop(ctx)
	})
	return "http://" + srv.Addr(), log
}

func get(t *testing.T, url string, h map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHandlerWithAuth(t *testing.T) {
	base, _ := start(t, func(c *config.Config) {
		c.Auth.Tenants = []auth.TenantConfig{
			{ID: "team-a", BearerTokens: []auth.Secret{"token-a"}},
			{ID: "platform", BearerTokens: []auth.Secret{"token-ops"}, AllowOrgIDHeader: true},
		}
	})
	// A refused API request is answered as Prometheus answers errors, so
	// that API clients show the reason, with the challenge a 401 needs.
	resp, body := get(t, base+"/api/v1/query?query=up", nil)
	var pr struct{ Status, ErrorType, Error string }
	if err := json.Unmarshal([]byte(body), &pr); err != nil || resp.StatusCode != 401 || pr.Status != "error" ||
		pr.ErrorType != "unauthorized" || resp.Header.Get("WWW-Authenticate") == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("unauthenticated query: %d %v %q %+v", resp.StatusCode, resp.Header, body, pr)
	}
	for _, tc := range []struct {
		path, token string
		code        int
	}{
		{"/api/v1/query?query=up", "token-a", 200},
		{"/metrics", "", 401},
		{"/metrics", "token-a", 403},
		{"/metrics", "token-ops", 200},
		{"/-/tenants", "token-a", 403},
		{"/-/tenants", "token-ops", 200},
		{"/debug/pprof/", "token-a", 403},
		{"/-/ready", "", 200},
		{"/-/healthy", "", 200},
		{"/", "", 200},
		{"/nowhere", "", 404},
	} {
		h := map[string]string{}
		if tc.token != "" {
			h["Authorization"] = "Bearer " + tc.token
		}
		if resp, body := get(t, base+tc.path, h); resp.StatusCode != tc.code {
			t.Errorf("%s with %q: %d %.100s, want %d", tc.path, tc.token, resp.StatusCode, body, tc.code)
		}
	}
}

// TestOpenListenerWarns: a read API reachable from other machines without
// authentication is said at start.
func TestOpenListenerWarns(t *testing.T) {
	for _, tc := range []struct {
		addr string
		warn bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		_, log := start(t, func(c *config.Config) { c.HTTP = tc.addr })
		if got := strings.Contains(log.String(), "authentication off"); got != tc.warn {
			t.Errorf("http %s: warning %v, want %v\n%s", tc.addr, got, tc.warn, log.String())
		}
	}
	// Without auth, everything is open (on loopback by default).
	base, _ := start(t, nil)
	if resp, _ := get(t, base+"/metrics", nil); resp.StatusCode != 200 {
		t.Errorf("/metrics without auth: %d", resp.StatusCode)
	}
}
