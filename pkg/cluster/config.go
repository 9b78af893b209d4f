package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	kitlog "github.com/go-kit/log"
	"github.com/grafana/dskit/netutil"
	"github.com/grafana/dskit/ring"
)

// Config of the ring. A zero Join means "no cluster": the caller checks
// Enabled and does not call New.
//
// Health is decided by ring heartbeats, not by memberlist's failure
// detector: every member writes its heartbeat into the ring every
// HeartbeatPeriod, and a member whose last heartbeat is older than
// HeartbeatTimeout is skipped by Owner. The defaults (1s, 5s) move a killed
// member's keys to the survivors 4–6 s after the kill (measured: 4.1–4.4 s),
// instead of the minute Tempo and Mimir default to, because a trace's spans
// keep arriving while the ring is stale. Survivors forget a member silent
// for 10 × HeartbeatTimeout.
type Config struct {
	// Join lists members to join: host:port, or dns+host:port /
	// dnssrv+_service._proto.name / dnssrvnoa+... names resolved by
	// dskit's DNS provider (as memberlist's join_members). Empty: no cluster.
	Join []string `yaml:"join"`
	// Listen is the gossip bind address, host:port (default 0.0.0.0:7946).
	// The host must be an IP address.
	Listen string `yaml:"listen"`
	// Advertise is the host (or host:port) peers reach this instance at,
	// for gossip and for forwarded spans. Default: the Listen IP when it is
	// a specific one, else the first private IP address of the machine;
	// the gossip port defaults to Listen's.
	Advertise string `yaml:"advertise"`
	// InstanceID names this member in the ring (default: hostname). It
	// must be unique in the cluster: two members with one ID overwrite
	// each other's ring entry. A member restarted after a crash, before
	// the others forget it, takes its old tokens (and keys) back.
	InstanceID string `yaml:"instance_id"`
	// Tokens is the number of ring tokens this instance takes (default 128).
	Tokens int `yaml:"tokens"`
	// HeartbeatPeriod is how often this instance refreshes its ring entry.
	HeartbeatPeriod time.Duration `yaml:"heartbeat_period"`
	// HeartbeatTimeout is how old a member's last heartbeat may be before
	// its keys go to the next member. The ring stores heartbeats in whole
	// seconds, so it must leave room for that.
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout"`
	// ForwardTimeout bounds each forwarded request.
	ForwardTimeout time.Duration `yaml:"forward_timeout"`
}

// Defaults. The heartbeat pair trades gossip traffic (one small update per
// member per second) for healing within seconds.
const (
	DefaultListen           = "0.0.0.0:7946"
	DefaultTokens           = 128
	DefaultHeartbeatPeriod  = time.Second
	DefaultHeartbeatTimeout = 5 * time.Second
	DefaultForwardTimeout   = 5 * time.Second
)

// DefaultConfig returns a disabled cluster (no Join) with the defaults for
// everything else.
func DefaultConfig() Config {
	return Config{
		Listen:           DefaultListen,
		Tokens:           DefaultTokens,
		HeartbeatPeriod:  DefaultHeartbeatPeriod,
		HeartbeatTimeout: DefaultHeartbeatTimeout,
		ForwardTimeout:   DefaultForwardTimeout,
	}
}

// Enabled reports whether a cluster is configured; without one the process
// runs alone and New must not be called.
func (c *Config) Enabled() bool { return len(c.Join) > 0 }

// dnsJoinPrefixes are the lookup types dskit's DNS provider understands.
var dnsJoinPrefixes = []string{"dns+", "dnssrv+", "dnssrvnoa+"}

// Validate checks the configuration; prefix is the config path of the
// section (e.g. "cluster") and starts every message, followed by the key.
func (c *Config) Validate(prefix string) error {
	for i, j := range c.Join {
		if err := validateJoin(j); err != nil {
			return fmt.Errorf("%s.join[%d]: %q %v", prefix, i, j, err)
		}
	}
	listenIP, listenPort, err := parseListen(c.Listen)
	if err != nil {
		return fmt.Errorf("%s.listen: %v", prefix, err)
	}
	if _, _, err := splitAdvertise(c.Advertise); err != nil {
		return fmt.Errorf("%s.advertise: %v", prefix, err)
	}
	if listenPort == 0 && (c.Advertise != "" || listenIP.IsUnspecified()) {
		return fmt.Errorf("%s.listen: port 0 (any free port) needs a specific IP (e.g. 127.0.0.1:0) and an empty %s.advertise, since the port peers must dial is only known after binding; got listen %q, advertise %q", prefix, prefix, c.Listen, c.Advertise)
	}
	if strings.ContainsAny(c.InstanceID, " \t\n") {
		return fmt.Errorf("%s.instance_id: must not contain white space, got %q", prefix, c.InstanceID)
	}
	switch {
	case c.Tokens <= 0:
		return fmt.Errorf("%s.tokens: must be positive, got %d", prefix, c.Tokens)
	case c.Tokens > 4096:
		return fmt.Errorf("%s.tokens: must be at most 4096 (each token costs ring lookups and gossip), got %d", prefix, c.Tokens)
	case c.HeartbeatPeriod <= 0:
		return fmt.Errorf("%s.heartbeat_period: must be positive, got %s", prefix, c.HeartbeatPeriod)
	case c.HeartbeatTimeout < 2*c.HeartbeatPeriod+time.Second:
		return fmt.Errorf("%s.heartbeat_timeout: must be at least twice heartbeat_period (%s) plus 1s, since the ring records heartbeats in whole seconds and a live member's last one can be that old; got %s", prefix, c.HeartbeatPeriod, c.HeartbeatTimeout)
	case c.ForwardTimeout <= 0:
		return fmt.Errorf("%s.forward_timeout: must be positive, got %s", prefix, c.ForwardTimeout)
	}
	return nil
}

