package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/kv/consul"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Three members started at once form one ring, agree on every owner, and
// share the keys roughly evenly.
func TestThreeMembersFormRingAndAgree(t *testing.T) {
	start := time.Now()
	ms := startMembers(t, 3)
	all := ids(ms)
	for _, m := range ms {
		waitFor(t, 15*time.Second, m.InstanceID()+" sees 3 ACTIVE healthy members", func() bool { return sees(m, all...) })
	}
	t.Logf("3-member ring converged %s after the first Start call", time.Since(start).Round(time.Millisecond))

	tids := traceIDs(10000)
	for _, tenant := range []string{"", "tenant-a"} {
		ref := owners(t, ms[0], tenant, tids)
		for _, m := range ms[1:] {
			got := owners(t, m, tenant, tids)
			for i := range ref {
				if got[i] != ref[i] {
					t.Fatalf("tenant %q trace %x: %s says owner %s, %s says %s", tenant, tids[i], ms[0].InstanceID(), ref[i], m.InstanceID(), got[i])
				}
			}
		}
		share := map[string]int{}
		for _, a := range ref {
			share[a]++
		}
		for _, m := range ms {
			f := float64(share[m.forward]) / float64(len(tids))
			t.Logf("tenant %q: %s owns %.1f%% of trace ids", tenant, m.InstanceID(), 100*f)
			if f < 0.20 || f > 0.45 {
				t.Errorf("tenant %q: %s owns %.1f%% of trace ids, want 20–45%%", tenant, m.InstanceID(), 100*f)
			}
		}
	}

	h := ms[1].Health()
	if h.InstanceID != "member-1" || h.State != "ACTIVE" || h.Healthy != 3 {
		t.Errorf("Health() = %+v, want member-1 ACTIVE with 3 healthy members", h)
	}
	var sum float64
	for _, m := range h.Members {
		sum += m.OwnedFraction
		if m.Tokens != DefaultTokens || time.Since(m.LastHeartbeat) > 5*time.Second {
			t.Errorf("member %+v: want %d tokens and a heartbeat within 5s", m, DefaultTokens)
		}
	}
	if math.Abs(sum-1) > 1e-6 {
		t.Errorf("owned fractions sum to %f, want 1", sum)
	}

	for host, want := range map[string]bool{"127.0.0.1": true, "::ffff:127.0.0.1": true, "10.9.8.7": false, "not-an-ip": false} {
		if got := ms[0].IsMember(host); got != want {
			t.Errorf("IsMember(%q) = %v, want %v", host, got, want)
		}
	}
	if got := metricValue(t, ms[0].reg, "spangraph_cluster_members", "state", "ACTIVE"); got != 3 {
		t.Errorf("spangraph_cluster_members{state=ACTIVE} = %v, want 3", got)
	}
}

