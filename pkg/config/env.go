package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// PluginEnvPrefix is how Grafana passes the keys of the plugin's
// [plugin.<id>] section of grafana.ini to the plugin process.
const PluginEnvPrefix = "GF_PLUGIN_"

// configFileEnv is the environment key naming a YAML file, the --config
// of the environment.
const configFileEnv = "config_file"

// PluginConfigFile returns the config file the plugin's environment names
// (GF_PLUGIN_CONFIG_FILE, read as LoadPlugin reads it), or "".
func PluginConfigFile(environ []string) string {
	path := ""
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(name, PluginEnvPrefix) && strings.ToLower(strings.TrimPrefix(name, PluginEnvPrefix)) == configFileEnv {
			path = value
		}
	}
	return path
}

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
	if path, ok := vars[configFileEnv]; ok && path != "" {
		if err := c.LoadFile(path); err != nil {
			return fmt.Errorf("%s%s (%s): %w", prefix, strings.ToUpper(configFileEnv), configFileEnv, err)
		}
	}
	for _, s := range settings {
		value, ok := vars[s.env]
		// An empty value is a key listed in grafana.ini without a value:
		// the default stands, except where empty means off.
		if !ok || (value == "" && !s.emptyMeansOff) {
			continue
		}
		if err := s.set(c, value); err != nil {
			return fmt.Errorf("%s%s (%s): %w", prefix, strings.ToUpper(s.env), s.env, err)
		}
	}
	return nil
}

// LoadPlugin builds the config of the Grafana plugin's process: defaults
// for running inside Grafana, then GF_PLUGIN_CONFIG_FILE, then the other
// GF_PLUGIN_* keys, then validation. Inside Grafana the data lives under
// Grafana's data directory (GF_PATHS_DATA, which Grafana sets for its
// plugins), and the standalone query API is off: Grafana reaches the
// plugin through its resources.
func LoadPlugin(environ []string) (Config, error) {
	c := Default()
	c.HTTP = ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GF_PATHS_DATA="); ok && v != "" {
			c.DataDir = filepath.Join(v, "spangraph")
		}
	}
	if err := c.LoadEnv(PluginEnvPrefix, environ); err != nil {
		return c, err
	}
	return c, c.Validate()
}