func validateJoin(j string) error {
	if strings.TrimSpace(j) != j || j == "" {
		return errors.New("must be a non-empty host:port or dns+host:port without spaces")
	}
	if strings.Contains(j, "+") {
		for _, p := range dnsJoinPrefixes {
			if rest, ok := strings.CutPrefix(j, p); ok {
				if rest == "" {
					return fmt.Errorf("names nothing after %q", p)
				}
				return nil
			}
		}
		return fmt.Errorf("has an unknown lookup type; use one of %s", strings.Join(dnsJoinPrefixes, ", "))
	}
	if _, port, err := net.SplitHostPort(j); err == nil {
		if err := validPort(port); err != nil {
			return err
		}
	}
	// A bare host joins on memberlist's default port 7946.
	return nil
}

func validPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("has port %q, want 1-65535", p)
	}
	return nil
}

// parseListen parses the gossip bind address; an empty host means 0.0.0.0.
func parseListen(s string) (netip.Addr, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("must be host:port with an IP host, e.g. %s: %v", DefaultListen, err)
	}
	ip := netip.IPv4Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.Addr{}, 0, fmt.Errorf("host must be an IP address (memberlist binds IPs), got %q", host)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return netip.Addr{}, 0, fmt.Errorf("port must be 0-65535, got %q", port)
	}
	return ip, n, nil
}

// splitAdvertise splits "host" or "host:port"; port is 0 when absent.
func splitAdvertise(s string) (string, int, error) {
	if s == "" {
		return "", 0, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a bare host name or IP (IPv6 without brackets too).
		if strings.Count(s, ":") == 1 || strings.ContainsAny(s, "[] /") {
			return "", 0, fmt.Errorf("must be host or host:port, got %q", s)
		}
		return s, 0, nil
	}
	if host == "" {
		return "", 0, fmt.Errorf("needs a host, got %q", s)
	}
	if err := validPort(port); err != nil {
		return "", 0, err
	}
	n, _ := strconv.Atoi(port)
	return host, n, nil
}

// advertiseHost is the host peers reach this instance at when Advertise
// does not name one: the Listen IP when specific, else the first private IP
// of the machine's network interfaces (dskit's ring.GetInstanceAddr, as
// Mimir and Tempo choose their ring address).
func advertiseHost(cfg Config, logger kitlog.Logger) (string, error) {
	if host, _, err := splitAdvertise(cfg.Advertise); err != nil {
		return "", err
	} else if host != "" {
		return host, nil
	}
	ip, _, err := parseListen(cfg.Listen)
	if err != nil {
		return "", err
	}
	if !ip.IsUnspecified() {
		return ip.String(), nil
	}
	ifaces := netutil.PrivateNetworkInterfacesWithFallback([]string{"eth0", "en0"}, logger)
	addr, err := ring.GetInstanceAddr("", ifaces, logger, ip.Is6())
	if err != nil {
		return "", fmt.Errorf("no address found on network interfaces %v to advertise (set advertise): %w", ifaces, err)
	}
	return addr, nil
}

// ForwardAddr returns the host:port peers dial to forward spans to this
// instance: the advertised host with the port the OTLP gRPC listener is
// bound to (grpcListenAddr must be the bound address, not ":0"). When
// Advertise is empty and the listener is bound to a specific IP, that IP is
// used, since nothing else reaches it.
func ForwardAddr(cfg Config, grpcListenAddr string) (string, error) {
	host, port, err := net.SplitHostPort(grpcListenAddr)
	if err != nil {
		return "", fmt.Errorf("cluster: OTLP gRPC listen address %q: %w", grpcListenAddr, err)
	}
	if validPort(port) != nil {
		return "", fmt.Errorf("cluster: OTLP gRPC listen address %q has no usable port: pass the address the listener is bound to", grpcListenAddr)
	}
	adv, err := advertiseHost(cfg, kitlog.NewNopLogger())
	if err != nil {
		return "", fmt.Errorf("cluster.advertise: %w", err)
	}
	if cfg.Advertise == "" && host != "" {
		ip, err := netip.ParseAddr(host)
		if err == nil && !ip.IsUnspecified() {
			advIP, aerr := netip.ParseAddr(adv)
			if ip.IsLoopback() && (aerr != nil || !advIP.IsLoopback()) {
				return "", fmt.Errorf("cluster: the OTLP gRPC listener %s is bound to a loopback address that peers on other hosts cannot reach, while gossip advertises %s; bind it to a reachable address or set cluster.advertise", grpcListenAddr, adv)
			}
			adv = ip.String()
		}
	}
	return net.JoinHostPort(adv, port), nil
}

// resolveAdvertiseIP returns the IP memberlist advertises; memberlist wants
// an IP, so a host name is looked up once.
func resolveAdvertiseIP(ctx context.Context, host string) (string, error) {
	if _, err := netip.ParseAddr(host); err == nil {
		return host, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", fmt.Errorf("cannot resolve %q to the IP memberlist advertises: %w", host, err)
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap().String(), nil
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("%q resolves to no IP address", host)
	}
	return ips[0].String(), nil
}
