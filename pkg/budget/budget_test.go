package budget

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Bytes
		bad  bool
	}{
		{in: "1073741824", want: 1 << 30},
		{in: "512MiB", want: 512 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "2gib", want: 2 << 30},
		{in: " 1.5 GiB ", want: 3 << 29},
		{in: "1GB", want: 1e9},
		{in: "800KB", want: 800e3},
		{in: "64k", want: 64 << 10},
		{in: "100B", want: 100},
		{in: "", bad: true},
		{in: "lots", bad: true},
		{in: "-1GiB", bad: true},
		{in: "1e30GiB", bad: true},
		{in: "NaN", bad: true},
		{in: "5 parsecs", bad: true},
	} {
		got, err := ParseBytes(tc.in)
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestBytesRoundTrip(t *testing.T) {
	for _, b := range []Bytes{0, 1, 1000, 1 << 10, 3 << 29, 6 << 30, 1<<40 + 1} {
		again, err := ParseBytes(b.String())
		if err != nil || again != b {
			t.Errorf("%d → %q → %d, %v", b, b.String(), again, err)
		}
	}
	var v struct {
		Limit Bytes `yaml:"limit"`
	}
	if err := yaml.Unmarshal([]byte("limit: 2GiB"), &v); err != nil || v.Limit != 2<<30 {
		t.Fatalf("yaml 2GiB = %d, %v", v.Limit, err)
	}
	if err := yaml.Unmarshal([]byte("\nlimit: plenty"), &v); err == nil || err.Error() != `line 2: "plenty" is not a size such as 512MiB, 2GiB or 1073741824` {
		t.Fatalf("yaml error %v", err)
	}
}

func TestAvailableReadsCgroupLimits(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	meminfo := write("meminfo", "MemFree: 1 kB\nMemTotal:       24683584 kB\n")
	if got, err := memTotal(meminfo); err != nil || got != 24683584<<10 {
		t.Fatalf("memTotal = %d, %v", got, err)
	}
	for _, tc := range []struct {
		content string
		want    Bytes
		ok      bool
	}{
		{"max\n", 0, false},                 // cgroup v2 without a limit
		{"9223372036854771712\n", 0, false}, // cgroup v1 without a limit
		{"2147483648\n", 2 << 30, true},     // a 2 GiB container
		{"garbage", 0, false},
	} {
		got, ok := cgroupLimit(write("limit", tc.content))
		if got != tc.want || ok != tc.ok {
			t.Errorf("cgroupLimit(%q) = %d, %v; want %d, %v", tc.content, got, ok, tc.want, tc.ok)
		}
	}
	if d := Default(); d < Minimum {
		t.Fatalf("Default() = %s, below the minimum %s", d, Minimum)
	}
}

func TestSplitLeavesAnEighth(t *testing.T) {
	limit := Bytes(8 << 30)
	s := Split(limit)
	if sum := s.Requests + s.Edges + s.Series + s.Rolling + s.Queries; sum != limit*7/8 {
		t.Fatalf("shares sum to %s, want 7/8 of %s", sum, limit)
	}
}

func TestPool(t *testing.T) {
	p := NewPool("memory_limit", 1000)
	var wg sync.WaitGroup
	var taken [8]int
	for g := range taken {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if p.Take(10) {
					taken[g]++
				}
			}
		}()
	}
	wg.Wait()
	sum := 0
	for _, n := range taken {
		sum += n
	}
	if sum != 100 || p.InUse() != 1000 {
		t.Fatalf("%d takes of 10 succeeded, %d in use; want exactly 100 and 1000", sum, p.InUse())
	}
	p.Give(10)
	if !p.Take(10) || p.Take(1) {
		t.Fatal("a given-back unit must fit again, and nothing more")
	}
	var none *Pool
	if !none.Take(1<<40) || none.InUse() != 0 {
		t.Fatal("a nil pool has no bound")
	}
}
