package config

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spangraph/spangraph/pkg/remotewrite"
)

var update = flag.Bool("update", false, "rewrite README.md's rows of the settings from the settings table")

const readmePath = "../../README.md"

// readmeHeader opens README.md's configuration table.
var readmeHeader = []string{"| key | flag, environment | default | meaning |", "|---|---|---|---|"}

// TestREADMEConfigTable holds README.md's configuration table to the code.
// Its first rows are the settings table's, rendered (-update rewrites
// them: go test ./pkg/config -run TestREADMEConfigTable -update); the
// rows after them are written by hand, one per nested key or group of
// keys. Every YAML key of Config must be named in the table's key column,
// itself or through a section documented as a whole (`auth` covers
// auth.tenants), and every key named there must exist.
//
// A key cell may abbreviate the keys after its first:
// "..._read_timeout" after "receiver.http_read_header_timeout" is
// receiver.http_read_timeout (the first key up to the first "_" of its
// last part, then the rest), ".read_timeout" after
// "http_server.read_header_timeout" is http_server.read_timeout (the
// first key's section, then the rest); a placeholder part
// ("limits.overrides.<tenant>.*") ends the key it is in.
func TestREADMEConfigTable(t *testing.T) {
	data, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	start, end := configTable(t, lines)
	want := append([]string{}, readmeHeader...)
	own := map[string]bool{}
	for _, s := range settings {
		want = append(want, readmeRow(s))
		own[s.yaml] = true
	}
	for _, row := range lines[start+min(2, end-start) : end] {
		if keys := rowKeys(row); len(keys) == 0 || !own[keys[0]] {
			want = append(want, row)
		}
	}
	if got := lines[start:end]; !slices.Equal(got, want) {
		if !*update {
			t.Fatalf("README.md's configuration table is not the settings table's rows then the hand-written ones; "+
				"go test ./pkg/config -run TestREADMEConfigTable -update rewrites it:\n%s", lineDiff(got, want))
		}
		out := append(append(append([]string{}, lines[:start]...), want...), lines[end:]...)
		if err := os.WriteFile(readmePath, []byte(strings.Join(out, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", readmePath)
	}

	for _, problem := range tableProblems(want[2:]) {
		t.Error(problem)
	}
}

// tableProblems are the keys the table's rows name that do not exist,
// twice, and the keys of Config they do not name.
func tableProblems(rows []string) []string {
	exists := map[string]bool{}
	var leaves, problems []string
	yamlKeys(reflect.TypeOf(Config{}), "", exists, &leaves)
	named := map[string]bool{}
	for _, row := range rows {
		for _, k := range rowKeys(row) {
			switch {
			case !exists[k]:
				problems = append(problems, fmt.Sprintf("README.md's configuration table names %s, which is no key", k))
			case named[k]:
				problems = append(problems, fmt.Sprintf("README.md's configuration table names %s twice", k))
			}
			named[k] = true
		}
	}
	for _, k := range leaves {
		if !covered(k, named) {
			problems = append(problems, k+" is not in README.md's configuration table")
		}
	}
	return problems
}

// TestTableProblems: the check above fails on what it is there for.
func TestTableProblems(t *testing.T) {
	var rows []string
	for _, s := range settings {
		rows = append(rows, readmeRow(s))
	}
	all := tableProblems(rows)
	for _, tc := range []struct {
		row, want string
	}{
		{"| `receiver.max_request_bytes` | | | |", ""},
		{"| `receiver.tls` | | | |", ""},
		{"| `receiver.nope` | | | |", "names receiver.nope, which is no key"},
		{"| `data_dir` | | | |", "names data_dir twice"},
	} {
		problems := tableProblems(append(slices.Clone(rows), tc.row))
		extra := slices.DeleteFunc(problems, func(p string) bool { return slices.Contains(all, p) })
		ok := len(extra) == 0
		if tc.want != "" {
			ok = len(extra) == 1 && strings.Contains(extra[0], tc.want)
		}
		if !ok {
			t.Errorf("%s: %q, want %q", tc.row, extra, tc.want)
		}
	}
	// Without hand-written rows, nested keys are missing, even those of
	// sections (receiver.tls.cert_file) and inlined structs (limits.burst).
	for _, want := range []string{"receiver.max_request_bytes is not", "receiver.tls.cert_file is not", "limits.burst is not", "auth.tenants is not"} {
		if !slices.ContainsFunc(all, func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("no %q in %q", want, all)
		}
	}
	if got := tableProblems(append(rows, "| `receiver.tls` | | | |")); slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, "receiver.tls.") }) {
		t.Errorf("receiver.tls does not cover its keys: %q", got)
	}
}

func TestRowKeys(t *testing.T) {
	for _, tc := range []struct {
		row  string
		want []string
	}{
		{"| `data_dir` | `--data-dir` | `./data` | one TSDB per tenant under `tenants/<id>/` |", []string{"data_dir"}},
		{"| `receiver.tls`, `http_tls` | | none | `cert_file` |", []string{"receiver.tls", "http_tls"}},
		{"| `receiver.http_read_header_timeout`, `..._read_timeout` | | | |",
			[]string{"receiver.http_read_header_timeout", "receiver.http_read_timeout"}},
		{"| `http_server.read_header_timeout`, `.max_header_bytes` | | | |",
			[]string{"http_server.read_header_timeout", "http_server.max_header_bytes"}},
		{"| `limits.overrides.<tenant>.*` | | | |", []string{"limits.overrides"}},
		{"|---|---|", nil},
	} {
		if got := rowKeys(tc.row); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.row, got, tc.want)
		}
	}
}

