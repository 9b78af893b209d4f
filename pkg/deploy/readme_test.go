package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestREADMEPackageTable: README.md's package table names every package
// under pkg/ and only packages that exist, so a newcomer's map of the tree
// is the tree.
func TestREADMEPackageTable(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	in := false
	cell := regexp.MustCompile("`(pkg/[^`]*)`")
	for _, line := range strings.Split(string(readme), "\n") {
		switch {
		case strings.HasPrefix(line, "| package | what it is |"):
			in = true
		case in && !strings.HasPrefix(line, "|"):
			in = false
		case in:
			first := strings.SplitN(strings.TrimPrefix(line, "|"), "|", 2)[0]
			for _, m := range cell.FindAllStringSubmatch(first, -1) {
				named[m[1]] = true
			}
		}
	}
	if len(named) == 0 {
		t.Fatal("README.md has no package table (a header `| package | what it is |`)")
	}
	have := map[string]bool{}
	err = filepath.WalkDir(filepath.Join(root, "pkg"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		if strings.Contains(rel, "testdata") {
			return nil
		}
		if rel == "pkg" {
			rel = "pkg/main.go" // the plugin's main package
		}
		have[filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing, stale []string
	for p := range have {
		if !named[p] {
			missing = append(missing, p)
		}
	}
	for p := range named {
		if !have[p] {
			stale = append(stale, p)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 || len(stale) > 0 {
		t.Errorf("README.md's package table: packages not in it %v; rows for packages that do not exist %v", missing, stale)
	}
}
