package deploy

// What every check uses: the files under test, read once into a map that
// TestChecksCatchBreakage can break, and the problems a check reports.

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// The files under test, relative to root. Dashboards are every *.json in
// dashboardsDir.
const (
	composePath     = "docker-compose.yaml"
	dockerfilePath  = "Dockerfile"
	dockerignore    = ".dockerignore"
	pluginJSONPath  = "plugin.json"
	datasourcesPath = "provisioning/datasources/datasources.yaml"
	dashProvPath    = "provisioning/dashboards/dashboards.yaml"
	dashboardsDir   = "provisioning/dashboards"
	promConfigPath  = "provisioning/prometheus/prometheus.yml"
)

func setOf(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, v := range s {
		m[v] = true
	}
	return m
}

// repoFiles is the text of every file under test, by path relative to root.
// The checks read only this map (and the file system for "does this path
// exist"), so that TestChecksCatchBreakage can feed them broken copies.
type repoFiles map[string]string

func loadFiles(t *testing.T) repoFiles {
	t.Helper()
	f := repoFiles{}
	for _, p := range []string{composePath, dockerfilePath, dockerignore, pluginJSONPath,
		datasourcesPath, dashProvPath, promConfigPath} {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		f[p] = string(b)
	}
	dash, err := filepath.Glob(filepath.Join(root, dashboardsDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dash) == 0 {
		t.Fatalf("no dashboards in %s", dashboardsDir)
	}
	for _, p := range dash {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f[path.Join(dashboardsDir, filepath.Base(p))] = string(b)
	}
	return f
}

func (f repoFiles) dashboards() []string {
	var names []string
	for p := range f {
		if path.Dir(p) == dashboardsDir && strings.HasSuffix(p, ".json") {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	return names
}

// problems collects what a check found wrong.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func report(t *testing.T, p problems) {
	t.Helper()
	for _, s := range p {
		t.Error(s)
	}
}

func exists(rel string) bool {
	_, err := os.Stat(filepath.Join(root, filepath.FromSlash(rel)))
	return err == nil
}
