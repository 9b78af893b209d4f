package remotewrite

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"gopkg.in/yaml.v3"
)

// Config is the `remote_write:` list, in Prometheus' own format (url, name,
// headers, basic_auth, authorization, tls_config, queue_config,
// protobuf_message, send_exemplars, send_native_histograms,
// write_relabel_configs, …), so that a block copied from a Prometheus
// config works unchanged.
type Config []*config.RemoteWriteConfig

// UnmarshalYAML decodes each entry with Prometheus' own UnmarshalYAML
// (defaults and validation), strictly (unknown keys are errors), and names
// the entry in the error. Each entry is re-encoded and decoded on its own
// because yaml.v3's Node.Decode would drop the caller's KnownFields.
func (c *Config) UnmarshalYAML(value *yaml.Node) error {
	if value.Kind != yaml.SequenceNode {
		return fmt.Errorf("remote_write (line %d): must be a list of endpoints", value.Line)
	}
	out := make(Config, 0, len(value.Content))
	for i, n := range value.Content {
		raw, err := yaml.Marshal(n)
		if err != nil {
			return fmt.Errorf("remote_write[%d] (line %d): %w", i, n.Line, err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(raw)))
		dec.KnownFields(true)
		rw := &config.RemoteWriteConfig{}
		if err := dec.Decode(rw); err != nil {
			return fmt.Errorf("remote_write[%d]: %s", i, entryError(err, n.Line))
		}
		out = append(out, rw)
	}
	*c = out
	return nil
}

var lineRE = regexp.MustCompile(`line (\d+):`)

// entryError makes a decoding error of one re-encoded entry read as one of
// the file: its line numbers count from the entry's first line.
func entryError(err error, first int) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	msg = strings.ReplaceAll(msg, " in type config.plain", "")
	msg = lineRE.ReplaceAllStringFunc(msg, func(m string) string {
		n, _ := strconv.Atoi(lineRE.FindStringSubmatch(m)[1])
		return fmt.Sprintf("line %d:", first+n-1)
	})
	if !lineRE.MatchString(msg) {
		msg = fmt.Sprintf("line %d: %s", first, msg)
	}
	return msg
}

// FromURLs builds a config from bare URLs (the repeatable --remote-write-url
// flag), with Prometheus' defaults for everything else.
func FromURLs(urls []string) (Config, error) {
	out := make(Config, 0, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("remote_write[%d].url: %w", i, err)
		}
		rw := config.DefaultRemoteWriteConfig
		rw.URL = &config_util.URL{URL: u}
		out = append(out, &rw)
	}
	return out, out.Validate("remote_write")
}

// URLFlag collects a repeatable URL flag (flag.Value).
type URLFlag []string

func (f *URLFlag) String() string { return strings.Join(*f, ",") }

// Set appends one URL.
func (f *URLFlag) Set(s string) error {
	*f = append(*f, s)
	return nil
}

// Validate checks what Prometheus' UnmarshalYAML does not (or what a config
// built in code skipped), naming the key as key[i].field.
func (c Config) Validate(key string) error {
	names := map[string]int{}
	for i, rw := range c {
		k := fmt.Sprintf("%s[%d]", key, i)
		if rw == nil {
			return fmt.Errorf("%s: empty entry", k)
		}
		if rw.URL == nil || rw.URL.URL == nil {
			return fmt.Errorf("%s.url: required", k)
		}
		if s := rw.URL.Scheme; s != "http" && s != "https" {
			return fmt.Errorf("%s.url: %q must be an http:// or https:// URL", k, shown(rw.URL.URL))
		}
		if rw.URL.Host == "" {
			return fmt.Errorf("%s.url: %q has no host", k, shown(rw.URL.URL))
		}
		for h := range rw.Headers {
			if strings.EqualFold(h, "Authorization") {
				return fmt.Errorf("%s.headers: set Authorization with basic_auth or authorization, not as a header", k)
			}
		}
		if err := rw.ProtobufMessage.Validate(); err != nil {
			return fmt.Errorf("%s.protobuf_message: %w", k, err)
		}
		if err := rw.HTTPClientConfig.Validate(); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if err := rw.QueueConfig.Validate(); err != nil {
			return fmt.Errorf("%s.queue_config: %w", k, err)
		}
		for j, rc := range rw.WriteRelabelConfigs {
			if rc == nil {
				return fmt.Errorf("%s.write_relabel_configs[%d]: empty rule", k, j)
			}
			// Prometheus does this in config.Load; the scheme must be set
			// before relabel.Process uses the rule.
			if err := rc.Validate(model.UTF8Validation); err != nil {
				return fmt.Errorf("%s.write_relabel_configs[%d]: %w", k, j, err)
			}
		}
		name := endpointName(rw)
		if j, dup := names[name]; dup {
			if rw.Name == "" {
				return fmt.Errorf("%s.url: same URL as %s[%d]; give them distinct `name`s", k, key, j)
			}
			return fmt.Errorf("%s.name: %q is also the name of %s[%d]", k, name, key, j)
		}
		names[name] = i
	}
	return nil
}

// endpointName is the configured name or one derived from the URL, stable
// across restarts so that the endpoint finds its marker again.
func endpointName(rw *config.RemoteWriteConfig) string {
	if rw.Name != "" {
		return rw.Name
	}
	sum := sha256.Sum256([]byte(rw.URL.String()))
	return "rw-" + hex.EncodeToString(sum[:4])
}

// shown is a URL as its user wrote it, password hidden: Redacted escapes
// it, so "not a url" would read "not%20a%20url" in the error.
func shown(u *url.URL) string {
	r := u.Redacted()
	if unescaped, err := url.PathUnescape(r); err == nil {
		return unescaped
	}
	return r
}
