//go:build linux

package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/store"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// consume feeds three SERVER spans of service, ending now, to the tenant.
func consume(t *testing.T, e *Engine, service string) {
	t.Helper()
	consumeRequest(t, e, exportRequest(service))
}

// stored returns the last stored value of service's calls counter, or -1.
func stored(t *testing.T, e *Engine, service string) float64 {
	t.Helper()
	// Through Queryable, as queries read: it opens a tenant on disk.
	queryable, _ := e.Queryable(tenant.Default)
	q, err := queryable.Querier(0, time.Now().Add(time.Hour).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), false, nil,
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "traces_spanmetrics_calls_total"),
		labels.MustNewMatcher(labels.MatchEqual, "service", service))
	v := -1.0
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			_, v = it.At()
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return v
}

// walFull makes every write to the open WAL segment of the tenant fail with
// ENOSPC, as on a full disk, by putting /dev/full under its file
// descriptor; the returned function puts the segment back.
func walFull(t *testing.T, dataDir string) (restore func()) {
	t.Helper()
	walDir := filepath.Join(store.Dir(dataDir, tenant.Default), "wal") + string(filepath.Separator)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	seg := -1
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, walDir) && !strings.Contains(target[len(walDir):], string(filepath.Separator)) {
			var n int
			for _, c := range fd.Name() {
				n = n*10 + int(c-'0')
			}
			seg = n
		}
	}
	if seg < 0 {
		t.Fatalf("no open WAL segment under %s", walDir)
	}
	full, err := syscall.Open("/dev/full", syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer syscall.Close(full)
	saved, err := syscall.Dup(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(full, seg, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := syscall.Dup3(saved, seg, syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		syscall.Close(saved)
	}
}

// TestCollectionOnFullDisk: a collection whose commit fails (the WAL cannot
// be written: ENOSPC) is logged as such and counted in
// spangraph_collection_failures_total, loses nothing from memory, and the
// first collection after the fault writes every series, including those
// that changed or appeared during it; after a restart all of it is there.
func TestCollectionOnFullDisk(t *testing.T) {
	dataDir := t.TempDir()
	log := &otlptest.LogBuffer{}
	e := newTestEngine(t, dataDir, log)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			e.Stop(context.Background())
		}
	})
	consume(t, e, "before")
	e.Collect()
	if got := stored(t, e, "before"); got != 3 {
		t.Fatalf("before the fault: %v calls stored, want 3", got)
	}
	lastOK := e.Tenant(tenant.Default).LastCollection()
	failures := testutil.ToFloat64(collectionFailures.WithLabelValues(tenant.Default))

	restore := walFull(t, dataDir)
	consume(t, e, "before") // a known series grows
	consume(t, e, "during") // and a new one appears
	e.Collect()
	restore()

	if got := testutil.ToFloat64(collectionFailures.WithLabelValues(tenant.Default)); got != failures+1 {
		t.Errorf("spangraph_collection_failures_total went from %v to %v, want one more", failures, got)
	}
	if !strings.Contains(log.String(), "collection failed (full disk?)") || !strings.Contains(log.String(), "no space left on device") {
		t.Errorf("the failure is not logged as a full disk:\n%s", log.String())
	}
	if got := e.Tenant(tenant.Default).LastCollection(); !got.Equal(lastOK) {
		t.Errorf("last collection moved to %v on a failure", got)
	}
	if got := stored(t, e, "during"); got != -1 {
		t.Errorf("a failed collection stored %v calls of a new series", got)
	}

	e.Collect()
	if got := stored(t, e, "before"); got != 6 {
		t.Errorf("after the fault: before has %v calls stored, want 6", got)
	}
	if got := stored(t, e, "during"); got != 3 {
		t.Errorf("after the fault: during has %v calls stored, want 3 (kept in memory)", got)
	}

	// The WAL is sound: a restart replays all of it.
	e.Stop(context.Background())
	stopped = true
	e2 := newTestEngine(t, dataDir, log)
	defer e2.Stop(context.Background())
	for service, want := range map[string]float64{"before": 6, "during": 3} {
		if got := stored(t, e2, service); got != want {
			t.Errorf("after a restart %s has %v calls stored, want %v", service, got, want)
		}
	}
}
