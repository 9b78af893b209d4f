package processor

import (
	"math"
	"strings"
	"testing"
)

func TestSanitizeLabelName(t *testing.T) {
	reserved := []string{"service", "span_name"}
	for _, tc := range []struct{ in, want string }{
		{"http.route", "http_route"},
		{"k8s-pod/name", "k8s_pod_name"},
		{"zürich", "z__rich"}, // every byte of a multi-byte rune
		{"1st", "_1st"},
		{"service", "__service"},
		{"service.name", "service_name"},
		{"span.name", "__span_name"}, // collides once sanitised
		{"", ""},
	} {
		if got := SanitizeLabelName(tc.in, reserved); got != tc.want {
			t.Errorf("SanitizeLabelName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestValidateBuckets(t *testing.T) {
	for _, tc := range []struct {
		bounds []float64
		err    string
	}{
		{[]float64{0.1, 0.2, 12.8}, ""},
		{nil, "b: at least one bucket bound is required"},
		{[]float64{0.1, 0}, "b[1]: 0 is not a positive finite number"},
		{[]float64{math.NaN()}, "b[0]: NaN is not a positive finite number"},
		{[]float64{math.Inf(1)}, "b[0]: +Inf is not a positive finite number"},
		{[]float64{1, 0.5}, "b[1]: bounds must be strictly ascending (0.5 after 1)"},
		{[]float64{1, 1}, "b[1]: bounds must be strictly ascending"},
	} {
		err := ValidateBuckets("b", tc.bounds)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)) {
			t.Errorf("ValidateBuckets(%v) = %v, want %q", tc.bounds, err, tc.err)
		}
	}
}
