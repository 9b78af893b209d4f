package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spangraph/spangraph/pkg/budget"
	"github.com/spangraph/spangraph/pkg/remotewrite"
)

// LoadEnv applies environment variables named prefix + an upper-cased
// top-level scalar key (GF_PLUGIN_DATA_DIR for data_dir with prefix
// "GF_PLUGIN_") over c. environ is in os.Environ form. The key config_file
// names a YAML file that is read first, so that the environment overrides
// the file whatever the order of the variables.
//
// Variables under prefix that name no key are ignored, not refused: Grafana
// passes every key of a plugin's grafana.ini section, and its own
// GF_PLUGIN_* variables, to the plugin process.
func (c *Config) LoadEnv(prefix string, environ []string) error {
	vars := map[string]string{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		vars[strings.ToLower(strings.TrimPrefix(name, prefix))] = value
	}
	if path, ok := vars["config_file"]; ok && path != "" {
		if err := c.LoadFile(path); err != nil {
			return fmt.Errorf("%sCONFIG_FILE (config_file): %w", prefix, err)
		}
	}
	for _, key := range envKeys {
		value, ok := vars[key]
		// An empty value is a key listed in grafana.ini without a value:
		// the default stands, except for addresses and remote_write_url,
		// where empty means off.
		if !ok || (value == "" && !emptyMeansOff[key]) {
			continue
		}
		if err := c.setKey(key, value); err != nil {
			return fmt.Errorf("%s%s (%s): %w", prefix, strings.ToUpper(key), key, err)
		}
	}
	return nil
}

// envKeys are the keys LoadEnv sets, in a fixed order so that the first
// bad one is always the one reported.
var envKeys = []string{
	"data_dir", "otlp_grpc", "otlp_http", "http", "collection_interval",
	"retention", "max_exemplars", "max_tenants", "tenant_idle_timeout", "log_level", "remote_write_url", "memory_limit",
}

// emptyMeansOff are the keys whose empty value is a setting: no listener,
// no remote-write endpoint.
var emptyMeansOff = map[string]bool{"otlp_grpc": true, "otlp_http": true, "http": true, "remote_write_url": true}

func (c *Config) setKey(key, value string) error {
	var err error
	switch key {
	case "data_dir":
		c.DataDir = value
	case "otlp_grpc":
		c.OTLPGRPC = value
	case "otlp_http":
		c.OTLPHTTP = value
	case "http":
		c.HTTP = value
	case "collection_interval":
		c.CollectionInterval, err = parseDuration(value)
	case "retention":
		c.Retention, err = parseDuration(value)
	case "max_exemplars":
		c.MaxExemplars, err = strconv.ParseInt(value, 10, 64)
	case "max_tenants":
		c.MaxTenants, err = strconv.Atoi(value)
	case "tenant_idle_timeout":
		c.TenantIdleTimeout, err = parseDuration(value)
	case "log_level":
		c.LogLevel = value
	case "memory_limit":
		var b budget.Bytes
		b, err = budget.ParseBytes(value)
		c.MemoryLimit = b
	case "remote_write_url":
		// Comma-separated URLs; empty (an unset grafana.ini key) is off.
		var urls []string
		for _, u := range strings.Split(value, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
		c.RemoteWrite, err = remotewrite.FromURLs(urls)
		if err != nil {
			return err
		}
	}
	if err != nil {
		return fmt.Errorf("invalid value %q: %w", value, unwrapNum(err))
	}
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration such as 15s or 24h")
	}
	return d, nil
}

// unwrapNum drops strconv's repetition of the input from its errors.
func unwrapNum(err error) error {
	if ne, ok := err.(*strconv.NumError); ok {
		return ne.Err
	}
	return err
}
