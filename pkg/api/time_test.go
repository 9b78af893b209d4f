package api

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseRelTime(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "now", want: now},
		{in: "now-5m", want: now.Add(-5 * time.Minute)},
		{in: "now-1h", want: now.Add(-time.Hour)},
		{in: "now-1h30m", want: now.Add(-90 * time.Minute)},
		{in: "now-2d", want: now.Add(-48 * time.Hour)},
		{in: "now+10s", want: now.Add(10 * time.Second)},
		{in: "1700000400", want: time.Unix(1_700_000_400, 0).UTC()},
		{in: "1700000400.5", want: time.Unix(1_700_000_400, 5e8).UTC()},
		{in: "2026-03-01T11:55:00Z", want: now.Add(-5 * time.Minute)},
		{in: "now-", err: "cannot parse"},
		{in: "now-5", err: "cannot parse"},   // a relative time needs a unit
		{in: "now/d", err: "want now, now-"}, // Grafana's rounding is refused
		{in: "now()", err: "want now, now-"},
		{in: "nowhere", err: "want now, now-"},
		{in: "yesterday", err: "to a valid timestamp"},
		{in: "-5m", err: "to a valid timestamp"},
	} {
		got, err := parseRelTime(tc.in, now)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseRelTime(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || !got.Equal(tc.want)):
			t.Errorf("parseRelTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseWindow(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	for _, tc := range []struct {
		params     url.Values
		start, end time.Time
		err        string
	}{
		{params: nil, start: at(-DefaultWindow), end: now},
		{params: url.Values{"range": {"1h"}}, start: at(-time.Hour), end: now},
		{params: url.Values{"range": {"90"}}, start: at(-90 * time.Second), end: now},
		{params: url.Values{"range": {"15m"}, "end": {"now-1h"}}, start: at(-75 * time.Minute), end: at(-time.Hour)},
		{params: url.Values{"start": {"now-30m"}}, start: at(-30 * time.Minute), end: now},
		{params: url.Values{"start": {"now-1h"}, "end": {"now-30m"}}, start: at(-time.Hour), end: at(-30 * time.Minute)},
		{params: url.Values{"end": {"2026-03-01T11:00:00Z"}}, start: at(-65 * time.Minute), end: at(-time.Hour)},
		{params: url.Values{"start": {"1772362800"}, "end": {"1772366400"}}, start: at(-time.Hour), end: now},
		{params: url.Values{"start": {"now-5m"}, "range": {"5m"}}, err: "give start or range, not both"},
		{params: url.Values{"range": {"0s"}}, err: `invalid parameter "range": 0s is not positive`},
		{params: url.Values{"range": {"-5m"}}, err: `invalid parameter "range"`},
		{params: url.Values{"range": {"now-5m"}}, err: `invalid parameter "range"`},
		{params: url.Values{"start": {"now+1m"}}, err: "end timestamp must not be before start time"},
		{params: url.Values{"end": {"soon"}}, err: `invalid parameter "end"`},
	} {
		r := httptest.NewRequest("GET", "/api/v1/red?"+tc.params.Encode(), nil)
		got, err := parseWindow(r, now)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: %+v, %v; want an error containing %q", tc.params, got, err, tc.err)
		case tc.err == "" && (err != nil || !got.Start.Equal(tc.start) || !got.End.Equal(tc.end)):
			t.Errorf("%v: %+v, %v; want %v to %v", tc.params, got, err, tc.start, tc.end)
		}
	}
}
