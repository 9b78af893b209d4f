package processor

import (
	"unsafe"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// Dimensions looks up a fixed list of attribute keys the way Tempo does:
// on the resource first, then on the span. Resource values are resolved
// once per resource, so per span only the keys the resource lacks are
// searched.
type Dimensions struct {
	keys []string
}

// NewDimensions returns a resolver for keys.
func NewDimensions(keys []string) *Dimensions {
	return &Dimensions{keys: append([]string(nil), keys...)}
}

// ResolvedDims holds the values of the keys for one span, "" when absent.
type ResolvedDims struct {
	vals         []string
	fromResource []bool
}

// NewResolved returns scratch space for the resolver's keys.
func (d *Dimensions) NewResolved() ResolvedDims {
	return ResolvedDims{vals: make([]string, len(d.keys)), fromResource: make([]bool, len(d.keys))}
}

// Value returns the value of the i-th key.
func (r *ResolvedDims) Value(i int) string { return r.vals[i] }

// ResolveResource records the values of the keys found on the resource.
func (d *Dimensions) ResolveResource(r *ResolvedDims, attrs []otlp.KeyValue) {
	for i, k := range d.keys {
		r.vals[i], r.fromResource[i] = "", false
		if v, ok := otlp.Lookup(attrs, k); ok {
			if text := v.Text(); text != "" {
				r.vals[i], r.fromResource[i] = text, true
			}
		}
	}
}

// ResolveSpan fills the keys the resource lacks from the span's attributes.
// Non-string values are formatted into text, which it returns grown; the
// values stay valid until text is reused.
func (d *Dimensions) ResolveSpan(r *ResolvedDims, attrs []otlp.KeyValue, text []byte) []byte {
	for i, k := range d.keys {
		if r.fromResource[i] {
			continue
		}
		r.vals[i] = ""
		v, ok := otlp.Lookup(attrs, k)
		if !ok {
			continue
		}
		if v.Type == otlp.ValueString {
			r.vals[i] = v.Str
			continue
		}
		var s string
		text, s = appendString(text, v)
		r.vals[i] = s
	}
	return text
}

// appendString formats v at the end of text and returns a string that
// shares text's memory. If text grows, the string keeps the old array alive,
// so it stays valid.
func appendString(text []byte, v otlp.Value) ([]byte, string) {
	start := len(text)
	text, _ = v.AppendText(text)
	if len(text) == start {
		return text, ""
	}
	return text, unsafe.String(&text[start], len(text)-start)
}

// Join joins the non-empty values of keys start..start+n-1 with sep into
// text, as dimension_mappings do.
func (r *ResolvedDims) Join(start, n int, sep string, text []byte) ([]byte, string) {
	begin := len(text)
	first := true
	for i := start; i < start+n; i++ {
		if r.vals[i] == "" {
			continue
		}
		if !first {
			text = append(text, sep...)
		}
		text = append(text, r.vals[i]...)
		first = false
	}
	if len(text) == begin {
		return text, ""
	}
	return text, unsafe.String(&text[begin], len(text)-begin)
}
