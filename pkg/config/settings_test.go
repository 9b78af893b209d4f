package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestSettingsAreConfigsKeys: each setting points at the field its YAML
// key names (a top-level key, or a key of a section), every top-level key
// that is not a section has a setting, and no two settings share a name.
func TestSettingsAreConfigsKeys(t *testing.T) {
	var c Config
	v := reflect.ValueOf(&c).Elem()
	fields := map[string]reflect.Value{}
	inSections := map[string]reflect.Value{}
	for i := 0; i < v.NumField(); i++ {
		key := yamlKey(v.Type().Field(i))
		if v.Field(i).Kind() != reflect.Struct {
			fields[key] = v.Field(i)
			continue
		}
		for j := 0; j < v.Field(i).NumField(); j++ {
			if f := v.Field(i).Type().Field(j); f.IsExported() {
				inSections[key+"."+yamlKey(f)] = v.Field(i).Field(j)
			}
		}
	}
	names := map[string]string{}
	for _, s := range settings {
		f, ok := fields[s.yaml]
		if !ok {
			f, ok = inSections[s.yaml]
		}
		if !ok {
			t.Errorf("setting %s: no key %s", s.yaml, s.yaml)
			continue
		}
		if p := reflect.ValueOf(s.field(&c)); p.Pointer() != f.Addr().Pointer() || p.Elem().Type() != f.Type() {
			t.Errorf("setting %s: field is not Config's %s", s.yaml, s.yaml)
		}
		delete(fields, s.yaml)
		for _, n := range []string{"yaml " + s.yaml, "flag " + s.flag, "env " + s.env} {
			if other, dup := names[n]; dup {
				t.Errorf("settings %s and %s share the %s", other, s.yaml, n)
			}
			names[n] = s.yaml
		}
		if s.flag == configFlag || s.env == configFileEnv {
			t.Errorf("setting %s takes the name of the config file", s.yaml)
		}
	}
	for key := range fields {
		t.Errorf("top-level key %s has no setting: no flag, no environment variable", key)
	}
}

// TestFlagsAndEnvSetEveryKey: a flag and its environment variable, given
// the same value, set the same key to the same thing, and each key of the
// table can be set both ways.
func TestFlagsAndEnvSetEveryKey(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("t0k"), 0o600); err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"data_dir":            "/d",
		"otlp_grpc":           "127.0.0.1:1",
		"otlp_http":           "127.0.0.1:2",
		"http":                "127.0.0.1:3",
		"collection_interval": "2s",
		"checkpoint_interval": "500ms",
		"retention":           "48h",
		"rolling_window":      "30m",
		"max_exemplars":       "7",
		"max_tenants":         "3",
		"tenant_idle_timeout": "2h",
		"memory_limit":        "1GiB",
		"log_level":           "debug",
		"remote_write":        "http://a:9090/api/v1/write",

		"cluster.join":              "127.0.0.1:7946,127.0.0.2:7946",
		"cluster.listen":            "127.0.0.1:7947",
		"cluster.advertise":         "127.0.0.1",
		"cluster.instance_id":       "node-a",
		"cluster.tokens":            "64",
		"cluster.heartbeat_timeout": "9s",

		"query_backend.url":               "http://p:9090",
		"query_backend.bearer_token_file": tokenFile,
		"query_backend.tenant_header":     "X-Tenant",
		"query_backend.timeout":           "10s",
	}
	var args, env []string
	for _, s := range settings {
		value, ok := values[s.yaml]
		if !ok {
			t.Fatalf("no test value for %s", s.yaml)
		}
		args = append(args, "--"+s.flag, value)
		env = append(env, "X_"+strings.ToUpper(s.env)+"="+value)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	fromFlags, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	fromEnv := Default()
	if err := fromEnv.LoadEnv("X_", env); err != nil {
		t.Fatal(err)
	}
	if err := fromEnv.Validate(); err != nil {
		t.Fatal(err)
	}
	def := Default()
	def.Resolve()
	for _, s := range settings {
		got, want := reflect.ValueOf(s.field(&fromFlags)).Elem(), reflect.ValueOf(s.field(&fromEnv)).Elem()
		if !reflect.DeepEqual(got.Interface(), want.Interface()) {
			t.Errorf("%s: flag set %v, environment %v", s.yaml, got, want)
		}
		if reflect.DeepEqual(got.Interface(), reflect.ValueOf(s.field(&def)).Elem().Interface()) {
			t.Errorf("--%s %s left %s at its default", s.flag, values[s.yaml], s.yaml)
		}
	}
}

// TestFlagErrorsNameTheFlag: a value the flag cannot parse, a URL list
// that is no list of URLs and a value out of range each name what to fix.
func TestFlagErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		parseErr string
		loadErr  string
	}{
		{args: []string{"--retention", "soon"}, parseErr: `invalid value "soon" for flag -retention`},
		{args: []string{"--max-exemplars", "many"}, parseErr: `invalid value "many" for flag -max-exemplars`},
		{args: []string{"--memory-limit", "lots"}, parseErr: `invalid value "lots" for flag -memory-limit`},
		{args: []string{"--remote-write-url", "::nope"}, loadErr: "--remote-write-url: remote_write[0].url: "},
		{args: []string{"--max-tenants", "0"}, loadErr: "max_tenants: must be at least 1"},
		{args: []string{"--log-level", "loud"}, loadErr: `log_level: "loud" is not`},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f := RegisterFlags(fs)
		err := fs.Parse(tc.args)
		if tc.parseErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
				t.Errorf("%q: parse error %v, want %q", tc.args, err, tc.parseErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if _, err := f.Load(); err == nil || !strings.HasPrefix(err.Error(), tc.loadErr) {
			t.Errorf("%q: error %v, want one starting %q", tc.args, err, tc.loadErr)
		}
	}
}
