package remotewrite

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"
	"gopkg.in/yaml.v3"
)

func decode(y string) (Config, error) {
	var doc struct {
		RemoteWrite Config `yaml:"remote_write"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(y)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	return doc.RemoteWrite, doc.RemoteWrite.Validate("remote_write")
}

// TestConfigYAML: Prometheus' own remote_write blocks decode with yaml.v3,
// with Prometheus' defaults, and errors name the entry.
func TestConfigYAML(t *testing.T) {
	cfg, err := decode(`
remote_write:
  - url: https://mimir.example/api/v1/push
    name: mimir
    remote_timeout: 5s
    headers: {X-Scope-OrgID: ops}
    basic_auth: {username: u, password: p}
    tls_config: {insecure_skip_verify: true}
    protobuf_message: io.prometheus.write.v2.Request
    send_exemplars: true
    send_native_histograms: true
    queue_config: {max_shards: 4}
    write_relabel_configs:
      - {source_labels: [__name__], regex: "traces_.*", action: keep}
  - url: http://prom:9090/api/v1/write
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg) != 2 {
		t.Fatalf("%d entries", len(cfg))
	}
	m := cfg[0]
	if m.Name != "mimir" || time.Duration(m.RemoteTimeout) != 5*time.Second || m.Headers["X-Scope-OrgID"] != "ops" ||
		m.HTTPClientConfig.BasicAuth.Password != "p" || !m.HTTPClientConfig.TLSConfig.InsecureSkipVerify ||
		m.ProtobufMessage != "io.prometheus.write.v2.Request" || !m.SendExemplars || !m.SendNativeHistograms ||
		m.QueueConfig.MaxShards != 4 || len(m.WriteRelabelConfigs) != 1 {
		t.Errorf("decoded %+v", m)
	}
	// Prometheus' defaults fill what is not given.
	if p := cfg[1]; p.QueueConfig.MaxSamplesPerSend != config.DefaultQueueConfig.MaxSamplesPerSend ||
		p.RemoteTimeout != config.DefaultRemoteWriteConfig.RemoteTimeout || m.QueueConfig.Capacity != config.DefaultQueueConfig.Capacity {
		t.Errorf("defaults not applied: %+v", p)
	}

	for _, c := range []struct{ yaml, want string }{
		{"remote_write:\n  - url: http://a\n  - url: http://b\n    colour: red\n", "remote_write[1]: line 4: field colour not found"},
		{"remote_write:\n  - name: x\n", "remote_write[0]: line 2: url for remote_write is empty"},
		{"remote_write:\n  - url: ftp://a\n", "remote_write[0].url: \"ftp://a\" must be an http:// or https:// URL"},
		// Shown as written, not escaped ("not%20a%20url"), password hidden.
		{"remote_write:\n  - url: not a url\n", "remote_write[0].url: \"not a url\" must be an http:// or https:// URL"},
		{"remote_write:\n  - url: ftp://u:secret@a/my path\n", "remote_write[0].url: \"ftp://u:xxxxx@a/my path\" must be an http:// or https:// URL"},
		{"remote_write:\n  - url: http://a\n  - url: http://a\n", "remote_write[1].url: same URL as remote_write[0]"},
		{"remote_write:\n  - {url: http://a, name: x}\n  - {url: http://b, name: x}\n", "remote_write[1].name: \"x\" is also the name of remote_write[0]"},
		{"remote_write:\n  - url: http://a\n    protobuf_message: v3\n", "remote_write[0]: line 2: invalid protobuf_message value"},
		{"remote_write: {url: http://a}\n", "must be a list"},
	} {
		if _, err := decode(c.yaml); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
}

func TestFromURLs(t *testing.T) {
	var f URLFlag
	_ = f.Set("http://a:9090/api/v1/write")
	_ = f.Set("https://b/api/v1/push")
	cfg, err := FromURLs(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg) != 2 || cfg[1].URL.Host != "b" || cfg[0].QueueConfig.MaxShards != config.DefaultQueueConfig.MaxShards {
		t.Errorf("%+v", cfg)
	}
	if endpointName(cfg[0]) == endpointName(cfg[1]) || endpointName(cfg[0]) != endpointName(cfg[0]) {
		t.Error("default names must be distinct and stable")
	}
	if _, err := FromURLs([]string{"localhost:9090"}); err == nil {
		t.Error("a URL without scheme must be refused")
	}
}
