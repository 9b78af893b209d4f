package query

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServerConfigClosesStalledConnections: a client that trickles its
// body, or keeps a connection open without sending, is let go after the
// configured timeouts instead of holding the connection for good.
func TestServerConfigClosesStalledConnections(t *testing.T) {
	cfg := DefaultServerConfig()
	cfg.ReadTimeout = 300 * time.Millisecond
	cfg.IdleTimeout = 300 * time.Millisecond
	if err := cfg.Validate("http_server"); err != nil {
		t.Fatal(err)
	}
	srv := cfg.Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}), nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })

	for _, tc := range []struct {
		name, request string
	}{
		{"slow body", "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nquery=up"},
		{"idle keep-alive", "GET /api/v1/query HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.request); err != nil {
				t.Fatal(err)
			}
			// Whatever the server answers, it must then close the
			// connection well before the client gives up (10 s).
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			_, err = io.ReadAll(bufio.NewReader(conn))
			if err != nil && strings.Contains(err.Error(), "timeout") {
				t.Fatalf("the server held the connection for %s", time.Since(start).Round(time.Millisecond))
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("the connection was closed after %s, want about 300ms", took)
			}
		})
	}
}

func TestServerConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*ServerConfig)
		want string
	}{
		{func(c *ServerConfig) { c.ReadTimeout = 0 }, "http_server.read_timeout: must be positive"},
		{func(c *ServerConfig) { c.IdleTimeout = -time.Second }, "http_server.idle_timeout: must be positive"},
		{func(c *ServerConfig) { c.MaxHeaderBytes = 10 }, "http_server.max_header_bytes: must be at least 4096"},
	} {
		c := DefaultServerConfig()
		tc.edit(&c)
		if err := c.Validate("http_server"); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate = %v, want %q", err, tc.want)
		}
	}
}