// A member that stops leaves cleanly: the others drop it within a bounded
// time, only its keys move, and connections to it are closed.
func TestStopHandsOverOnlyTheLeaversKeys(t *testing.T) {
	ms := startMembers(t, 3)
	all := ids(ms)
	for _, m := range ms {
		waitFor(t, 15*time.Second, m.InstanceID()+" sees 3 members", func() bool { return sees(m, all...) })
	}
	tids := traceIDs(10000)
	before := owners(t, ms[0], "t", tids)

	// A (failing) forward opens a connection to the leaver.
	_, _, _ = ms[0].Forward(context.Background(), ms[2].forward, nil, nil)
	if n := peerConns(ms[0]); n != 1 {
		t.Fatalf("peer connections = %d after forwarding to member-2, want 1", n)
	}

	leaver := ms[2]
	stopStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := leaver.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopTook := time.Since(stopStart)
	for _, m := range ms[:2] {
		took := waitFor(t, 10*time.Second, m.InstanceID()+" drops member-2", func() bool { return sees(m, all[:2]...) })
		t.Logf("Stop of member-2 took %s; %s dropped it %s after Stop returned", stopTook.Round(time.Millisecond), m.InstanceID(), took.Round(time.Millisecond))
	}
	if h := leaver.Health(); h.State != "" {
		t.Errorf("stopped member still sees itself in the ring as %q", h.State)
	}
	// The others may forward to it until they see it leave: it still
	// knows them.
	if !leaver.IsMember("127.0.0.1") {
		t.Error("a stopped member no longer knows the members that may still forward to it")
	}

	after0 := owners(t, ms[0], "t", tids)
	after1 := owners(t, ms[1], "t", tids)
	moved := 0
	for i := range tids {
		if after0[i] != after1[i] {
			t.Fatalf("trace %x: survivors disagree: %s vs %s", tids[i], after0[i], after1[i])
		}
		if after0[i] == leaver.forward {
			t.Fatalf("trace %x still owned by the member that left", tids[i])
		}
		if before[i] != leaver.forward && after0[i] != before[i] {
			t.Fatalf("trace %x moved from survivor %s to %s", tids[i], before[i], after0[i])
		}
		if before[i] == leaver.forward {
			moved++
		}
	}
	t.Logf("%d of %d trace ids moved (all and only member-2's)", moved, len(tids))
	waitFor(t, 5*time.Second, "connection to the leaver closed", func() bool { return peerConns(ms[0]) == 0 })

	if _, _, err := leaver.Forward(context.Background(), ms[0].forward, nil, nil); status.Code(err) != codes.Unavailable {
		t.Errorf("Forward after Stop: %v, want Unavailable", err)
	}
}

// A member killed with SIGKILL (a child process: no leave, no goodbye
// gossip) keeps owning its keys until its heartbeat is older than
// heartbeat_timeout; then the survivors route its keys to the next members
// and nothing else moves.
func TestKilledMemberHealsAfterHeartbeatTimeout(t *testing.T) {
	ms := startMembers(t, 2)
	var join []string
	for _, m := range ms {
		join = append(join, "127.0.0.1:"+strconv.Itoa(m.kv.GetListeningPort()))
	}
	childFwd := "127.0.0.1:" + strconv.Itoa(freePort(t))
	child := startChild(t, childSpec{ID: "member-child", Listen: "127.0.0.1:" + strconv.Itoa(freePort(t)), Join: join, Forward: childFwd})
	want := append(ids(ms), "member-child")
	for _, m := range ms {
		waitFor(t, 15*time.Second, m.InstanceID()+" sees the child ACTIVE", func() bool { return sees(m, want...) })
	}

	tids := traceIDs(5000)
	before := owners(t, ms[0], "t", tids)
	var childKeys int
	for _, a := range before {
		if a == childFwd {
			childKeys++
		}
	}
	if childKeys == 0 {
		t.Fatal("the child owns no keys")
	}

	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = child.Wait()

	ownsAny := func(m *member) bool {
		for _, id := range tids {
			if a, _, err := m.Owner("t", id); err != nil || a == childFwd {
				return true
			}
		}
		return false
	}
	heal := waitFor(t, DefaultHeartbeatTimeout+10*time.Second, "survivors stop routing to the killed member", func() bool {
		return !ownsAny(ms[0]) && !ownsAny(ms[1])
	})
	healed := time.Since(killed)
	t.Logf("killed member's %d/%d keys rerouted %s after SIGKILL (heartbeat_period %s, heartbeat_timeout %s); poll %s",
		childKeys, len(tids), healed.Round(10*time.Millisecond), DefaultHeartbeatPeriod, DefaultHeartbeatTimeout, heal.Round(10*time.Millisecond))
	// Heartbeats are whole seconds, at most one period (plus gossip) old
	// when killed, so healing before timeout-2.5s would mean a live member
	// could be skipped too; later than timeout+3s means health is not
	// heartbeats.
	if healed < DefaultHeartbeatTimeout-2*time.Second || healed > DefaultHeartbeatTimeout+3*time.Second {
		t.Errorf("healed %s after the kill, want within [%s, %s]", healed, DefaultHeartbeatTimeout-2500*time.Millisecond, DefaultHeartbeatTimeout+3*time.Second)
	}

	after := owners(t, ms[1], "t", tids)
	for i := range tids {
		if before[i] != childFwd && after[i] != before[i] {
			t.Fatalf("trace %x moved from live member %s to %s", tids[i], before[i], after[i])
		}
	}
	var found bool
	for _, mm := range ms[0].Health().Members {
		if mm.ID == "member-child" {
			found = true
			if mm.Healthy {
				t.Errorf("killed member reported healthy: %+v", mm)
			}
		}
	}
	if !found {
		t.Error("killed member vanished from Health before auto-forget; want it listed unhealthy")
	}
	if got := metricValue(t, ms[0].reg, "spangraph_cluster_members", "state", "Unhealthy"); got != 1 {
		t.Errorf("spangraph_cluster_members{state=Unhealthy} = %v, want 1", got)
	}
}

