package processor

import (
	"math"
	"testing"
)

func TestSamplingMultiplier(t *testing.T) {
	cases := []struct {
		ts   string
		want float64
	}{
		{"", 1},
		{"ot=th:0", 1}, // threshold 0: everything kept
		{"ot=th:8", 2},
		{"ot=th:c", 4},
		{"ot=th:c0", 4}, // right-padded: same threshold
		{"ot=th:c0000000000000", 4},
		{"ot=th:e", 8},
		{"ot=th:f", 16},
		{"ot=th:08", 32.0 / 31.0},
		{"ot=th:ffffffffffffff", 1 << 56},
		{"ot=rv:0123456789abcd;th:8", 2}, // th after another sub-key
		{"ot=th:8;rv:0123456789abcd", 2},
		{"vendor=abc,ot=th:c", 4}, // other vendors' members first
		{"ot=th:c,vendor=abc", 4},
		{"a=1, ot=th:8 ,b=2", 2}, // optional white space around members
		{"xot=th:8", 1},          // not the ot member
		{"vendor=th:8", 1},
		{"ot=rv:0123456789abcd", 1}, // ot member without a threshold
		{"ot=th:", 1},
		{"ot=th:zz", 1},
		{"ot=th:0x8", 1},
		{"ot=th:+8", 1},
		{"ot=th:-8", 1},
		{"ot=th:123456789abcdef", 1}, // 15 digits: too long
		{"ot=th:8 ", 2},              // trailing white space belongs to the list, not the member
		{",,,", 1},
		{"ot", 1},
	}
	for _, tc := range cases {
		if got := SamplingMultiplier(tc.ts); math.Abs(got-tc.want) > 1e-12*tc.want {
			t.Errorf("SamplingMultiplier(%q) = %v, want %v", tc.ts, got, tc.want)
		}
	}
}
