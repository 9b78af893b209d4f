// Package processor holds what the two span processors, spanmetrics and
// servicegraph, share in turning spans into series: attribute dimensions
// resolved the way Tempo does (resource first, then span), attribute names
// sanitised into label names, histogram bucket validation, and the number
// of spans a sampled span stands for. Neither processor imports the other;
// both import this package. Which spans a processor sees is pkg/spanfilter.
package processor

import "fmt"

// ValidateBuckets checks that bounds are finite, positive and ascending.
func ValidateBuckets(key string, bounds []float64) error {
	if len(bounds) == 0 {
		return fmt.Errorf("%s: at least one bucket bound is required", key)
	}
	for i, b := range bounds {
		if b != b || b <= 0 || b > 1e12 {
			return fmt.Errorf("%s[%d]: %v is not a positive finite number", key, i, b)
		}
		if i > 0 && b <= bounds[i-1] {
			return fmt.Errorf("%s[%d]: bounds must be strictly ascending (%v after %v)", key, i, b, bounds[i-1])
		}
	}
	return nil
}

// SanitizeLabelName turns an attribute name into a Prometheus label name:
// every character outside [a-zA-Z0-9_] becomes _, a leading digit gets a
// _ in front, and a name equal to one of reserved gets a __ prefix.
func SanitizeLabelName(name string, reserved []string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	out := string(b)
	if len(out) > 0 && out[0] >= '0' && out[0] <= '9' {
		out = "_" + out
	}
	for _, r := range reserved {
		if out == r {
			return "__" + out
		}
	}
	return out
}
