package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadEnv(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "spangraph.yaml")
	// The file sets retention and data_dir; the environment overrides data_dir.
	if err := os.WriteFile(file, []byte("retention: 48h\ndata_dir: /from/file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	err := c.LoadEnv("GF_PLUGIN_", []string{
		"GF_PLUGIN_DATA_DIR=/from/env",
		"GF_PLUGIN_CONFIG_FILE=" + file,
		"GF_PLUGIN_OTLP_GRPC=127.0.0.1:14317",
		"GF_PLUGIN_OTLP_HTTP=",
		"GF_PLUGIN_HTTP=",
		"GF_PLUGIN_COLLECTION_INTERVAL=1s",
		"GF_PLUGIN_MAX_EXEMPLARS=7",
		"GF_PLUGIN_MAX_TENANTS=3",
		"GF_PLUGIN_LOG_LEVEL=debug",
		"GF_PLUGIN_APP_CLIENT_SECRET=ignored",
		"GF_PATHS_DATA=/var/lib/grafana",
		"NOEQUALS",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.DataDir = "/from/env"
	want.Retention = 48 * time.Hour
	want.OTLPGRPC = "127.0.0.1:14317"
	want.OTLPHTTP = ""
	want.HTTP = ""
	want.CollectionInterval = time.Second
	want.MaxExemplars = 7
	want.MaxTenants = 3
	want.LogLevel = "debug"
	if c.DataDir != want.DataDir || c.Retention != want.Retention || c.OTLPGRPC != want.OTLPGRPC ||
		c.OTLPHTTP != want.OTLPHTTP || c.HTTP != want.HTTP || c.CollectionInterval != want.CollectionInterval ||
		c.MaxExemplars != want.MaxExemplars || c.MaxTenants != want.MaxTenants || c.LogLevel != want.LogLevel {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadEnvErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"X_COLLECTION_INTERVAL=often", "X_COLLECTION_INTERVAL (collection_interval): invalid value \"often\""},
		{"X_RETENTION=1", "X_RETENTION (retention)"},
		{"X_MAX_EXEMPLARS=many", "X_MAX_EXEMPLARS (max_exemplars): invalid value \"many\": invalid syntax"},
		{"X_MAX_TENANTS=1.5", "X_MAX_TENANTS (max_tenants)"},
		{"X_CONFIG_FILE=/does/not/exist.yaml", "X_CONFIG_FILE (config_file): open /does/not/exist.yaml"},
		{"X_MEMORY_LIMIT=lots", `X_MEMORY_LIMIT (memory_limit): invalid value "lots": "lots" is not a size such as 512MiB`},
	} {
		c := Default()
		err := c.LoadEnv("X_", []string{tc.env})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.env, err, tc.want)
		}
	}
	// A value that parses but is out of range is Validate's to refuse,
	// with the key's name.
	c := Default()
	if err := c.LoadEnv("X_", []string{"X_MAX_TENANTS=0"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "max_tenants:") {
		t.Fatalf("got %v", err)
	}
}

// TestLoadEnvEmptyKeepsDefault: grafana.ini lists every key the plugin
// reads, most of them empty; an empty value keeps the default, except
// where empty is itself a setting (no listener).
func TestLoadEnvEmptyKeepsDefault(t *testing.T) {
	c := Default()
	err := c.LoadEnv("GF_PLUGIN_", []string{
		"GF_PLUGIN_CONFIG_FILE=", "GF_PLUGIN_DATA_DIR=", "GF_PLUGIN_MAX_TENANTS=", "GF_PLUGIN_MAX_EXEMPLARS=",
		"GF_PLUGIN_MEMORY_LIMIT=", "GF_PLUGIN_RETENTION=", "GF_PLUGIN_LOG_LEVEL=", "GF_PLUGIN_OTLP_HTTP=",
	})
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.DataDir != d.DataDir || c.MaxTenants != d.MaxTenants || c.MaxExemplars != d.MaxExemplars ||
		c.MemoryLimit != d.MemoryLimit || c.Retention != d.Retention || c.LogLevel != d.LogLevel || c.OTLPHTTP != "" {
		t.Fatalf("empty values changed settings: %+v", c)
	}
	if err := c.LoadEnv("GF_PLUGIN_", []string{"GF_PLUGIN_MEMORY_LIMIT=1.5GiB"}); err != nil || c.MemoryLimit != 3<<29 {
		t.Fatalf("memory_limit = %s, %v; want 1.5GiB", c.MemoryLimit, err)
	}
}

func TestLoadEnvRemoteWriteURL(t *testing.T) {
	tests := []struct {
		value string
		want  int
		err   string
	}{
		{"", 0, ""},
		{"http://a:9090/api/v1/write", 1, ""},
		{"http://a:9090/api/v1/write, http://b:9009/api/v1/push", 2, ""},
		{"::nope", 0, "GF_PLUGIN_REMOTE_WRITE_URL (remote_write_url)"},
	}
	for _, tc := range tests {
		c := Default()
		err := c.LoadEnv("GF_PLUGIN_", []string{"GF_PLUGIN_REMOTE_WRITE_URL=" + tc.value})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one naming %s", tc.value, err, tc.err)
			}
			continue
		}
		if err != nil || len(c.RemoteWrite) != tc.want {
			t.Errorf("%q: %d endpoints (err %v), want %d", tc.value, len(c.RemoteWrite), err, tc.want)
		}
	}
}

// TestPluginConfigFile: the plugin watches the file LoadPlugin reads,
// named as LoadEnv reads names (case-insensitive after the prefix).
func TestPluginConfigFile(t *testing.T) {
	for _, tc := range []struct {
		environ []string
		want    string
	}{
		{nil, ""},
		{[]string{"GF_PLUGIN_CONFIG_FILE=/etc/s.yaml"}, "/etc/s.yaml"},
		{[]string{"GF_PLUGIN_config_file=/etc/s.yaml"}, "/etc/s.yaml"},
		{[]string{"GF_PLUGIN_DATA_DIR=/d", "CONFIG_FILE=/x"}, ""},
	} {
		if got := PluginConfigFile(tc.environ); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.environ, got, tc.want)
		}
	}
}