// configTable finds the table of the "## Configuration" section: lines
// [start, end).
func configTable(t *testing.T, lines []string) (start, end int) {
	t.Helper()
	section := -1
	for i, l := range lines {
		if l == "## Configuration" {
			section = i
			break
		}
	}
	if section < 0 {
		t.Fatalf("%s has no ## Configuration section", readmePath)
	}
	start = section
	for start < len(lines) && !strings.HasPrefix(lines[start], "|") {
		if start > section && strings.HasPrefix(lines[start], "## ") {
			t.Fatalf("%s: ## Configuration has no table", readmePath)
		}
		start++
	}
	for end = start; end < len(lines) && strings.HasPrefix(lines[end], "|"); end++ {
	}
	return start, end
}

// readmeRow renders a setting as a row of README.md's table.
func readmeRow(s setting) string {
	flagCell := "`--" + s.flag + "`"
	envCell := "`" + PluginEnvPrefix + strings.ToUpper(s.env) + "`"
	if _, ok := s.field(&Config{}).(*remotewrite.Config); ok {
		flagCell += " (repeatable)"
		envCell += " (comma-separated)"
	}
	return fmt.Sprintf("| `%s` | %s, %s | %s | %s |", s.yaml, flagCell, envCell, shownDefaultOf(s), s.doc)
}

// shownDefaultOf is the README's default cell: shownDefault, or Default's
// value written as a user would write it (24h, not 24h0m0s).
func shownDefaultOf(s setting) string {
	if s.shownDefault != "" {
		return s.shownDefault
	}
	d := Default()
	switch p := s.field(&d).(type) {
	case *string:
		return "`" + *p + "`"
	case *time.Duration:
		return "`" + shortDuration(*p) + "`"
	case *int:
		return "`" + strconv.Itoa(*p) + "`"
	case *int64:
		return "`" + strconv.FormatInt(*p, 10) + "`"
	default:
		panic(fmt.Sprintf("setting %s: %T needs a shownDefault", s.yaml, p))
	}
}

// shortDuration drops the zero minutes and seconds time.Duration's String
// adds to whole hours and minutes.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// rowKeys are the keys a row's key cell names, abbreviations expanded
// (see TestREADMEConfigTable).
func rowKeys(row string) []string {
	cells := strings.Split(row, "|")
	if len(cells) < 2 {
		return nil
	}
	var keys []string
	for _, m := range codeSpan.FindAllStringSubmatch(cells[1], -1) {
		k := m[1]
		switch {
		case len(keys) > 0 && strings.HasPrefix(k, "..."):
			first := keys[0]
			dot := strings.LastIndex(first, ".")
			if us := strings.Index(first[dot+1:], "_"); us >= 0 {
				first = first[:dot+1+us]
			}
			k = first + strings.TrimPrefix(k, "...")
		case len(keys) > 0 && strings.HasPrefix(k, "."):
			k = keys[0][:strings.LastIndex(keys[0], ".")] + k
		}
		parts := strings.Split(k, ".")
		for i, p := range parts {
			if strings.HasPrefix(p, "<") || p == "*" {
				parts = parts[:i]
				break
			}
		}
		keys = append(keys, strings.Join(parts, "."))
	}
	return keys
}

var yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()

// yamlKeys records in exists every YAML key path of t under prefix, and
// appends to leaves those it does not descend into: all but structs,
// which are sections. Lists and maps are documented as a whole.
func yamlKeys(t reflect.Type, prefix string, exists map[string]bool, leaves *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		section := f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(yamlUnmarshaler)
		if opts == "inline" {
			if f.Type.Kind() == reflect.Struct {
				yamlKeys(f.Type, prefix, exists, leaves)
			} else {
				// An inline map: keys of the user's (tenant ids), the
				// section is documented as a whole.
				*leaves = append(*leaves, strings.TrimSuffix(prefix, "."))
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		path := prefix + name
		exists[path] = true
		if section {
			yamlKeys(f.Type, path+".", exists, leaves)
		} else {
			*leaves = append(*leaves, path)
		}
	}
}

// covered tells whether the table names key or a section above it.
func covered(key string, named map[string]bool) bool {
	for k := key; ; {
		if named[k] {
			return true
		}
		dot := strings.LastIndex(k, ".")
		if dot < 0 {
			return false
		}
		k = k[:dot]
	}
}

// lineDiff is a line diff of got against want: "-" lines only in got, "+"
// lines only in want (longest common subsequence).
func lineDiff(got, want []string) string {
	n, m := len(got), len(want)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if got[i] == want[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && got[i] == want[j]:
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&b, "- %s\n", got[i])
			i++
		default:
			fmt.Fprintf(&b, "+ %s\n", want[j])
			j++
		}
	}
	return b.String()
}
