package config

import (
	"strings"
	"testing"
	"time"
)

func TestCheckReload(t *testing.T) {
	base := Default()
	for _, tc := range []struct {
		name    string
		change  func(*Config)
		wantKey string // "" when reloadable
	}{
		{"nothing", func(*Config) {}, ""},
		{"dimensions", func(c *Config) { c.SpanMetrics.Dimensions = []string{"http.method"} }, ""},
		{"service graph wait", func(c *Config) { c.ServiceGraph.Wait = time.Minute }, ""},
		{"registry limits", func(c *Config) { c.Registry.MaxActiveSeries = 7 }, ""},
		{"ingestion limits", func(c *Config) { c.Limits.TenantLimits.SpansPerSecond = 5 }, ""},
		{"data_dir", func(c *Config) { c.DataDir = "/elsewhere" }, "data_dir"},
		{"listener", func(c *Config) { c.OTLPHTTP = "127.0.0.1:1" }, "otlp_http"},
		{"nested", func(c *Config) { c.Query.MaxSamples = 9 }, "query.max_samples"},
		{"receiver", func(c *Config) { c.Receiver.MaxRequestBytes = 9 }, "receiver.max_request_bytes"},
		{"collection_interval", func(c *Config) { c.CollectionInterval = time.Minute }, "collection_interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := Default()
			tc.change(&next)
			err := base.CheckReload(&next)
			switch {
			case tc.wantKey == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.wantKey != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantKey+": cannot change without a restart")):
				t.Errorf("err = %v, want one naming %s", err, tc.wantKey)
			}
		})
	}
}

// TestReloadableKeysExist: every reloadable key is a top-level key.
func TestReloadableKeysExist(t *testing.T) {
	keys := topLevelKeys()
	for _, k := range Reloadable {
		if !keys[k] {
			t.Errorf("Reloadable lists %q, which is not a top-level key", k)
		}
	}
}
