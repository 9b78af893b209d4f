// Package promtest runs a real Prometheus for tests: Debian's `prometheus`
// binary on a loopback port, with a data directory of the test's, taking
// remote writes, native histograms and exemplars. Tests that need it skip
// when the binary is missing, except under CI (CI set), which must have it.
package promtest

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Server is one Prometheus process.
type Server struct {
	// Addr is its host:port.
	Addr string

	t       testing.TB
	bin     string
	dataDir string
	cfgFile string
	logFile string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Start starts a Prometheus and waits until it is ready; it is stopped
// when the test ends, and its log is printed if the test failed.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("prometheus binary not found (apt-get install -y prometheus); CI must have it")
		}
		t.Fatal("prometheus binary not found; CI must install the Debian package `prometheus`")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{
		Addr:    l.Addr().String(),
		t:       t,
		bin:     bin,
		dataDir: filepath.Join(dir, "data"),
		cfgFile: filepath.Join(dir, "prometheus.yml"),
		logFile: filepath.Join(dir, "prometheus.log"),
	}
	_ = l.Close()
	if err := os.WriteFile(s.cfgFile, []byte("global:\n  scrape_interval: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(s.logFile)
			t.Logf("prometheus log:\n%s", b)
		}
	})
	return s
}

// URL is its base URL.
func (s *Server) URL() string { return "http://" + s.Addr }

// WriteURL is its remote-write endpoint.
func (s *Server) WriteURL() string { return s.URL() + "/api/v1/write" }

// Restart starts it again, on the same port and data, after Stop.
func (s *Server) Restart() { s.start() }

// Stop stops it (SIGTERM, then SIGKILL after 15 s) and waits.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func (s *Server) start() {
	s.t.Helper()
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd = exec.Command(s.bin,
		"--web.enable-remote-write-receiver",
		"--enable-feature=native-histograms,exemplar-storage",
		"--storage.tsdb.path="+s.dataDir,
		"--config.file="+s.cfgFile,
		"--web.listen-address="+s.Addr,
	)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func() {
		_ = s.cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(s.logFile)
			s.t.Fatalf("prometheus exited:\n%s", b)
		default:
		}
		if r, err := http.Get(s.URL() + "/-/ready"); err == nil {
			_ = r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatal("prometheus not ready within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
