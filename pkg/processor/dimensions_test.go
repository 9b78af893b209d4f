package processor

import (
	"strconv"
	"strings"
	"testing"

	"github.com/spangraph/spangraph/pkg/otlp"
)

func TestDimensions(t *testing.T) {
	keys := []string{"env", "http.route", "http.status_code", "ratio", "cached", "missing", "blob", "region"}
	d := NewDimensions(keys)
	keys[0] = "changed" // NewDimensions must copy its input
	r := d.NewResolved()

	resource := []otlp.KeyValue{
		{Key: "env", Value: otlp.Value{Type: otlp.ValueString, Str: "prod"}},
		{Key: "http.status_code", Value: otlp.Value{Type: otlp.ValueInt, Int: 201}}, // non-string on the resource
		{Key: "region", Value: otlp.Value{Type: otlp.ValueString}},                  // empty: the span may supply it
	}
	span1 := []otlp.KeyValue{
		{Key: "env", Value: otlp.Value{Type: otlp.ValueString, Str: "dev"}}, // the resource wins
		{Key: "http.route", Value: otlp.Value{Type: otlp.ValueString, Str: "/cart"}},
		{Key: "http.status_code", Value: otlp.Value{Type: otlp.ValueInt, Int: 500}},
		{Key: "ratio", Value: otlp.Value{Type: otlp.ValueDouble, Double: 0.5}},
		{Key: "cached", Value: otlp.Value{Type: otlp.ValueBool, Int: 1}},
		{Key: "blob", Value: otlp.Value{Type: otlp.ValueOther}},
		{Key: "region", Value: otlp.Value{Type: otlp.ValueString, Str: "eu"}},
	}
	span2 := []otlp.KeyValue{
		{Key: "ratio", Value: otlp.Value{Type: otlp.ValueDouble, Double: -1e-7}},
		{Key: "cached", Value: otlp.Value{Type: otlp.ValueBool}},
	}
	d.ResolveResource(&r, resource)
	var text []byte
	text = d.ResolveSpan(&r, span1, text[:0])
	want1 := []string{"prod", "/cart", "201", "0.5", "true", "", "", "eu"}
	for i, w := range want1 {
		if got := r.Value(i); got != w {
			t.Errorf("span 1 %s = %q, want %q", keys[i], got, w)
		}
	}
	var joined string
	text, joined = r.Join(0, 3, "/", text)
	if joined != "prod//cart/201" {
		t.Errorf("Join = %q", joined)
	}
	if _, j := r.Join(5, 2, "/", text); j != "" {
		t.Errorf("Join of absent values = %q, want empty", j)
	}

	// The next span of the same resource: what span 1 set must not stay.
	text = d.ResolveSpan(&r, span2, text[:0])
	want2 := []string{"prod", "", "201", "-0.0000001", "false", "", "", ""}
	for i, w := range want2 {
		if got := r.Value(i); got != w {
			t.Errorf("span 2 %s = %q, want %q", keys[i], got, w)
		}
	}

	// A new resource replaces the resource values.
	d.ResolveResource(&r, nil)
	_ = d.ResolveSpan(&r, span1, text[:0])
	want3 := []string{"dev", "/cart", "500", "0.5", "true", "", "", "eu"}
	for i, w := range want3 {
		if got := r.Value(i); got != w {
			t.Errorf("span 1 without resource: %s = %q, want %q", keys[i], got, w)
		}
	}
}

// TestDimensionsTextGrowth: formatted values point into the text buffer;
// when the buffer grows mid-span, values formatted earlier must survive.
func TestDimensionsTextGrowth(t *testing.T) {
	var keys []string
	var span []otlp.KeyValue
	for i := range 50 {
		k := strings.Repeat("k", i+1)
		keys = append(keys, k)
		span = append(span, otlp.KeyValue{Key: k, Value: otlp.Value{Type: otlp.ValueInt, Int: int64(1_000_000_000 + i)}})
	}
	d := NewDimensions(keys)
	r := d.NewResolved()
	d.ResolveResource(&r, nil)
	_ = d.ResolveSpan(&r, span, make([]byte, 0, 4))
	for i := range keys {
		want := strconv.Itoa(1_000_000_000 + i)
		if got := r.Value(i); got != want {
			t.Fatalf("value %d = %q, want %q", i, got, want)
		}
	}
}
