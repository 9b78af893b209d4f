package query

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"
)

// ServerConfig bounds the connections of the query API's HTTP server, so
// that a client that sends slowly, or holds idle connections open, cannot
// tie up the server for good.
type ServerConfig struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds a request from the end of its headers to the
	// end of its answer, so it must leave room for query.timeout.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle for longer.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// EnableReload serves POST /-/reload, which re-reads the config as
	// SIGHUP does (Prometheus' --web.enable-lifecycle); off by default.
	EnableReload bool `yaml:"enable_reload"`
}

// DefaultServerConfig returns the defaults: generous for Grafana and
// curl, short enough that stalled clients are let go within minutes.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      3 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
	}
}

// Validate checks the config; errors name the key under prefix.
func (c *ServerConfig) Validate(prefix string) error {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"read_header_timeout", c.ReadHeaderTimeout},
		{"read_timeout", c.ReadTimeout},
		{"write_timeout", c.WriteTimeout},
		{"idle_timeout", c.IdleTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s.%s: must be positive, got %s", prefix, d.key, d.v)
		}
	}
	if c.MaxHeaderBytes < 4096 {
		return fmt.Errorf("%s.max_header_bytes: must be at least 4096, got %d", prefix, c.MaxHeaderBytes)
	}
	return nil
}

// Server returns an HTTP server for h with these bounds; tlsCfg may be
// nil for plain HTTP.
func (c ServerConfig) Server(h http.Handler, tlsCfg *tls.Config) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
	}
}
