package servicegraph

import "github.com/spangraph/spangraph/pkg/otlp"

// keySet finds a fixed set of attribute keys in one pass over an attribute
// list. A client span needs up to a dozen keys (database names, peer
// attributes, server address, peer address and port); looking each up in
// turn would walk the span's attributes a dozen times. Keys are grouped by
// length, so most attributes are rejected without a string comparison.
type keySet struct {
	keys  []string
	byLen [][]int // indices into keys, by key length
}

// add returns the index of k, adding it if new.
func (ks *keySet) add(k string) int {
	for i, have := range ks.keys {
		if have == k {
			return i
		}
	}
	ks.keys = append(ks.keys, k)
	for len(ks.byLen) <= len(k) {
		ks.byLen = append(ks.byLen, nil)
	}
	ks.byLen[len(k)] = append(ks.byLen[len(k)], len(ks.keys)-1)
	return len(ks.keys) - 1
}

// scan sets out[i] to the value of keys[i] in attrs (the first one, as
// otlp.Lookup does), or to the empty Value when absent.
func (ks *keySet) scan(attrs []otlp.KeyValue, out []otlp.Value) {
	clear(out)
	for i := range attrs {
		k := attrs[i].Key
		if len(k) >= len(ks.byLen) {
			continue
		}
		for _, j := range ks.byLen[len(k)] {
			if ks.keys[j] == k {
				if out[j].Type == otlp.ValueEmpty {
					out[j] = attrs[i].Value
				}
				break
			}
		}
	}
}
