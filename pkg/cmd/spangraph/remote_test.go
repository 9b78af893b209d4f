package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/promtest"
)

// startPrometheus runs a real Prometheus (package promtest) and returns
// its address.
func startPrometheus(t *testing.T) string { return promtest.Start(t).Addr }

// rawCalls returns the samples of the live service's calls_total series
// that Prometheus holds, oldest first, by status_code.
func rawCalls(t *testing.T, promAddr string) map[string][]float64 {
	t.Helper()
	q := `traces_spanmetrics_calls_total{service="remote"}[10m]`
	resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	out := map[string][]float64{}
	for _, r := range body.Data.Result {
		for _, v := range r.Values {
			f, _ := strconv.ParseFloat(v[1].(string), 64)
			out[r.Metric["status_code"]] = append(out[r.Metric["status_code"]], f)
		}
	}
	return out
}

// TestRemoteWriteCounters: the leading zero of every new series reaches
// Prometheus (its WAL reader skips samples older than where it started,
// which is where a new series' zero can land), and a restart within
// the minute of the last sample shows as a counter reset there and in the
// local store alike, so that increase() counts every span on both sides.
func TestRemoteWriteCounters(t *testing.T) {
	promAddr := startPrometheus(t)
	// The restart must fall within the minute of the samples before it.
	if s := time.Now().Second(); s > 35 {
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	bin := binary(t)
	dataDir := t.TempDir()
	rw := "--remote-write-url=http://" + promAddr + "/api/v1/write"
	srv := startServer(t, bin, dataDir, rw)
	body := otlptest.Marshal(t, request("remote"))
	send := func(n int) {
		for range n {
			if code, out := do(t, http.MethodPost, "http://"+srv.otlpHTTP+"/v1/traces", body,
				headers{"Content-Type": "application/x-protobuf"}); code != http.StatusOK {
				t.Fatalf("send: %d %s", code, out)
			}
		}
	}
	// request() makes 2 unset and 1 failed span.
	send(5)
	waitCalls(t, srv.http, "remote", 15)
	eventually(t, "both series in Prometheus with their leading zero", func() string {
		got := rawCalls(t, promAddr)
		for _, status := range []string{"STATUS_CODE_UNSET", "STATUS_CODE_ERROR"} {
			if v := got[status]; len(v) < 2 || v[0] != 0 {
				return fmt.Sprintf("%s: %v, want a leading 0", status, v)
			}
		}
		return ""
	})

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = srv.cmd.Wait()
	srv = startServer(t, bin, dataDir, rw)
	send(1)
	// 10 before the restart, 2 after: increase() sees 12 where the reset
	// shows, 10 where it does not.
	resets := `sum(resets(traces_spanmetrics_calls_total{service="remote",status_code="STATUS_CODE_UNSET"}[10m]))`
	eventually(t, "the restart's reset in the local store", func() string {
		if got := instant(t, srv.http, resets, "")[""]; got != 1 {
			return fmt.Sprintf("local resets = %v, want 1", got)
		}
		return ""
	})
	eventually(t, "the restart's reset in Prometheus", func() string {
		v := rawCalls(t, promAddr)["STATUS_CODE_UNSET"]
		last := len(v) - 1
		if last < 1 || v[last] != 2 {
			return fmt.Sprintf("Prometheus has %v, want it to end with 2", v)
		}
		for i := 1; i < len(v); i++ {
			if v[i] < v[i-1] {
				if v[i] != 0 {
					return fmt.Sprintf("Prometheus has %v: the reset must go through 0", v)
				}
				return ""
			}
		}
		return fmt.Sprintf("Prometheus has %v: no reset", v)
	})
}
