package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TLSConfig is the TLS of a listener. Empty cert_file means plain text.
type TLSConfig struct {
	// CertFile and KeyFile are PEM files, re-read when they change on disk
	// (checked at most every CertReloadInterval), so rotating a
	// certificate (cert-manager, a mounted Kubernetes secret) needs no
	// restart.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile turns on mutual TLS: clients must present a
	// certificate signed by one of these CAs. It is read at start only:
	// the CA pool of a tls.Config cannot be swapped per handshake without
	// GetConfigForClient, which would drop the ALPN protocols that gRPC
	// and net/http add to their own copy of the config.
	ClientCAFile string `yaml:"client_ca_file"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// CertReloadInterval is how often, at most, a handshake checks whether
// the certificate files changed: a stat of two files every few seconds
// costs nothing, and a rotation is picked up within that delay.
const CertReloadInterval = 5 * time.Second

// Enabled reports whether TLS is configured.
func (c *TLSConfig) Enabled() bool {
	return c.CertFile != "" || c.KeyFile != "" || c.ClientCAFile != ""
}

// Validate loads the files; errors name the key under prefix.
func (c *TLSConfig) Validate(prefix string) error {
	_, err := c.ServerConfig(prefix, nil)
	return err
}

// ServerConfig returns the *tls.Config of a server, nil when TLS is not
// configured. logger (may be nil) hears about certificate reloads and
// failed reloads; a failed reload keeps the previous certificate. Use it
// with grpc's credentials.NewTLS or as http.Server.TLSConfig (then call
// ServeTLS(lis, "", "")).
func (c *TLSConfig) ServerConfig(prefix string, logger *slog.Logger) (*tls.Config, error) {
	return c.serverConfig(prefix, logger, CertReloadInterval, time.Now)
}

func (c *TLSConfig) serverConfig(prefix string, logger *slog.Logger, interval time.Duration, now func() time.Time) (*tls.Config, error) {
	if !c.Enabled() {
		return nil, nil
	}
	switch {
	case c.CertFile == "":
		return nil, fmt.Errorf("%s.cert_file: required when key_file or client_ca_file is set", prefix)
	case c.KeyFile == "":
		return nil, fmt.Errorf("%s.key_file: required with cert_file", prefix)
	}
	minVersion, err := parseTLSVersion(c.MinVersion)
	if err != nil {
		return nil, fmt.Errorf("%s.min_version: %w", prefix, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &certReloader{
		certFile: c.CertFile, keyFile: c.KeyFile, prefix: prefix,
		interval: interval, now: now, logger: logger,
	}
	if err := r.load(); err != nil {
		return nil, err
	}
	r.nextCheck.Store(now().Add(interval).UnixNano())
	cfg := &tls.Config{
		MinVersion:     minVersion,
		GetCertificate: r.getCertificate,
	}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.client_ca_file: %w", prefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.client_ca_file: no PEM certificate in %s", prefix, c.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func parseTLSVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2", "TLS12", "TLS1.2":
		return tls.VersionTLS12, nil
	case "1.3", "TLS13", "TLS1.3":
		return tls.VersionTLS13, nil
	case "1.0", "1.1", "TLS10", "TLS11", "TLS1.0", "TLS1.1":
		return 0, fmt.Errorf("%q is deprecated (RFC 8996) and refused: use 1.2 or 1.3", s)
	}
	return 0, fmt.Errorf("%q is not 1.2 or 1.3", s)
}

// certReloader serves the certificate of two files, re-reading them when
// their modification time or size changes.
type certReloader struct {
	certFile, keyFile, prefix string
	interval                  time.Duration
	now                       func() time.Time
	logger                    *slog.Logger

	cert      atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // unix nanoseconds
	mu        sync.Mutex   // one checker at a time; others use the current cert
	certStamp fileStamp
	keyStamp  fileStamp
	lastErr   atomic.Pointer[string]
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

func (s fileStamp) equal(o fileStamp) bool { return s.mod.Equal(o.mod) && s.size == o.size }

// load reads both files; errors name the key.
func (r *certReloader) load() error {
	cs, err := stamp(r.certFile)
	if err != nil {
		return fmt.Errorf("%s.cert_file: %w", r.prefix, err)
	}
	ks, err := stamp(r.keyFile)
	if err != nil {
		return fmt.Errorf("%s.key_file: %w", r.prefix, err)
	}
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return fmt.Errorf("%s.cert_file: %w", r.prefix, err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return fmt.Errorf("%s.key_file: %w", r.prefix, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("%s.cert_file/%s.key_file (%s, %s): %w", r.prefix, r.prefix, r.certFile, r.keyFile, err)
	}
	if len(cert.Certificate) > 0 && cert.Leaf == nil {
		// X509KeyPair fills Leaf since Go 1.23; parse otherwise, for the
		// expiry in the reload log.
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	r.cert.Store(&cert)
	r.certStamp, r.keyStamp = cs, ks
	r.lastErr.Store(nil)
	return nil
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeReload()
	return r.cert.Load(), nil
}

// maybeReload re-reads the files when the interval has passed and they
// changed. Handshakes never wait for it: a handshake that finds another
// one checking uses the current certificate.
func (r *certReloader) maybeReload() {
	now := r.now()
	if now.UnixNano() < r.nextCheck.Load() || !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if now.UnixNano() < r.nextCheck.Load() {
		return
	}
	r.nextCheck.Store(now.Add(r.interval).UnixNano())
	cs, err1 := stamp(r.certFile)
	ks, err2 := stamp(r.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		r.failed(err)
		return
	}
	if cs.equal(r.certStamp) && ks.equal(r.keyStamp) {
		return
	}
	// A rotation that writes the certificate and the key one after the
	// other can be caught in between: the pair does not match, load fails,
	// the old certificate stays, and the stamps are not updated, so the
	// next check tries again.
	if err := r.load(); err != nil {
		r.failed(err)
		return
	}
	cert := r.cert.Load()
	attrs := []any{"cert_file", r.certFile}
	if cert.Leaf != nil {
		attrs = append(attrs, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	}
	r.logger.Info("TLS certificate reloaded", attrs...)
}

func (r *certReloader) failed(err error) {
	msg := err.Error()
	if prev := r.lastErr.Load(); prev == nil || *prev != msg {
		// Logged once per distinct error, not at every interval.
		r.logger.Warn("TLS certificate reload failed; still serving the previous certificate", "err", msg)
	}
	r.lastErr.Store(&msg)
}