// The first member of a cluster reaches nobody in Join (its peers are not
// up yet): that is not an error, it forms the ring alone, at once.
func TestFirstMemberStartsAlone(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InstanceID = "first"
	cfg.Listen = "127.0.0.1:0"
	cfg.Join = []string{"127.0.0.1:" + strconv.Itoa(freePort(t)), "dns+peer.invalid:7946"}
	fwd := "127.0.0.1:" + strconv.Itoa(freePort(t))
	c, err := New(cfg, fwd, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start with unreachable peers: %v", err)
	}
	t.Logf("first member started in %s with no peer reachable", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	addr, self, err := c.Owner("t", [16]byte{1})
	if err != nil || !self || addr != fwd {
		t.Fatalf("Owner = %q, %v, %v; want this member", addr, self, err)
	}
	if h := c.Health(); h.State != "ACTIVE" || h.Healthy != 1 {
		t.Fatalf("Health = %+v, want this member alone and ACTIVE", h)
	}
}

// A gossip port already taken fails Start with an error naming the
// address, and leaves nothing running.
func TestStartFailsOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := DefaultConfig()
	cfg.InstanceID = "late"
	cfg.Listen = busy.Addr().String()
	cfg.Join = []string{busy.Addr().String()}
	c, err := New(cfg, "127.0.0.1:4317", testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), cfg.Listen) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a busy port: %v; want an error naming %s and the cause", err, cfg.Listen)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("Stop after a failed Start: %v", err)
	}
}

// Join entries may be DNS names resolved by dskit's DNS provider, as
// memberlist's join_members: a second member finds the first through
// dns+localhost:port.
func TestJoinThroughDNSName(t *testing.T) {
	first := startMembers(t, 1)[0]
	port := strconv.Itoa(first.kv.GetListeningPort())
	cfg := DefaultConfig()
	cfg.InstanceID = "member-dns"
	cfg.Listen = "127.0.0.1:0"
	cfg.Join = []string{"dns+localhost:" + port}
	fwd := "127.0.0.1:" + strconv.Itoa(freePort(t))
	second, err := New(cfg, fwd, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := second.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Stop(context.Background()) })
	waitFor(t, 10*time.Second, "the first member sees the one that joined through DNS", func() bool {
		return sees(first, "member-0", "member-dns")
	})
}

