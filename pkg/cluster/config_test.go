package cluster

import (
	"net"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(c *Config)
		wantErr string // substring; "" means valid
	}{
		{"defaults, no cluster", func(*Config) {}, ""},
		{"defaults with join", func(c *Config) {
			c.Join = []string{"10.0.0.1:7946", "spangraph-0.spangraph", "dns+spangraph-gossip:7946", "dnssrv+_gossip._tcp.spangraph"}
		}, ""},
		{"test listen", func(c *Config) { c.Join = []string{"127.0.0.1:7000"}; c.Listen = "127.0.0.1:0" }, ""},
		{"advertise host and port", func(c *Config) { c.Advertise = "spangraph-0.example.com:9000" }, ""},
		{"advertise IPv6", func(c *Config) { c.Advertise = "[fd00::1]:7946" }, ""},
		{"empty join entry", func(c *Config) { c.Join = []string{"a:1", ""} }, "cluster.join[1]: "},
		{"join bad port", func(c *Config) { c.Join = []string{"host:99999"} }, "cluster.join[0]: "},
		{"join unknown lookup", func(c *Config) { c.Join = []string{"dnsx+host:1"} }, "cluster.join[0]: \"dnsx+host:1\" has an unknown lookup type"},
		{"join dns without name", func(c *Config) { c.Join = []string{"dns+"} }, "cluster.join[0]: "},
		{"listen without port", func(c *Config) { c.Listen = "0.0.0.0" }, "cluster.listen: "},
		{"listen host name", func(c *Config) { c.Listen = "localhost:7946" }, "cluster.listen: host must be an IP address"},
		{"listen port 0 on all interfaces", func(c *Config) { c.Listen = "0.0.0.0:0" }, "cluster.listen: port 0"},
		{"listen port 0 with advertise", func(c *Config) { c.Listen = "127.0.0.1:0"; c.Advertise = "10.0.0.1" }, "cluster.listen: port 0"},
		{"advertise bad port", func(c *Config) { c.Advertise = "host:0" }, "cluster.advertise: "},
		{"advertise no host", func(c *Config) { c.Advertise = ":7946" }, "cluster.advertise: needs a host"},
		{"instance id with space", func(c *Config) { c.InstanceID = "a b" }, "cluster.instance_id: "},
		{"no tokens", func(c *Config) { c.Tokens = 0 }, "cluster.tokens: must be positive"},
		{"too many tokens", func(c *Config) { c.Tokens = 100000 }, "cluster.tokens: must be at most"},
		{"no heartbeat period", func(c *Config) { c.HeartbeatPeriod = 0 }, "cluster.heartbeat_period: must be positive"},
		{"timeout below two periods", func(c *Config) { c.HeartbeatPeriod = 2 * time.Second; c.HeartbeatTimeout = 4 * time.Second }, "cluster.heartbeat_timeout: must be at least twice heartbeat_period (2s) plus 1s"},
		{"timeout below whole-second resolution", func(c *Config) { c.HeartbeatPeriod = 100 * time.Millisecond; c.HeartbeatTimeout = time.Second }, "cluster.heartbeat_timeout: "},
		{"shortest timeout for a 1s period", func(c *Config) { c.HeartbeatTimeout = 3 * time.Second }, ""},
		{"no forward timeout", func(c *Config) { c.ForwardTimeout = 0 }, "cluster.forward_timeout: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate("cluster")
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v, want valid", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Validate accepted %+v, want error containing %q", cfg, tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("Validate: %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestEnabledAndYAML(t *testing.T) {
	cfg := DefaultConfig()
	if cfg.Enabled() {
		t.Fatal("default config enables a cluster")
	}
	doc := `
join: [dns+spangraph-gossip.monitoring.svc:7946]
listen: 0.0.0.0:7947
advertise: 10.1.2.3
instance_id: spangraph-1
tokens: 64
heartbeat_period: 2s
heartbeat_timeout: 10s
forward_timeout: 3s
`
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Join: []string{"dns+spangraph-gossip.monitoring.svc:7946"}, Listen: "0.0.0.0:7947", Advertise: "10.1.2.3",
		InstanceID: "spangraph-1", Tokens: 64, HeartbeatPeriod: 2 * time.Second, HeartbeatTimeout: 10 * time.Second, ForwardTimeout: 3 * time.Second,
	}
	if cfg.Listen != want.Listen || cfg.Advertise != want.Advertise || cfg.InstanceID != want.InstanceID || cfg.Tokens != want.Tokens ||
		cfg.HeartbeatPeriod != want.HeartbeatPeriod || cfg.HeartbeatTimeout != want.HeartbeatTimeout || cfg.ForwardTimeout != want.ForwardTimeout ||
		len(cfg.Join) != 1 || cfg.Join[0] != want.Join[0] {
		t.Fatalf("decoded %+v, want %+v", cfg, want)
	}
	if !cfg.Enabled() {
		t.Fatal("config with join is not enabled")
	}
	if err := cfg.Validate("cluster"); err != nil {
		t.Fatal(err)
	}
}

func TestForwardAddr(t *testing.T) {
	def := DefaultConfig()
	privateHost, err := advertiseHost(def, kitLogger{testLogger()})
	if err != nil {
		t.Logf("no private address on this machine (%v): cases that need one are skipped", err)
	}
	for _, tc := range []struct {
		name      string
		listen    string
		advertise string
		grpc      string
		want      string // "private" means privateHost:port
		wantErr   string
	}{
		{"explicit advertise wins", "", "spangraph-0.spangraph.svc", "0.0.0.0:4317", "spangraph-0.spangraph.svc:4317", ""},
		{"advertise port is gossip's, not OTLP's", "", "10.0.0.7:7000", "[::]:4317", "10.0.0.7:4317", ""},
		{"specific gossip IP", "127.0.0.1:7946", "", "0.0.0.0:4317", "127.0.0.1:4317", ""},
		{"specific OTLP IP", "10.0.0.5:7946", "", "10.0.0.6:4317", "10.0.0.6:4317", ""},
		{"loopback OTLP behind a reachable gossip IP", "10.0.0.5:7946", "", "127.0.0.1:4317", "", "loopback"},
		{"all interfaces: first private IP", "", "", ":4317", "private", ""},
		{"unbound port", "127.0.0.1:7946", "", "127.0.0.1:0", "", "no usable port"},
		{"not an address", "127.0.0.1:7946", "", "4317", "", "OTLP gRPC listen address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.listen != "" {
				cfg.Listen = tc.listen
			}
			cfg.Advertise = tc.advertise
			want := tc.want
			if want == "private" {
				if privateHost == "" {
					t.Skip("no private address on this machine")
				}
				want = net.JoinHostPort(privateHost, "4317")
			}
			got, err := ForwardAddr(cfg, tc.grpc)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ForwardAddr = %q, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != want {
				t.Fatalf("ForwardAddr = %q, %v; want %q", got, err, want)
			}
		})
	}
}
