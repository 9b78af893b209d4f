package api

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// The bounds Prometheus uses for open-ended metadata queries.
var (
	minTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
)

// parseTimeParam reads a time parameter, or def when it is absent.
func parseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.FormValue(name)
	if v == "" {
		return def, nil
	}
	t, err := parseTime(v)
	if err != nil {
		return time.Time{}, badData("invalid parameter %q: %v", name, err)
	}
	return t, nil
}

// parseTime accepts Unix seconds (with a fraction) or RFC 3339, as
// Prometheus does.
func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		sec, frac := math.Modf(t)
		return time.Unix(int64(sec), int64(math.Round(frac*1000))*int64(time.Millisecond)).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("cannot parse " + strconv.Quote(s) + " to a valid timestamp")
}

// parseDuration accepts seconds (with a fraction) or a Prometheus duration
// such as 1m30s.
func parseDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if ts > float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, errors.New("cannot parse " + strconv.Quote(s) + " to a valid duration. It overflows int64")
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, errors.New("cannot parse " + strconv.Quote(s) + " to a valid duration")
}

// DefaultWindow is the window of the service-graph and RED endpoints when
// the request names none: the last 5 minutes, Grafana's default panel
// range, so that a rate reads as what is happening now rather than an
// average that a fresh start dilutes.
const DefaultWindow = 5 * time.Minute

// Window is the time range that the rates of a service-graph or RED answer
// are averaged over; the answer carries it, so that a reader sees which
// range the figures describe.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// parseWindow reads the window of the service-graph and RED endpoints from
// start, end and range. end defaults to now; start to end minus range,
// whose default is DefaultWindow; start and range together are refused,
// as they would contradict each other. start and end take what parseTime
// takes and Grafana's relative times (see parseRelTime); range takes what
// parseDuration takes.
func parseWindow(r *http.Request, now time.Time) (Window, error) {
	end := now
	if v := r.FormValue("end"); v != "" {
		t, err := parseRelTime(v, now)
		if err != nil {
			return Window{}, badData("invalid parameter \"end\": %v", err)
		}
		end = t
	}
	length := DefaultWindow
	if v := r.FormValue("range"); v != "" {
		if r.FormValue("start") != "" {
			return Window{}, badData("give start or range, not both")
		}
		d, err := parseDuration(v)
		if err != nil {
			return Window{}, badData("invalid parameter \"range\": %v", err)
		}
		if d <= 0 {
			return Window{}, badData("invalid parameter \"range\": %s is not positive", v)
		}
		length = d
	}
	start := end.Add(-length)
	if v := r.FormValue("start"); v != "" {
		t, err := parseRelTime(v, now)
		if err != nil {
			return Window{}, badData("invalid parameter \"start\": %v", err)
		}
		start = t
	}
	if end.Before(start) {
		return Window{}, badData("end timestamp must not be before start time")
	}
	return Window{Start: start.UTC(), End: end.UTC()}, nil
}

// parseRelTime accepts what parseTime accepts and Grafana's relative
// times: "now", "now-5m", "now+1h" (a Prometheus duration after the
// sign), all against the same now for one request. Grafana's rounding
// ("now/d") is refused rather than silently ignored.
func parseRelTime(s string, now time.Time) (time.Time, error) {
	rest, ok := strings.CutPrefix(s, "now")
	if !ok {
		return parseTime(s)
	}
	if rest == "" {
		return now, nil
	}
	sign := rest[0]
	if sign != '-' && sign != '+' {
		return time.Time{}, errors.New("cannot parse " + strconv.Quote(s) + ": want now, now-<duration> or now+<duration>")
	}
	d, err := model.ParseDuration(rest[1:])
	if err != nil {
		return time.Time{}, errors.New("cannot parse " + strconv.Quote(s) + ": " + err.Error())
	}
	if sign == '-' {
		return now.Add(-time.Duration(d)), nil
	}
	return now.Add(time.Duration(d)), nil
}
