package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// --- an in-process PKI ---

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue returns a PEM certificate and key for a server (localhost,
// 127.0.0.1) or a client.
func (ca *testCA) issue(t testing.TB, cn string, serial int64, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func (ca *testCA) clientCert(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	c, k := ca.issue(t, cn, 100, false)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

type tlsFiles struct {
	dir, cert, key, ca string
}

func writeServerFiles(t *testing.T, ca *testCA, serial int64) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	f := tlsFiles{dir: dir, cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key"), ca: filepath.Join(dir, "ca.crt")}
	c, k := ca.issue(t, "server", serial, true)
	mustWrite(t, f.cert, c)
	mustWrite(t, f.key, k)
	mustWrite(t, f.ca, ca.pem)
	return f
}

func mustWrite(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// handshake connects a client to a one-connection TLS server and returns
// both sides' errors and the server certificate's serial the client saw.
func handshake(t *testing.T, server *tls.Config, client *tls.Config) (serverErr, clientErr error, serial int64) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		tc := tls.Server(conn, server)
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Write([]byte("k"))
		}
		done <- err
	}()
	conn, err := tls.Dial("tcp", lis.Addr().String(), client)
	if err == nil {
		// With TLS 1.3 the client's handshake ends before the server has
		// checked the client certificate: a refusal shows on first read.
		var b [1]byte
		_, err = io.ReadFull(conn, b[:])
		if err == nil {
			serial = conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
		}
		conn.Close()
	}
	return <-done, err, serial
}

func TestTLSHandshake(t *testing.T) {
	ca := newCA(t, "ca")
	f := writeServerFiles(t, ca, 7)
	cfg := TLSConfig{CertFile: f.cert, KeyFile: f.key}
	server, err := cfg.ServerConfig("tls", nil)
	if err != nil {
		t.Fatal(err)
	}
	if server.ClientAuth != tls.NoClientCert || server.MinVersion != tls.VersionTLS12 {
		t.Fatalf("ClientAuth %v MinVersion %x", server.ClientAuth, server.MinVersion)
	}
	serr, cerr, serial := handshake(t, server, &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"})
	if serr != nil || cerr != nil || serial != 7 {
		t.Fatalf("handshake: server %v, client %v, serial %d", serr, cerr, serial)
	}
	// A client that does not trust the CA refuses the server.
	_, cerr, _ = handshake(t, server, &tls.Config{RootCAs: newCA(t, "other").pool(), ServerName: "localhost"})
	if cerr == nil {
		t.Fatal("a client trusting another CA accepted the server")
	}

	cfg.MinVersion = "1.3"
	server13, err := cfg.ServerConfig("tls", nil)
	if err != nil {
		t.Fatal(err)
	}
	serr, _, _ = handshake(t, server13, &tls.Config{RootCAs: ca.pool(), ServerName: "localhost", MaxVersion: tls.VersionTLS12})
	if serr == nil {
		t.Fatal("min_version 1.3 accepted a TLS 1.2 client")
	}
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t, "ca")
	other := newCA(t, "other")
	f := writeServerFiles(t, ca, 1)
	server, err := (&TLSConfig{CertFile: f.cert, KeyFile: f.key, ClientCAFile: f.ca}).ServerConfig("tls", nil)
	if err != nil {
		t.Fatal(err)
	}
	if server.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("ClientAuth = %v", server.ClientAuth)
	}
	for _, tc := range []struct {
		name   string
		certs  []tls.Certificate
		accept bool
	}{
		{"client cert from the CA", []tls.Certificate{ca.clientCert(t, "collector")}, true},
		{"no client cert", nil, false},
		{"client cert from another CA", []tls.Certificate{other.clientCert(t, "mallory")}, false},
	} {
		for _, maxVersion := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			client := &tls.Config{RootCAs: ca.pool(), ServerName: "localhost", Certificates: tc.certs, MaxVersion: maxVersion}
			serr, cerr, _ := handshake(t, server, client)
			if tc.accept && (serr != nil || cerr != nil) {
				t.Errorf("%s (TLS %x): server %v, client %v", tc.name, maxVersion, serr, cerr)
			}
			if !tc.accept && (serr == nil || cerr == nil) {
				t.Errorf("%s (TLS %x) accepted: server %v, client %v", tc.name, maxVersion, serr, cerr)
			}
		}
	}
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// rotate writes a new certificate and key and moves their mtime forward,
// so that the test does not depend on the file system's timestamp
// granularity.
func rotate(t *testing.T, f tlsFiles, ca *testCA, serial int64, at time.Time) {
	t.Helper()
	c, k := ca.issue(t, "server", serial, true)
	mustWrite(t, f.cert, c)
	mustWrite(t, f.key, k)
	for _, p := range []string{f.cert, f.key} {
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCertificateRotation(t *testing.T) {
	ca := newCA(t, "ca")
	f := writeServerFiles(t, ca, 1)
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	server, err := (&TLSConfig{CertFile: f.cert, KeyFile: f.key}).serverConfig("tls", nil, 5*time.Second, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	client := &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"}
	servedSerial := func() int64 {
		t.Helper()
		serr, cerr, serial := handshake(t, server, client)
		if serr != nil || cerr != nil {
			t.Fatalf("handshake: server %v, client %v", serr, cerr)
		}
		return serial
	}
	if s := servedSerial(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}

	rotate(t, f, ca, 2, time.Now().Add(time.Minute))
	if s := servedSerial(); s != 1 {
		t.Fatalf("reloaded before the interval: serial %d", s)
	}
	clock.add(5 * time.Second)
	if s := servedSerial(); s != 2 {
		t.Fatalf("after rotation and the interval: serial %d, want 2", s)
	}

	// A half-written rotation (new certificate, old key) keeps the
	// current certificate and is retried at the next check.
	c3, k3 := ca.issue(t, "server", 3, true)
	mustWrite(t, f.cert, c3)
	later := time.Now().Add(2 * time.Minute)
	_ = os.Chtimes(f.cert, later, later)
	clock.add(5 * time.Second)
	if s := servedSerial(); s != 2 {
		t.Fatalf("mismatched pair: serial %d, want the previous 2", s)
	}
	mustWrite(t, f.key, k3)
	_ = os.Chtimes(f.key, later, later)
	clock.add(5 * time.Second)
	if s := servedSerial(); s != 3 {
		t.Fatalf("completed rotation: serial %d, want 3", s)
	}

	// A deleted file keeps the current certificate too.
	if err := os.Remove(f.key); err != nil {
		t.Fatal(err)
	}
	clock.add(5 * time.Second)
	if s := servedSerial(); s != 3 {
		t.Fatalf("deleted key: serial %d, want 3", s)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := newCA(t, "ca")
	f := writeServerFiles(t, ca, 1)
	garbage := filepath.Join(f.dir, "garbage.pem")
	mustWrite(t, garbage, []byte("not pem"))
	_, otherKey := ca.issue(t, "x", 9, true)
	otherKeyFile := filepath.Join(f.dir, "other.key")
	mustWrite(t, otherKeyFile, otherKey)
	missing := filepath.Join(f.dir, "missing.pem")

	for _, tc := range []struct {
		name string
		cfg  TLSConfig
		want string
	}{
		{"off", TLSConfig{}, ""},
		{"ok", TLSConfig{CertFile: f.cert, KeyFile: f.key, ClientCAFile: f.ca, MinVersion: "1.3"}, ""},
		{"cert without key", TLSConfig{CertFile: f.cert}, "tls.key_file: required with cert_file"},
		{"key without cert", TLSConfig{KeyFile: f.key}, "tls.cert_file: required"},
		{"client CA without cert", TLSConfig{ClientCAFile: f.ca}, "tls.cert_file: required"},
		{"missing cert", TLSConfig{CertFile: missing, KeyFile: f.key}, "tls.cert_file: stat " + missing + ": no such file"},
		{"missing key", TLSConfig{CertFile: f.cert, KeyFile: missing}, "tls.key_file: stat " + missing},
		{"garbage cert", TLSConfig{CertFile: garbage, KeyFile: f.key}, "tls.cert_file/tls.key_file (" + garbage},
		{"mismatched key", TLSConfig{CertFile: f.cert, KeyFile: otherKeyFile}, "private key does not match public key"},
		{"missing CA", TLSConfig{CertFile: f.cert, KeyFile: f.key, ClientCAFile: missing}, "tls.client_ca_file: open " + missing},
		{"garbage CA", TLSConfig{CertFile: f.cert, KeyFile: f.key, ClientCAFile: garbage}, "tls.client_ca_file: no PEM certificate in " + garbage},
		{"TLS 1.1", TLSConfig{CertFile: f.cert, KeyFile: f.key, MinVersion: "1.1"}, "tls.min_version: \"1.1\" is deprecated"},
		{"bad version", TLSConfig{CertFile: f.cert, KeyFile: f.key, MinVersion: "2"}, "tls.min_version: \"2\" is not 1.2 or 1.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("tls")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestGRPCMutualTLS runs the interceptor behind mTLS on a real gRPC
// server: it proves that the reloading GetCertificate works with
// credentials.NewTLS (ALPN h2 included) and that both layers compose.
func TestGRPCMutualTLS(t *testing.T) {
	ca := newCA(t, "ca")
	f := writeServerFiles(t, ca, 1)
	serverTLS, err := (&TLSConfig{CertFile: f.cert, KeyFile: f.key, ClientCAFile: f.ca}).ServerConfig("tls", nil)
	if err != nil {
		t.Fatal(err)
	}
	a := mustAuth(t, testConfig(t))
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)), grpc.UnaryInterceptor(a.UnaryServerInterceptor(nil)))
	s.RegisterService(&echoDesc, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()

	dial := func(certs []tls.Certificate) *grpc.ClientConn {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: ca.pool(), ServerName: "localhost", Certificates: certs})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call := func(conn *grpc.ClientConn) (string, error) {
		out := new(wrapperspb.StringValue)
		ctx := metadataCtx(ctx, "authorization", "Bearer token-a")
		err := conn.Invoke(ctx, "/spangraph.test.Echo/Tenant", &emptypb.Empty{}, out)
		return out.GetValue(), err
	}
	if got, err := call(dial([]tls.Certificate{ca.clientCert(t, "collector")})); err != nil || got != "team-a" {
		t.Fatalf("mTLS call: %q, %v", got, err)
	}
	if _, err := call(dial(nil)); err == nil {
		t.Fatal("a client without a certificate was served")
	}
}

func metadataCtx(ctx context.Context, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}
