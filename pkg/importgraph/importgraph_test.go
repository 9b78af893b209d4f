package importgraph

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/spangraph/spangraph"

// pkg is what `go list -json` says of one package.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// listPackages lists every package under pkg/, with its imports. -e keeps
// going past a package that does not build, whose imports still count.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports", module+"/pkg/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var all []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		all = append(all, p)
	}
	if len(all) < 10 {
		t.Fatalf("go list found %d packages under pkg/, want the whole module", len(all))
	}
	return all
}

// rel is a package's path relative to the module ("pkg/store").
func rel(path string) string { return strings.TrimPrefix(path, module+"/") }

// importsAny returns the imports equal to, or under, one of prefixes.
func importsAny(imports []string, prefixes ...string) []string {
	var out []string
	for _, imp := range imports {
		for _, p := range prefixes {
			if imp == p || strings.HasPrefix(imp, p+"/") {
				out = append(out, imp)
				break
			}
		}
	}
	return out
}

// TestImportGraph holds the package boundaries of README.md's package
// table. Each allowed set is what that table says; widening one is a design
// decision, to be made here on purpose.
func TestImportGraph(t *testing.T) {
	store := module + "/pkg/store"
	sdk := "github.com/grafana/grafana-plugin-sdk-go"
	cmd := module + "/pkg/cmd"
	spanmetrics, servicegraph := module+"/pkg/spanmetrics", module+"/pkg/servicegraph"

	// The storage layer: the engine owns the tenants' stores, and the
	// CLI's offline `repair` works on a store's directory with no engine
	// running. Readers go through query.Source, tenant ids through
	// pkg/tenant.
	storeUsers := []string{"pkg/engine", "pkg/cmd/spangraph"}
	// Tests may open a real TSDB to have data to read or ship.
	storeTestUsers := []string{"pkg/api", "pkg/engine", "pkg/query", "pkg/remotewrite", "pkg/store"}
	// The Grafana plugin SDK: the plugin and its main (package pkg).
	sdkUsers := []string{"pkg", "pkg/plugin"}

	for _, p := range listPackages(t) {
		name := rel(p.ImportPath)
		tests := slices.Concat(p.TestImports, p.XTestImports)
		all := slices.Concat(p.Imports, tests)

		if importsAny(p.Imports, store) != nil && !slices.Contains(storeUsers, name) {
			t.Errorf("%s imports pkg/store; only %v may (the others read through query.Source and pkg/tenant)", name, storeUsers)
		}
		if importsAny(tests, store) != nil && !slices.Contains(storeTestUsers, name) && !slices.Contains(storeUsers, name) {
			t.Errorf("%s's tests import pkg/store; only the tests of %v may", name, storeTestUsers)
		}
		if name == "pkg/spanmetrics" && importsAny(all, servicegraph) != nil ||
			name == "pkg/servicegraph" && importsAny(all, spanmetrics) != nil {
			t.Errorf("%s imports the other processor; what both need belongs in pkg/processor", name)
		}
		if got := importsAny(all, sdk); got != nil && !slices.Contains(sdkUsers, name) {
			t.Errorf("%s imports the Grafana SDK (%v); only %v may, everything under the plugin knows nothing of Grafana", name, got, sdkUsers)
		}
		if got := importsAny(all, cmd); got != nil && !strings.HasPrefix(name, "pkg/cmd/") {
			t.Errorf("%s imports %v; nothing imports the CLI", name, got)
		}
	}
}
