// Package budget divides the process's one memory limit among the parts
// that grow with load: decoded requests, waiting half edges, active series
// and queries.
//
// One process receives every tenant's spans and answers every viewer's
// queries, so a part that grows without bound takes the others down with
// it. Each part gets a share of memory_limit and admits work against it;
// what does not fit is refused with the protocol's retryable answer. The
// Go runtime's soft limit (GOMEMLIMIT) is set to memory_limit too, so the
// garbage collector works harder before the process nears it.
package budget

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"

	"gopkg.in/yaml.v3"
)

// Bytes is a size in bytes. In YAML, flags and the environment it is a
// plain number or a number with a unit: 512MiB, 2GiB, 1.5GB, 800KB.
type Bytes int64

var units = []struct {
	suffix string
	factor float64
}{
	// Longest suffixes first, so that "MiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseBytes reads a size such as 512MiB, 2GiB or 1073741824.
func ParseBytes(s string) (Bytes, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	factor := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, factor = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.factor
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*factor > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size such as 512MiB, 2GiB or 1073741824", s)
	}
	return Bytes(v * factor), nil
}

// UnmarshalYAML accepts a number or a string with a unit.
func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseBytes(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// String writes the size with the largest binary unit that divides it,
// so that it reads back to the same value.
func (b Bytes) String() string {
	for _, u := range []struct {
		suffix string
		factor Bytes
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && b%u.factor == 0 {
			return strconv.FormatInt(int64(b/u.factor), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Set implements flag.Value.
func (b *Bytes) Set(s string) error {
	v, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Minimum is the smallest memory_limit accepted: below it the shares
// cannot hold one request of the default max_request_bytes.
const Minimum Bytes = 256 << 20

// DefaultFraction of the machine's (or the container's) memory is the
// default memory_limit: the plugin runs on Grafana's host, beside
// Grafana, and a standalone server usually shares its machine too.
const DefaultFraction = 4

// Available returns the memory this process could use, and where the
// figure comes from: the cgroup limit of its container when there is one
// lower than the machine's memory, else the machine's memory.
func Available() (Bytes, string) {
	total, err := memTotal("/proc/meminfo")
	if err != nil {
		return 0, ""
	}
	source := "/proc/meminfo MemTotal"
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if limit, ok := cgroupLimit(f); ok && limit < total {
			total, source = limit, f
		}
	}
	return total, source
}

// Default returns the default memory_limit: a DefaultFraction of what
// Available finds, at least Minimum; 1 GiB where neither is readable.
func Default() Bytes {
	avail, _ := Available()
	if avail == 0 {
		return 1 << 30
	}
	return max(avail/DefaultFraction, Minimum)
}

func memTotal(path string) (Bytes, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, err
		}
		return Bytes(kb) << 10, nil
	}
	return 0, errors.New("no MemTotal line")
}

// cgroupLimit reads a cgroup memory limit; "max" (v2) and the huge
// number v1 writes for "no limit" read as no limit.
func cgroupLimit(path string) (Bytes, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || v <= 0 || v >= math.MaxInt64/2 {
		return 0, false
	}
	return Bytes(v), true
}

// Shares is memory_limit divided among what grows with load. The rest
// (an eighth) is for what does not: code, the TSDB's fixed structures,
// the garbage collector's headroom.
type Shares struct {
	// Requests bounds request bodies being read and decoded, and decoded
	// requests waiting for a worker.
	Requests Bytes
	// Edges bounds the half edges waiting for their other side, summed
	// over tenants.
	Edges Bytes
	// Series bounds the active series with their TSDB head memory, summed
	// over tenants.
	Series Bytes
	// Rolling bounds the rolling windows' samples (rolling_window), summed
	// over tenants. It is a pool of its own so that a cache never takes
	// memory from new series: a sample that does not fit sends the windows
	// that reach it to the TSDB.
	Rolling Bytes
	// Queries bounds the samples that queries running at once hold.
	Queries Bytes
}

// Split divides limit: 1/8 for requests, 1/4 for half edges, 5/16 for
// series, 1/16 for rolling windows, 1/8 for queries; the last 1/8 is
// headroom for what does not grow with load.
func Split(limit Bytes) Shares {
	return Shares{Requests: limit / 8, Edges: limit / 4, Series: limit * 5 / 16, Rolling: limit / 16, Queries: limit / 8}
}

// SetRuntimeLimit makes limit the Go runtime's soft memory limit, unless
// the GOMEMLIMIT environment variable sets one: an operator's explicit
// runtime setting wins. It reports whether it set the limit.
func SetRuntimeLimit(limit Bytes) bool {
	if os.Getenv("GOMEMLIMIT") != "" {
		return false
	}
	debug.SetMemoryLimit(int64(limit))
	return true
}

// Pool is one share, drawn on by every tenant: a tenant alone may use all
// of it, many tenants together never more. Users take memory in coarse
// units (a chunk of edge slots, a new series), never per span.
type Pool struct {
	name  string
	size  int64
	inUse atomic.Int64
}

// NewPool returns a pool of size bytes; name (the config key that sizes
// it) goes into errors and health.
func NewPool(name string, size Bytes) *Pool { return &Pool{name: name, size: int64(size)} }

// Take reserves n bytes, or reports false when they do not fit. A nil
// pool has no bound.
func (p *Pool) Take(n int64) bool {
	if p == nil {
		return true
	}
	for {
		have := p.inUse.Load()
		if have+n > p.size {
			return false
		}
		if p.inUse.CompareAndSwap(have, have+n) {
			return true
		}
	}
}

// Give returns n bytes taken before.
func (p *Pool) Give(n int64) {
	if p != nil {
		p.inUse.Add(-n)
	}
}

// InUse returns the bytes taken.
func (p *Pool) InUse() int64 {
	if p == nil {
		return 0
	}
	return p.inUse.Load()
}

// Size returns the pool's size in bytes.
func (p *Pool) Size() int64 {
	if p == nil {
		return math.MaxInt64
	}
	return p.size
}

// Name returns the config key that sizes the pool.
func (p *Pool) Name() string {
	if p == nil {
		return ""
	}
	return p.name
}
