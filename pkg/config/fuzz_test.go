package config

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// topLevelKeys are the YAML keys of Config.
func topLevelKeys() map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" && k != "-" {
			keys[k] = true
		}
	}
	return keys
}

// yamlPosition is how yaml.v3 says where in the file an error is.
var yamlPosition = regexp.MustCompile(`\bline \d+\b`)

// FuzzConfigYAML loads random YAML over the defaults and validates it, as
// start-up does. It must never panic, and an error must point at what to
// fix: either a YAML position ("line 3: …") or a key path that starts with
// one of Config's keys ("spanmetrics.histogram_buckets[1]: …").
//
// Validation reads the files that secrets and TLS settings name; inputs
// naming device or process files are skipped, so that the fuzzer cannot
// make it read /dev/zero forever.
//
// Seeds: testdata/fuzz/FuzzConfigYAML (the README's examples, every
// section, wrong types, unknown keys, anchors and aliases, tabs, BOMs,
// documents separators, very large numbers).
func FuzzConfigYAML(f *testing.F) {
	f.Add([]byte("data_dir: /var/lib/spangraph\ncollection_interval: 15s\n"))
	f.Add([]byte("spanmetrics:\n  histogram_buckets: [1, 0.5]\n"))
	keys := topLevelKeys()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, dev := range []string{"/dev", "/proc", "/sys"} {
			if strings.Contains(string(data), dev) {
				t.Skip("names a device or process file")
			}
		}
		c := Default()
		err := c.LoadYAML(data)
		if err != nil {
			msg := err.Error()
			// Known gap, reported: yaml.v3 leaves the line out of syntax
			// errors on the first line, of reader errors (control
			// characters, bad UTF-8) and of unknown anchors. Those are
			// held to being yaml.v3 syntax errors; every decoding error
			// ("unmarshal errors", wrong types, unknown keys) must carry
			// its line.
			if !yamlPosition.MatchString(msg) &&
				(!strings.HasPrefix(msg, "yaml: ") || strings.Contains(msg, "unmarshal") || strings.Contains(msg, "field")) {
				t.Fatalf("YAML error without a position: %q", msg)
			}
			return
		}
		if err := c.Validate(); err != nil {
			msg := err.Error()
			end := strings.IndexAny(msg, ".[: ")
			if end <= 0 || !keys[msg[:end]] {
				t.Fatalf("validation error does not start with a key: %q", msg)
			}
		}
	})
}
