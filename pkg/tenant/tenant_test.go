package tenant

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{Default, true},
		{"team-a", true},
		{"a.b_c!*'()", true},
		{strings.Repeat("a", 150), true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"a b", false},
		{strings.Repeat("a", 151), false},
	} {
		if err := Validate(tc.id); (err == nil) != tc.ok {
			t.Errorf("Validate(%.20q) = %v, want ok %v", tc.id, err, tc.ok)
		}
	}
}
