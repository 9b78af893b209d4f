package query

import (
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	config_util "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

func TestBackendConfigValidate(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srv := httptest.NewTLSServer(nil)
	srv.Close()
	ca := file("ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	garbage := file("garbage.pem", "not a certificate")
	token := file("token", "s3cret")
	missing := filepath.Join(dir, "missing")
	base := func(mod func(c *BackendConfig)) BackendConfig {
		c := DefaultBackendConfig()
		c.URL = "http://prometheus:9090"
		mod(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  BackendConfig
		want string // "" is valid
	}{
		{"default: off", DefaultBackendConfig(), ""},
		{"plain", base(func(*BackendConfig) {}), ""},
		{"mimir", base(func(c *BackendConfig) { c.URL = "https://mimir.example/prometheus/" }), ""},
		{"everything", base(func(c *BackendConfig) {
			c.URL = "https://mimir.example/prometheus"
			c.Headers = map[string]string{"X-Scope-OrgID": "team-a", "X-Extra": "1"}
			c.BasicAuth = &config_util.BasicAuth{Username: "u", PasswordFile: token}
			c.TLSConfig = config_util.TLSConfig{CAFile: ca, ServerName: "mimir"}
		}), ""},
		{"bearer_token_file", base(func(c *BackendConfig) { c.BearerTokenFile = token }), ""},
		{"credentials without url", BackendConfig{BearerToken: "x", Timeout: time.Second}, "query_backend.url: required"},
		{"scheme", base(func(c *BackendConfig) { c.URL = "ftp://prometheus" }), `query_backend.url: "ftp://prometheus" must be an http:// or https:// URL`},
		{"no host", base(func(c *BackendConfig) { c.URL = "http:///api" }), "query_backend.url: \"http:///api\" has no host"},
		{"unparsable", base(func(c *BackendConfig) { c.URL = "http://[::1" }), "query_backend.url: "},
		{"api path", base(func(c *BackendConfig) { c.URL = "http://prometheus:9090/api/v1/" }), "ends in /api/v1"},
		{"query string", base(func(c *BackendConfig) { c.URL = "http://prometheus:9090/?x=1" }), "without a query"},
		{"user in url", base(func(c *BackendConfig) { c.URL = "http://u:hidden@prometheus:9090" }), "query_backend.url: put credentials in query_backend.basic_auth"},
		{"timeout", base(func(c *BackendConfig) { c.Timeout = 0 }), "query_backend.timeout: must be positive"},
		{"authorization header", base(func(c *BackendConfig) { c.Headers = map[string]string{"authorization": "Bearer x"} }), "query_backend.headers: set Authorization with query_backend.basic_auth"},
		{"bad header", base(func(c *BackendConfig) { c.Headers = map[string]string{"X Bad": "1"} }), `query_backend.headers: "X Bad" is not a valid HTTP header name`},
		{"bad tenant header", base(func(c *BackendConfig) { c.TenantHeader = "org:id" }), "query_backend.tenant_header:"},
		{"no username", base(func(c *BackendConfig) { c.BasicAuth = &config_util.BasicAuth{Password: "p"} }), "query_backend.basic_auth.username: required"},
		{"two passwords", base(func(c *BackendConfig) {
			c.BasicAuth = &config_util.BasicAuth{Username: "u", Password: "p", PasswordFile: token}
		}), "query_backend.basic_auth: set password or password_file, not both"},
		{"missing password_file", base(func(c *BackendConfig) { c.BasicAuth = &config_util.BasicAuth{Username: "u", PasswordFile: missing} }), "query_backend.basic_auth.password_file: open"},
		{"secret manager", base(func(c *BackendConfig) { c.BasicAuth = &config_util.BasicAuth{Username: "u", PasswordRef: "vault"} }), "password_ref need a secret manager"},
		{"basic and bearer", base(func(c *BackendConfig) {
			c.BasicAuth = &config_util.BasicAuth{Username: "u", Password: "p"}
			c.BearerToken = "t"
		}), "query_backend: set basic_auth or bearer_token(_file), not both"},
		{"two tokens", base(func(c *BackendConfig) { c.BearerToken, c.BearerTokenFile = "t", token }), "query_backend: set bearer_token or bearer_token_file, not both"},
		{"missing bearer_token_file", base(func(c *BackendConfig) { c.BearerTokenFile = missing }), "query_backend.bearer_token_file: open"},
		{"missing ca_file", base(func(c *BackendConfig) { c.TLSConfig.CAFile = missing }), "query_backend.tls_config.ca_file: open"},
		{"not a CA", base(func(c *BackendConfig) { c.TLSConfig.CAFile = garbage }), "query_backend.tls_config: unable to use specified CA cert"},
		{"cert without key", base(func(c *BackendConfig) { c.TLSConfig.CertFile = ca }), "query_backend.tls_config: exactly one of key or key_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("query_backend")
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "hidden") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
	off, on := DefaultBackendConfig(), base(func(*BackendConfig) {})
	if off.Enabled() || !on.Enabled() {
		t.Error("Enabled: the default must be off, a URL on")
	}
}

// TestBackendConfigYAML: the section decodes strictly over the defaults,
// with Prometheus' key names, and prints no secret.
func TestBackendConfigYAML(t *testing.T) {
	const in = `
url: https://mimir.example/prometheus
timeout: 45s
headers:
  X-Extra: "1"
tenant_header: ""
basic_auth:
  username: spangraph
  password: s3cret
tls_config:
  ca_file: /etc/ssl/ca.pem
  server_name: mimir
  insecure_skip_verify: false
`
	c := DefaultBackendConfig()
	dec := yaml.NewDecoder(strings.NewReader(in))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.URL != "https://mimir.example/prometheus" || c.Timeout != 45*time.Second || c.Headers["X-Extra"] != "1" || c.TenantHeader != "" ||
		c.BasicAuth == nil || c.BasicAuth.Username != "spangraph" || c.BasicAuth.Password != "s3cret" ||
		c.TLSConfig.CAFile != "/etc/ssl/ca.pem" || c.TLSConfig.ServerName != "mimir" {
		t.Errorf("decoded %+v", c)
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Errorf("the password shows:\n%s", out)
	}
	dec = yaml.NewDecoder(strings.NewReader("url: http://p\nbasic_auth:\n  user: x\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err == nil || !strings.Contains(err.Error(), "user") {
		t.Errorf("unknown key: %v", err)
	}
}
