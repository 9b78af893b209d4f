package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/budget"
	"github.com/spangraph/spangraph/pkg/query"
)

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Every bad file must stop start-up with an error that names the key.
func TestErrorsNameTheKey(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"colection_interval: 15s", "field colection_interval not found"},
		{"spanmetrics:\n  dimensons: [a]", "field dimensons not found"},
		{"collection_interval: 10ms", "collection_interval: must be at least 1s"},
		{"collection_interval: soon", "cannot unmarshal"},
		{"log_level: loud", "log_level"},
		{"receiver:\n  max_request_bytes: -1", "receiver.max_request_bytes"},
		{"registry:\n  stale_duration: 0s", "registry.stale_duration"},
		{"spanmetrics:\n  histogram_buckets: [1, 0.5]", "spanmetrics.histogram_buckets[1]"},
		{"servicegraph:\n  wait: 0s", "servicegraph.wait"},
		{"servicegraph:\n  dimensions: [a.b, a_b]", "servicegraph.dimensions"},
		{"servicegraph:\n  virtual_node_latency: average", `servicegraph.virtual_node_latency: "average" is not zero, omit or mirror`},
		{"spanmetrics:\n  enable_tracestate_span_multiplier: maybe", "cannot unmarshal"},
		{"rolling_window: 1s", "rolling_window: must be 0 (none) or at least collection_interval"},
		{"rolling_window: 48h", "rolling_window: must not exceed retention"},
		{"checkpoint_interval: 10ms", "checkpoint_interval: must be 0 (none) or at least 100ms"},
		{"overrides:\n  team-a:\n    generate_native_histograms: sparse", "overrides.team-a.generate_native_histograms"},
		{"overrides:\n  team-a:\n    native_histogram_bucket_factor: 1", "overrides.team-a.native_histogram_bucket_factor"},
		{"overrides:\n  ../x:\n    generate_native_histograms: native", "overrides: tenant"},
		{"overrides:\n  team-a:\n    wait: 1s", "field wait not found"},
		{"max_tenants: 0", "max_tenants"},
		{"query:\n  max_samples: -1", "query.max_samples: must be positive"},
		{"query:\n  max_depth: deep", "cannot unmarshal"},
		{"cluster:\n  join: [a:7946]\n  tokens: 0", "cluster.tokens"},
		{"cluster:\n  join: [a:7946]\notlp_grpc: ''", "otlp_grpc: a ring member forwards spans"},
		{"cluster:\n  join: [a:7946]\nreceiver:\n  tls:\n    cert_file: c.pem\n    key_file: k.pem", "cluster.join: ring members forward spans"},
		{"query_backend:\n  url: ftp://p", "query_backend.url"},
		{"query_backend:\n  bearer_token: t", "query_backend"},
		// Syntax errors say where.
		{"\tdata_dir: /x", "yaml: line 1: found character that cannot start any token"},
		{"data_dir: \"/x", "yaml: line 1: found unexpected end of stream"},
		{"data_dir: /x\n  http: ':1'", "yaml: line 2: mapping values are not allowed"},
	}
	for _, tc := range tests {
		c := Default()
		err := c.LoadYAML([]byte(tc.yaml))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.want)
		}
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spangraph.yaml")
	if err := os.WriteFile(path, []byte("data_dir: /from/file\ncollection_interval: 30s\nhttp: ':1'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f := RegisterFlags(fs)
	if err := fs.Parse([]string{"--config", path, "--collection-interval", "2s"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	// The file beats defaults; a flag given on the command line beats the file;
	// a flag left alone does not reset the file's value.
	if c.DataDir != "/from/file" || c.CollectionInterval != 2*time.Second || c.HTTP != ":1" || c.OTLPGRPC != "127.0.0.1:4317" {
		t.Errorf("got data_dir=%q collection_interval=%s http=%q otlp_grpc=%q", c.DataDir, c.CollectionInterval, c.HTTP, c.OTLPGRPC)
	}
}

// TestMissingFile: the error names the setting as the user wrote it: the
// --config flag on the command line, GF_PLUGIN_CONFIG_FILE in Grafana.
func TestMissingFile(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f := RegisterFlags(fs)
	if err := fs.Parse([]string{"--config", "/nonexistent/spangraph.yaml"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(); err == nil || err.Error() != "--config: open /nonexistent/spangraph.yaml: no such file or directory" {
		t.Errorf("flag: error %v", err)
	}
	c := Default()
	err := c.LoadEnv("GF_PLUGIN_", []string{"GF_PLUGIN_CONFIG_FILE=/nonexistent/spangraph.yaml"})
	if err == nil || !strings.HasPrefix(err.Error(), "GF_PLUGIN_CONFIG_FILE (config_file): open /nonexistent/spangraph.yaml") {
		t.Errorf("environment: error %v", err)
	}
}

// TestMemoryBudget: memory_limit sizes what is left unset, keeps what is
// set, and is refused below the minimum with its key named.
func TestMemoryBudget(t *testing.T) {
	for _, tc := range []struct {
		name      string
		yaml      string
		wantQueue int
		wantErr   string
	}{
		{name: "derived", yaml: "memory_limit: 2GiB", wantQueue: 256 << 20},
		{name: "explicit wins", yaml: "memory_limit: 2GiB\nreceiver:\n  max_queue_bytes: 100000000", wantQueue: 100_000_000},
		{name: "too small", yaml: "memory_limit: 100MiB", wantErr: "memory_limit: must be at least 256MiB, got 100MiB"},
		{name: "not a size", yaml: "memory_limit: lots", wantErr: `line 1: "lots" is not a size`},
		{name: "queue below one request", yaml: "memory_limit: 256MiB\nreceiver:\n  max_request_bytes: 50000000",
			wantErr: "receiver.max_queue_bytes: must be at least receiver.max_request_bytes (50000000), got 33554432"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			err := c.LoadYAML([]byte(tc.yaml))
			if err == nil {
				err = c.Validate()
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || c.Receiver.MaxQueueBytes != tc.wantQueue {
				t.Fatalf("max_queue_bytes = %d, %v; want %d", c.Receiver.MaxQueueBytes, err, tc.wantQueue)
			}
			// A query may hold its share of an eighth of the budget.
			if want := (2 << 30) / 8 / query.BytesPerSample / c.Query.MaxConcurrency; c.Query.MaxSamples != want {
				t.Fatalf("query.max_samples = %d, want %d", c.Query.MaxSamples, want)
			}
		})
	}
	// Unset, it is a share of the machine, never below the minimum.
	c := Default()
	if err := c.Validate(); err != nil || c.MemoryLimit < budget.Minimum {
		t.Fatalf("default memory_limit %s, %v", c.MemoryLimit, err)
	}
}
