package remotewrite

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

const benchSeries = 1000

// BenchmarkShip measures samples shipped per second, and per CPU-second of
// the whole process, to a local receiver that accepts and discards:
//   - live: the queue tailing the WAL while collections are written (the
//     CPU includes the TSDB appends and the receiver reading bodies);
//   - catchup: a backlog sent from the store after a restart.
//
// One op is one collection of 1000 series.
func BenchmarkShip(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	cfg := func(b *testing.B) Config {
		return parseConfig(b, "remote_write:\n  - url: "+srv.URL+"\n    name: bench\n"+fastQueue)
	}
	lbls := make([]labels.Labels, benchSeries)
	for i := range lbls {
		lbls[i] = labels.FromStrings(labels.MetricName, "spangraph_bench_total", "service", "svc", "series", string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676)))
	}
	write := func(b *testing.B, app storage.Appender, ts int64, v float64) {
		for _, l := range lbls {
			if _, err := app.Append(0, l, ts, v); err != nil {
				b.Fatal(err)
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("live", func(b *testing.B) {
		e := &fakeEngine{st: openStore(b, b.TempDir(), "bench")}
		b.Cleanup(func() { _ = e.st.Close() })
		w := startWriter(b, cfg(b), "bench", e)
		waitLive(b, w, 5*time.Second)
		cpu0, start := cpuTime(), time.Now()
		b.ResetTimer()
		last := int64(0)
		for i := 0; i < b.N; i++ {
			e.mu.Lock()
			last = max(time.Now().UnixMilli(), last+1)
			write(b, e.st.Appender(context.Background()), last, float64(i))
			w.Notify()
			e.mu.Unlock()
		}
		waitSent(b, w, float64(b.N*benchSeries))
		b.StopTimer()
		report(b, start, cpu0)
	})

	b.Run("catchup", func(b *testing.B) {
		e := &fakeEngine{st: openStore(b, b.TempDir(), "bench")}
		b.Cleanup(func() { _ = e.st.Close() })
		c := cfg(b)
		base := time.Now().UnixMilli() - int64(b.N)*10 - 1000
		if err := saveMarker(markerPath(dirOf(e), "bench"), marker{URL: c[0].URL.Redacted(), ResumeFromMs: base}); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i++ {
			write(b, e.st.Appender(context.Background()), base+1000+int64(i)*10, float64(i))
		}
		cpu0, start := cpuTime(), time.Now()
		b.ResetTimer()
		w := startWriter(b, c, "bench", e)
		waitSent(b, w, float64(b.N*benchSeries))
		b.StopTimer()
		report(b, start, cpu0)
	})
}

func waitSent(b *testing.B, w *Writer, n float64) {
	waitFor(b, "every sample shipped", 5*time.Minute, func() bool { return w.Status()[0].SamplesSent >= n })
}

func report(b *testing.B, start time.Time, cpu0 time.Duration) {
	samples := float64(b.N * benchSeries)
	b.ReportMetric(samples/time.Since(start).Seconds(), "samples/s")
	b.ReportMetric(samples/(cpuTime()-cpu0).Seconds(), "samples/cpu-s")
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
