// Package spanfilter decides which spans a processor sees, with the
// filter_policies of Tempo's metrics-generator: every policy must pass; a
// policy passes when its include matches (all attributes), its include_any
// matches (any attribute) and its exclude does not.
package spanfilter

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// Policy is one filter policy as written in the config.
type Policy struct {
	Include    *Match `yaml:"include"`
	IncludeAny *Match `yaml:"include_any"`
	Exclude    *Match `yaml:"exclude"`
}

// Match lists attribute conditions.
type Match struct {
	// MatchType is "strict" (equal text) or "regex" (matching anywhere in
	// the text, as Tempo's MatchString does: anchor with ^ and $).
	MatchType  string      `yaml:"match_type"`
	Attributes []Attribute `yaml:"attributes"`
}

// Attribute is one condition. Key is resource.<name>, span.<name>, or one of
// the intrinsics name, kind (SPAN_KIND_…) and status (STATUS_CODE_…).
type Attribute struct {
	Key   string `yaml:"key"`
	Value any    `yaml:"value"`
}

// Filter is a compiled set of policies. The zero Filter keeps every span.
type Filter struct {
	policies []compiled
}

type compiled struct {
	include, includeAny, exclude []condition
}

type source uint8

const (
	fromResource source = iota
	fromSpan
	intrinsicName
	intrinsicKind
	intrinsicStatus
)

type condition struct {
	src   source
	key   string
	text  string
	regex *regexp.Regexp
}

// New compiles policies; errors name the policy and key at fault, with
// path as the config path prefix (e.g. "spanmetrics.filter_policies").
func New(path string, policies []Policy) (*Filter, error) {
	f := &Filter{}
	for i, p := range policies {
		var c compiled
		var err error
		where := fmt.Sprintf("%s[%d]", path, i)
		if c.include, err = compile(where+".include", p.Include); err != nil {
			return nil, err
		}
		if c.includeAny, err = compile(where+".include_any", p.IncludeAny); err != nil {
			return nil, err
		}
		if c.exclude, err = compile(where+".exclude", p.Exclude); err != nil {
			return nil, err
		}
		f.policies = append(f.policies, c)
	}
	return f, nil
}

func compile(where string, m *Match) ([]condition, error) {
	if m == nil {
		return nil, nil
	}
	if len(m.Attributes) == 0 {
		return nil, fmt.Errorf("%s.attributes: at least one attribute is required", where)
	}
	regex := false
	switch m.MatchType {
	case "strict", "":
	case "regex":
		regex = true
	default:
		return nil, fmt.Errorf("%s.match_type: %q is not strict or regex", where, m.MatchType)
	}
	conds := make([]condition, 0, len(m.Attributes))
	for j, a := range m.Attributes {
		at := fmt.Sprintf("%s.attributes[%d]", where, j)
		c := condition{text: fmt.Sprint(a.Value)}
		switch {
		case a.Key == "name":
			c.src = intrinsicName
		case a.Key == "kind":
			c.src = intrinsicKind
		case a.Key == "status":
			c.src = intrinsicStatus
		case strings.HasPrefix(a.Key, "resource."):
			c.src, c.key = fromResource, strings.TrimPrefix(a.Key, "resource.")
		case strings.HasPrefix(a.Key, "span."):
			c.src, c.key = fromSpan, strings.TrimPrefix(a.Key, "span.")
		default:
			return nil, fmt.Errorf("%s.key: %q must be name, kind, status, resource.<attribute> or span.<attribute>", at, a.Key)
		}
		if a.Value == nil {
			return nil, fmt.Errorf("%s.value: missing", at)
		}
		if regex {
			re, err := regexp.Compile(c.text)
			if err != nil {
				return nil, fmt.Errorf("%s.value: invalid regex: %v", at, err)
			}
			c.regex = re
		}
		conds = append(conds, c)
	}
	return conds, nil
}

// Empty reports whether the filter keeps every span without looking.
func (f *Filter) Empty() bool { return f == nil || len(f.policies) == 0 }

// Keep reports whether the span passes every policy.
func (f *Filter) Keep(resource []otlp.KeyValue, s *otlp.Span) bool {
	if f.Empty() {
		return true
	}
	for i := range f.policies {
		p := &f.policies[i]
		if p.include != nil && !all(p.include, resource, s) {
			return false
		}
		if p.includeAny != nil && !anyOf(p.includeAny, resource, s) {
			return false
		}
		if p.exclude != nil && all(p.exclude, resource, s) {
			return false
		}
	}
	return true
}

func all(conds []condition, resource []otlp.KeyValue, s *otlp.Span) bool {
	for i := range conds {
		if !conds[i].matches(resource, s) {
			return false
		}
	}
	return true
}

func anyOf(conds []condition, resource []otlp.KeyValue, s *otlp.Span) bool {
	for i := range conds {
		if conds[i].matches(resource, s) {
			return true
		}
	}
	return false
}

func (c *condition) matches(resource []otlp.KeyValue, s *otlp.Span) bool {
	var text string
	switch c.src {
	case intrinsicName:
		text = s.Name
	case intrinsicKind:
		text = s.Kind.String()
	case intrinsicStatus:
		text = s.StatusCode.String()
	default:
		attrs := s.Attributes
		if c.src == fromResource {
			attrs = resource
		}
		v, ok := otlp.Lookup(attrs, c.key)
		if !ok {
			return false
		}
		text = v.Text()
	}
	if c.regex != nil {
		return c.regex.MatchString(text)
	}
	return text == c.text
}
