package auth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const topSecret = "s3cr3t-t0ken-value"

func TestSecretNeverPrinted(t *testing.T) {
	cfg := Config{Tenants: []TenantConfig{{
		ID:           "team-a",
		BearerTokens: []Secret{topSecret},
		BasicAuth:    []BasicAuthConfig{{Username: "alice", Password: topSecret + "-pw"}},
	}}}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		outputs = append(outputs, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, cfg.Tenants[0].BearerTokens[0]))
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("cfg", "cfg", cfg, "token", cfg.Tenants[0].BearerTokens[0])
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "cfg", cfg, "token", cfg.Tenants[0].BearerTokens[0])
	outputs = append(outputs, string(y), string(j), logs.String())
	for _, out := range outputs {
		if strings.Contains(out, "s3cr3t") || strings.Contains(out, fmt.Sprintf("%x", "s3cr3t")) {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if !strings.Contains(string(y), "<secret>") {
		t.Errorf("YAML does not show that a secret is set:\n%s", y)
	}
	if got := fmt.Sprint(Secret("")); got != "" {
		t.Errorf("an empty secret prints %q", got)
	}
	// Decoding is untouched: the value is there for the program.
	var back TenantConfig
	if err := yaml.Unmarshal([]byte("bearer_tokens: [abc]"), &back); err != nil || string(back.BearerTokens[0]) != "abc" {
		t.Fatalf("decoding a secret: %v %q", err, string(back.BearerTokens[0]))
	}
}

func TestConfigYAMLShape(t *testing.T) {
	const doc = `
required: true
tenants:
  - id: team-a
    bearer_tokens: ["${TOKEN_A}"]
    bearer_token_files: [/run/secrets/a]
    basic_auth:
      - {username: alice, password: pw}
      - {username: bob, password_file: /run/secrets/bob}
    allow_org_id_header: true
`
	var cfg Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	tc := cfg.Tenants[0]
	if !cfg.IsRequired() || tc.ID != "team-a" || string(tc.BearerTokens[0]) != "${TOKEN_A}" || tc.BearerTokenFiles[0] != "/run/secrets/a" ||
		tc.BasicAuth[1].PasswordFile != "/run/secrets/bob" || !tc.AllowOrgIDHeader {
		t.Fatalf("decoded %+v", cfg)
	}
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"TOKEN": "abc", "EMPTY": "", "_X1": "x"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${TOKEN}", "abc", ""},
		{"pre-${TOKEN}-${_X1}", "pre-abc-x", ""},
		{"$$TOKEN", "$TOKEN", ""},
		{"$${TOKEN}", "${TOKEN}", ""},
		{"a$b$", "a$b$", ""},
		{"${MISSING}", "", "environment variable MISSING is not set"},
		{"${EMPTY}", "", "environment variable EMPTY is empty"},
		{"${TOKEN", "", "unterminated ${"},
		{"${1BAD}", "", "not a valid environment variable name"},
		{"${}", "", "not a valid environment variable name"},
	} {
		got, err := expandEnv(tc.in, lookup)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("expandEnv(%q): err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("expandEnv(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "token", "  file-token-1234\n")
	emptyFile := writeFile(t, dir, "empty", "\n \n")
	twoLines := writeFile(t, dir, "two", "tok-1\ntok-2\n")
	missing := filepath.Join(dir, "missing")
	env := map[string]string{"TOKEN_A": "env-token-a", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	yes, no := true, false

	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for none
	}{
		{"off", Config{}, ""},
		{"off, required false", Config{Required: &no}, ""},
		{"required without tenants", Config{Required: &yes}, "auth.required: true, but auth.tenants is empty"},
		{"token", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"t1"}}}}, ""},
		{"env and file", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"${TOKEN_A}"}, BearerTokenFiles: []string{tokenFile}}}}, ""},
		{"missing id", Config{Tenants: []TenantConfig{{BearerTokens: []Secret{"t"}}}}, "auth.tenants[0].id: required"},
		{"bad id", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"t"}}, {ID: "../x", BearerTokens: []Secret{"u"}}}}, "auth.tenants[1].id:"},
		{"duplicate id", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"t"}}, {ID: "a", BearerTokens: []Secret{"u"}}}}, "auth.tenants[1].id: tenant \"a\" is already listed at auth.tenants[0]"},
		{"no credentials", Config{Tenants: []TenantConfig{{ID: "a"}}}, "auth.tenants[0]: tenant \"a\" has no credentials"},
		{"empty token", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{""}}}}, "auth.tenants[0].bearer_tokens[0]: the token is empty"},
		{"token with space", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"a b"}}}}, "auth.tenants[0].bearer_tokens[0]: the token contains whitespace"},
		{"unset env", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"${NOPE}"}}}}, "auth.tenants[0].bearer_tokens[0]: environment variable NOPE is not set"},
		{"empty env", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"${EMPTY}"}}}}, "environment variable EMPTY is empty"},
		{"missing file", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"t"}}, {ID: "b", BearerTokenFiles: []string{missing}}}},
			"auth.tenants[1].bearer_token_files[0]: open " + missing + ": no such file or directory"},
		{"empty file", Config{Tenants: []TenantConfig{{ID: "a", BearerTokenFiles: []string{emptyFile}}}}, "auth.tenants[0].bearer_token_files[0]: " + emptyFile + " is empty"},
		{"two tokens in a file", Config{Tenants: []TenantConfig{{ID: "a", BearerTokenFiles: []string{twoLines}}}}, "bearer_token_files[0]: " + twoLines + ": the token contains whitespace"},
		{"duplicate token across tenants", Config{Tenants: []TenantConfig{
			{ID: "a", BearerTokens: []Secret{"dup-token-xyz"}},
			{ID: "b", BearerTokens: []Secret{"other", "dup-token-xyz"}},
		}}, "auth.tenants[1].bearer_tokens[1]: the same credential is configured for tenant \"a\" at auth.tenants[0].bearer_tokens[0]"},
		{"duplicate token via file and env", Config{Tenants: []TenantConfig{
			{ID: "a", BearerTokens: []Secret{"file-token-1234"}},
			{ID: "b", BearerTokenFiles: []string{tokenFile}},
		}}, "auth.tenants[1].bearer_token_files[0]: the same credential is configured for tenant \"a\""},
		{"duplicate token within a tenant is harmless", Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"t", "t"}}}}, ""},
		{"basic ok", Config{Tenants: []TenantConfig{{ID: "a", BasicAuth: []BasicAuthConfig{{Username: "u", Password: "p"}, {Username: "v", PasswordFile: tokenFile}}}}}, ""},
		{"basic no user", Config{Tenants: []TenantConfig{{ID: "a", BasicAuth: []BasicAuthConfig{{Password: "p"}}}}}, "auth.tenants[0].basic_auth[0].username: required"},
		{"basic colon", Config{Tenants: []TenantConfig{{ID: "a", BasicAuth: []BasicAuthConfig{{Username: "a:b", Password: "p"}}}}}, "basic_auth[0].username: must not contain ':'"},
		{"basic both", Config{Tenants: []TenantConfig{{ID: "a", BasicAuth: []BasicAuthConfig{{Username: "u", Password: "p", PasswordFile: tokenFile}}}}}, "basic_auth[0]: set password or password_file, not both"},
		{"basic neither", Config{Tenants: []TenantConfig{{ID: "a", BasicAuth: []BasicAuthConfig{{Username: "u"}}}}}, "basic_auth[0]: password or password_file is required"},
		{"basic missing file", Config{Tenants: []TenantConfig{{ID: "a", BasicAuth: []BasicAuthConfig{{Username: "u", PasswordFile: missing}}}}}, "auth.tenants[0].basic_auth[0].password_file: open " + missing},
		{"basic unset env", Config{Tenants: []TenantConfig{{ID: "a", BasicAuth: []BasicAuthConfig{{Username: "u", Password: "${NOPE}"}}}}}, "auth.tenants[0].basic_auth[0].password: environment variable NOPE"},
		{"basic duplicate user", Config{Tenants: []TenantConfig{
			{ID: "a", BasicAuth: []BasicAuthConfig{{Username: "u", Password: "p"}}},
			{ID: "b", BasicAuth: []BasicAuthConfig{{Username: "u", Password: "q"}}},
		}}, "auth.tenants[1].basic_auth[0].username: \"u\" is already used at auth.tenants[0].basic_auth[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.resolve("auth", lookup, os.ReadFile)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			for _, secret := range []string{"env-token-a", "file-token-1234", "dup-token-xyz"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains a secret", err)
				}
			}
		})
	}
}

func TestNewReadsEnvironment(t *testing.T) {
	t.Setenv("SPANGRAPH_TEST_TOKEN", "from-env")
	a, err := New(Config{Tenants: []TenantConfig{{ID: "team-a", BearerTokens: []Secret{"${SPANGRAPH_TEST_TOKEN}"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if tenant, err := a.Tenant("Bearer from-env", ""); err != nil || tenant != "team-a" {
		t.Fatalf("Tenant = %q, %v", tenant, err)
	}
	if _, err := a.Tenant("Bearer ${SPANGRAPH_TEST_TOKEN}", ""); err == nil {
		t.Fatal("the unexpanded reference authenticated")
	}
	cfg := Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"${SPANGRAPH_TEST_UNSET_VAR}"}}}}
	if err := cfg.Validate("auth"); err == nil || !strings.Contains(err.Error(), "auth.tenants[0].bearer_tokens[0]") {
		t.Fatalf("Validate: %v", err)
	}
}
