package engine

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/rolling"
)

// openRolling gives a tenant being opened its rolling window (unless
// rolling_window is 0), filled from its store in the background so that
// a restart or a reopened idle tenant answers from memory soon, without
// holding up its spans: filling an hour of 10 000 edges takes seconds.
// Until then the window's reads go to the store and its collections wait
// in the window's backlog. Its memory comes from the rolling share of
// memory_limit, never from the series share.
func (e *Engine) openRolling(inst *Instance) {
	if e.cfg.RollingWindow <= 0 {
		return
	}
	st := rolling.New(e.cfg.RollingWindow.Milliseconds(), e.rollingPool)
	start := time.Now()
	st.RebuildInBackground(inst.Store, start.UnixMilli(), func(err error) {
		switch {
		case errors.Is(err, context.Canceled):
			// The tenant closed first.
		case err != nil:
			e.logger.Warn("the rolling window could not be filled from the store; node graphs and RED tables reaching before the tenant opened read the store", "tenant", inst.Tenant, "err", err)
		default:
			e.logger.Debug("rolling window filled from the store", "tenant", inst.Tenant, "bytes", st.HeldBytes(), "took", time.Since(start).Round(time.Millisecond))
		}
	})
	inst.Rolling = st
}

// appender is the appender of one collection at now: the store's, and
// the rolling window's behind it.
func (e *Engine) appender(inst *Instance, now time.Time) storage.Appender {
	app := inst.Store.Appender(context.Background())
	if inst.Rolling == nil {
		return app
	}
	return inst.Rolling.Appender(app, now.UnixMilli())
}

// Rolling returns a tenant's rolling window for reading, opening the
// tenant as a querier would; nil (and a no-op release) when the tenant
// has none or cannot be opened, and the reader then goes to the store,
// which says why.
func (e *Engine) Rolling(tenant string) (*rolling.Store, func()) {
	inst, err := e.acquire(tenant, forRead)
	if err != nil || inst == nil {
		return nil, func() {}
	}
	if inst.Rolling == nil {
		e.release(inst)
		return nil, func() {}
	}
	return inst.Rolling, func() { e.release(inst) }
}
