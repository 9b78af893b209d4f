package spanfilter

import (
	"strings"
	"testing"

	"github.com/spangraph/spangraph/pkg/otlp"
)

func str(k, v string) otlp.KeyValue {
	return otlp.KeyValue{Key: k, Value: otlp.Value{Type: otlp.ValueString, Str: v}}
}

func TestKeep(t *testing.T) {
	resource := []otlp.KeyValue{str("service.name", "checkout"), {Key: "replicas", Value: otlp.Value{Type: otlp.ValueInt, Int: 3}}}
	span := &otlp.Span{
		Name: "GET /nowhere", Kind: otlp.SpanKindServer, StatusCode: otlp.StatusError,
		Attributes: []otlp.KeyValue{str("http.route", "/nowhere"), {Key: "retry", Value: otlp.Value{Type: otlp.ValueBool, Int: 1}}},
	}
	match := func(typ string, kv ...string) *Match {
		m := &Match{MatchType: typ}
		for i := 0; i < len(kv); i += 2 {
			m.Attributes = append(m.Attributes, Attribute{Key: kv[i], Value: kv[i+1]})
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		policies []Policy
		keep     bool
	}{
		{"no policies", nil, true},
		{"include strict name", []Policy{{Include: match("strict", "name", "GET /nowhere")}}, true},
		{"include strict is whole text", []Policy{{Include: match("strict", "name", "GET")}}, false},
		{"default match type is strict", []Policy{{Include: match("", "kind", "SPAN_KIND_SERVER")}}, true},
		{"include needs every attribute", []Policy{{Include: match("strict", "kind", "SPAN_KIND_SERVER", "status", "STATUS_CODE_OK")}}, false},
		{"include_any needs one", []Policy{{IncludeAny: match("strict", "kind", "SPAN_KIND_CLIENT", "status", "STATUS_CODE_ERROR")}}, true},
		{"include_any none", []Policy{{IncludeAny: match("strict", "kind", "SPAN_KIND_CLIENT", "status", "STATUS_CODE_OK")}}, false},
		{"exclude needs every attribute", []Policy{{Exclude: match("strict", "kind", "SPAN_KIND_SERVER", "status", "STATUS_CODE_OK")}}, true},
		{"exclude matches", []Policy{{Exclude: match("strict", "span.http.route", "/nowhere")}}, false},
		// Tempo matches regexes unanchored (Go's MatchString): "nowhere"
		// excludes "GET /nowhere".
		{"regex unanchored", []Policy{{Exclude: match("regex", "name", "nowhere")}}, false},
		{"regex anchored by the user", []Policy{{Exclude: match("regex", "name", "^nowhere$")}}, true},
		{"regex alternatives", []Policy{{Include: match("regex", "name", "^POST|^GET")}}, true},
		{"resource attribute", []Policy{{Include: match("strict", "resource.service.name", "checkout")}}, true},
		{"resource attribute is not a span one", []Policy{{Include: match("strict", "span.service.name", "checkout")}}, false},
		{"int attribute as text", []Policy{{Include: match("strict", "resource.replicas", "3")}}, true},
		{"bool attribute as text", []Policy{{Include: match("strict", "span.retry", "true")}}, true},
		{"missing attribute never matches", []Policy{{Include: match("regex", "span.absent", ".*")}}, false},
		{"missing attribute is not excluded", []Policy{{Exclude: match("regex", "span.absent", ".*")}}, true},
		{"every policy must pass", []Policy{
			{Include: match("strict", "kind", "SPAN_KIND_SERVER")},
			{Exclude: match("regex", "name", "nowhere")},
		}, false},
		{"include and exclude in one policy", []Policy{{
			Include: match("strict", "kind", "SPAN_KIND_SERVER"),
			Exclude: match("strict", "name", "GET /elsewhere"),
		}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New("spanmetrics.filter_policies", tc.policies)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Keep(resource, span); got != tc.keep {
				t.Fatalf("Keep = %v, want %v", got, tc.keep)
			}
		})
	}
}

func TestNewErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		policy Policy
		want   string
	}{
		{Policy{Include: &Match{}}, "p[0].include.attributes: at least one attribute is required"},
		{Policy{Exclude: &Match{MatchType: "fuzzy", Attributes: []Attribute{{Key: "name", Value: "x"}}}}, `p[0].exclude.match_type: "fuzzy" is not strict or regex`},
		{Policy{IncludeAny: &Match{Attributes: []Attribute{{Key: "service", Value: "x"}}}}, `p[0].include_any.attributes[0].key: "service" must be name, kind, status`},
		{Policy{Include: &Match{Attributes: []Attribute{{Key: "name"}}}}, "p[0].include.attributes[0].value: missing"},
		{Policy{Include: &Match{MatchType: "regex", Attributes: []Attribute{{Key: "name", Value: "("}}}}, "p[0].include.attributes[0].value: invalid regex"},
	} {
		_, err := New("p", []Policy{tc.policy})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("New = %v, want %q", err, tc.want)
		}
	}
}

func TestEmpty(t *testing.T) {
	var none *Filter
	f, _ := New("p", nil)
	if !none.Empty() || !f.Empty() || !none.Keep(nil, &otlp.Span{}) {
		t.Fatal("a nil or policy-less filter keeps everything without looking")
	}
}
