package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// childEnv makes the test binary run one ring member instead of the tests,
// so that a test can kill it with SIGKILL: the only honest "kill -9".
const childEnv = "SPANGRAPH_CLUSTER_TEST_CHILD"

type childSpec struct {
	ID      string
	Listen  string
	Join    []string
	Forward string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// runChild starts a member, prints "ready", and runs until killed or until
// its stdin closes (the parent test died), then exits without leaving.
func runChild(spec string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	cfg := DefaultConfig()
	cfg.InstanceID = s.ID
	cfg.Listen, cfg.Join = s.Listen, s.Join
	c, err := New(cfg, s.Forward, testLogger(), prometheus.NewRegistry())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child new:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child start:", err)
		return 2
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("CLUSTER_TEST_VERBOSE") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// freePort returns a loopback port nothing listens on right now.
// memberlist needs a concrete port for the others to join.
func freePort(t testing.TB) int {
	t.Helper()
	issuedMu.Lock()
	defer issuedMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		// Forward addresses are never listened on here: the kernel may
		// hand the same free port out twice, and two members with one
		// address would look like one.
		if !issued[port] {
			issued[port] = true
			return port
		}
	}
}

var (
	issuedMu sync.Mutex
	issued   = map[int]bool{}
)

// member is one in-process ring member of a test.
type member struct {
	*Cluster
	forward string
	reg     *prometheus.Registry
}

// startMembers starts n members on loopback that all list each other in
// Join, concurrently, as a fleet of pods started at once would.
func startMembers(t *testing.T, n int, extraJoin ...string) []*member {
	t.Helper()
	ports := make([]int, n)
	var join []string
	for i := range ports {
		ports[i] = freePort(t)
		join = append(join, "127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	join = append(join, extraJoin...)
	members := make([]*member, n)
	for i := range members {
		cfg := DefaultConfig()
		cfg.InstanceID = fmt.Sprintf("member-%d", i)
		cfg.Listen = "127.0.0.1:" + strconv.Itoa(ports[i])
		cfg.Join = join
		reg := prometheus.NewRegistry()
		fwd := "127.0.0.1:" + strconv.Itoa(freePort(t))
		c, err := New(cfg, fwd, testLogger(), reg)
		if err != nil {
			t.Fatal(err)
		}
		members[i] = &member{Cluster: c, forward: fwd, reg: reg}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs[i] = m.Start(ctx)
		}()
	}
	wg.Wait()
	for _, m := range members {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = m.Stop(ctx)
		})
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start member %d: %v", i, err)
		}
	}
	return members
}

// waitFor polls cond every 20 ms until it holds or timeout passes, and
// returns how long it took.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sees reports whether m's view has exactly the members ids, all ACTIVE
// and healthy.
func sees(m *member, ids ...string) bool {
	h := m.Health()
	if len(h.Members) != len(ids) || h.Healthy != len(ids) {
		return false
	}
	for i, mm := range h.Members {
		if mm.ID != ids[i] || mm.State != "ACTIVE" || !mm.Healthy {
			return false
		}
	}
	return true
}

func ids(ms []*member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.InstanceID())
	}
	return out
}

// traceIDs returns n random trace ids from a fixed seed.
func traceIDs(n int) [][16]byte {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([][16]byte, n)
	for i := range out {
		for j := 0; j < 16; j += 8 {
			v := r.Uint64()
			for k := 0; k < 8; k++ {
				out[i][j+k] = byte(v >> (8 * k))
			}
		}
	}
	return out
}

// owners maps each trace id to its owner's address in m's view.
func owners(t testing.TB, m *member, tenant string, tids [][16]byte) []string {
	t.Helper()
	out := make([]string, len(tids))
	for i, id := range tids {
		addr, self, err := m.Owner(tenant, id)
		if err != nil {
			t.Fatalf("%s: Owner: %v", m.InstanceID(), err)
		}
		if self != (addr == m.forward) {
			t.Fatalf("%s: Owner says self=%v for %s, own forward address is %s", m.InstanceID(), self, addr, m.forward)
		}
		out[i] = addr
	}
	return out
}

// startChild runs a ring member in a child process and returns it once it
// is ACTIVE in its own view.
func startChild(t *testing.T, spec childSpec) *exec.Cmd {
	t.Helper()
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("child member %s: %v", spec.ID, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("child member %s not ready after 60s", spec.ID)
	}
	return cmd
}

// metricValue returns the value of the series name{label="value"} in reg,
// failing the test when it is missing.
func metricValue(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					switch {
					case m.Gauge != nil:
						return m.GetGauge().GetValue()
					case m.Counter != nil:
						return m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}