// Owner against a fixed ring (dskit's ring client over an in-memory KV):
// the first ACTIVE member with a fresh heartbeat at or after the key wins;
// stale, LEAVING and JOINING members are walked past, also beyond the
// three members of the cheap path.
func TestOwnerWalksToFirstHealthyActive(t *testing.T) {
	// Five members with one token each, in ring order a < b < c < d < e.
	// A key just below a's token starts the walk at a.
	var id [16]byte
	for i := 0; ; i++ {
		id = [16]byte{byte(i), byte(i >> 8), byte(i >> 16)}
		if traceToken("t", id) < 1<<28 {
			break
		}
	}
	names := []string{"a", "b", "c", "d", "e"}
	fresh, stale := time.Now(), time.Now().Add(-time.Minute)
	type inst struct {
		state ring.InstanceState
		hb    time.Time
	}
	for _, tc := range []struct {
		name  string
		insts map[string]inst
		want  string
	}{
		{"all healthy: first on the ring", nil, "a"},
		{"stale first", map[string]inst{"a": {ring.ACTIVE, stale}}, "b"},
		{"leaving and joining walked past", map[string]inst{"a": {ring.LEAVING, fresh}, "b": {ring.JOINING, fresh}}, "c"},
		{"three stale: whole-ring walk", map[string]inst{"a": {ring.ACTIVE, stale}, "b": {ring.ACTIVE, stale}, "c": {ring.ACTIVE, stale}}, "d"},
		{"four down: last one", map[string]inst{"a": {ring.ACTIVE, stale}, "b": {ring.LEAVING, fresh}, "c": {ring.ACTIVE, stale}, "d": {ring.PENDING, fresh}}, "e"},
		{"nobody", map[string]inst{"a": {ring.ACTIVE, stale}, "b": {ring.ACTIVE, stale}, "c": {ring.ACTIVE, stale}, "d": {ring.ACTIVE, stale}, "e": {ring.LEAVING, fresh}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			desc := ring.NewDesc()
			for i, n := range names {
				in, ok := tc.insts[n]
				if !ok {
					in = inst{ring.ACTIVE, fresh}
				}
				d := desc.AddIngester(n, n+":4317", "", []uint32{uint32(i+1) << 28}, in.state, fresh, false, time.Time{}, nil)
				d.Timestamp = in.hb.Unix()
				desc.Ingesters[n] = d
			}
			c := fixedRing(t, "c", desc)
			addr, self, err := c.Owner("t", id)
			if tc.want == "" {
				if !errors.Is(err, ErrNoOwner) {
					t.Fatalf("Owner = %q, %v; want ErrNoOwner", addr, err)
				}
				return
			}
			if err != nil || addr != tc.want+":4317" || self != (tc.want == "c") {
				t.Fatalf("Owner = %q, self %v, %v; want %s:4317", addr, self, err, tc.want)
			}
		})
	}
}

// fixedRing returns a Cluster whose ring client reads desc from an
// in-memory KV, for Owner tests that need exact ring states.
func fixedRing(t testing.TB, self string, desc *ring.Desc) *Cluster {
	t.Helper()
	kv, closer := consul.NewInMemoryClient(ring.GetCodec(), kitLogger{testLogger()}, nil)
	t.Cleanup(func() { _ = closer.Close() })
	if err := kv.CAS(context.Background(), ringKey, func(any) (any, bool, error) { return desc, false, nil }); err != nil {
		t.Fatal(err)
	}
	r, err := ring.NewWithStoreClientAndStrategy(ring.Config{HeartbeatTimeout: DefaultHeartbeatTimeout, ReplicationFactor: ownerReplication},
		ringName, ringKey, kv, ring.NewIgnoreUnhealthyInstancesReplicationStrategy(), nil, kitLogger{testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), r) })
	c := &Cluster{id: self, ring: r, cfg: DefaultConfig()}
	c.routes.Store(c.buildRoutes(desc, time.Now()))
	return c
}

// Owner runs per trace per request: it must stay well under a microsecond
// and not allocate. "dead" marks one member's heartbeat stale, the state
// between a crash and auto-forget.
func BenchmarkOwner(b *testing.B) {
	for _, bc := range []struct {
		n    int
		dead bool
	}{{1, false}, {3, false}, {10, false}, {3, true}, {10, true}} {
		n := bc.n
		b.Run(fmt.Sprintf("members=%d/dead=%v", n, bc.dead), func(b *testing.B) {
			desc := ring.NewDesc()
			gen := ring.NewRandomTokenGenerator()
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("m%d", i)
				desc.AddIngester(id, id+":4317", "", gen.GenerateTokens(DefaultTokens, desc.GetTokens()), ring.ACTIVE, time.Now(), false, time.Time{}, nil)
			}
			// Heartbeats must stay fresh for the benchmark's duration.
			for id, d := range desc.Ingesters {
				d.Timestamp = time.Now().Add(time.Hour).Unix()
				if bc.dead && id == "m1" {
					d.Timestamp = time.Now().Add(-time.Hour).Unix()
				}
				desc.Ingesters[id] = d
			}
			c := fixedRing(b, "m0", desc)
			tids := traceIDs(1024)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := c.Owner("tenant", tids[i&1023]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func peerConns(m *member) int {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	return len(m.conns)
}
