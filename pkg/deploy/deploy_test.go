package deploy

import (
	"encoding/json"
	"fmt"
	"go/ast"
	goparser "go/parser"
	"go/token"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
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
	cliPath         = "pkg/cmd/spangraph/main.go"
	datasourcesPath = "provisioning/datasources/datasources.yaml"
	dashProvPath    = "provisioning/dashboards/dashboards.yaml"
	dashboardsDir   = "provisioning/dashboards"
	promConfigPath  = "provisioning/prometheus/prometheus.yml"
)

// The metric contract: the series Spangraph writes, with Tempo's names, and
// their labels. Dashboards may use nothing else.
var (
	knownMetrics = setOf(
		"traces_spanmetrics_calls_total",
		"traces_spanmetrics_latency_bucket", "traces_spanmetrics_latency_sum", "traces_spanmetrics_latency_count",
		"traces_service_graph_request_total", "traces_service_graph_request_failed_total",
		"traces_service_graph_request_server_seconds_bucket", "traces_service_graph_request_server_seconds_sum",
		"traces_service_graph_request_server_seconds_count",
		"traces_service_graph_request_client_seconds_bucket", "traces_service_graph_request_client_seconds_sum",
		"traces_service_graph_request_client_seconds_count",
	)
	knownLabels = setOf("__name__", "service", "span_name", "span_kind", "status_code", "le",
		"client", "server", "connection_type")
	queryTypes      = setOf("promql", "serviceGraph", "redTable")
	formats         = setOf("time_series", "table", "heatmap")
	connectionTypes = setOf("", "database", "messaging_system", "virtual_node")
	// Grafana's own variables, with a value the PromQL parser accepts.
	builtinVars = map[string]string{
		"__rate_interval": "1m", "__interval": "1m", "__range": "1m",
		"__interval_ms": "60000", "__range_s": "60", "__range_ms": "60000",
	}
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
	for _, p := range []string{composePath, dockerfilePath, dockerignore, pluginJSONPath, cliPath,
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

// ---------------------------------------------------------------------------
// plugin.json

type pluginInfo struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Executable string `json:"executable"`
	Backend    bool   `json:"backend"`
}

func parsePlugin(f repoFiles, p *problems) pluginInfo {
	var pi pluginInfo
	if err := json.Unmarshal([]byte(f[pluginJSONPath]), &pi); err != nil {
		p.add("%s: %v", pluginJSONPath, err)
	}
	if pi.ID == "" || pi.Executable == "" || !pi.Backend {
		p.add("%s: want a backend plugin with id and executable, got %+v", pluginJSONPath, pi)
	}
	return pi
}

func pluginDir(pi pluginInfo) string { return "/var/lib/grafana/plugins/" + pi.ID }

// ---------------------------------------------------------------------------
// Dockerfile

type instruction struct {
	cmd     string // upper case
	args    string
	heredoc []string
}

type stage struct {
	base, name string
	instrs     []instruction
}

var heredocStart = regexp.MustCompile(`<<-?["']?([A-Za-z_][A-Za-z0-9_]*)["']?`)

// parseDockerfile splits a Dockerfile into stages of instructions, joining
// continuation lines and collecting heredoc bodies.
func parseDockerfile(text string) []stage {
	var stages []stage
	var cur *instruction
	var pending string // a continued line
	var heredocEnd string
	flush := func(line string) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			return
		}
		in := instruction{cmd: strings.ToUpper(fields[0]), args: strings.TrimSpace(line[len(fields[0]):])}
		if in.cmd == "FROM" {
			var f []string
			for _, a := range strings.Fields(in.args) {
				if !strings.HasPrefix(a, "--") {
					f = append(f, a)
				}
			}
			s := stage{}
			if len(f) > 0 {
				s.base = f[0]
			}
			if len(f) >= 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
		}
		if len(stages) == 0 { // ARG before the first FROM
			stages = append(stages, stage{name: "<global>"})
		}
		st := &stages[len(stages)-1]
		st.instrs = append(st.instrs, in)
		cur = &st.instrs[len(st.instrs)-1]
		if m := heredocStart.FindStringSubmatch(in.args); m != nil && in.cmd != "FROM" {
			heredocEnd = m[1]
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if heredocEnd != "" {
			if strings.TrimSpace(line) == heredocEnd {
				heredocEnd = ""
				continue
			}
			cur.heredoc = append(cur.heredoc, line)
			continue
		}
		trimmed := strings.TrimSpace(line)
		if pending == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") { // a comment inside a continued instruction
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			pending += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		flush(pending + trimmed)
		pending = ""
	}
	if pending != "" {
		flush(pending)
	}
	return stages
}

func stageNamed(stages []stage, name string) *stage {
	for i := range stages {
		if stages[i].name == name {
			return &stages[i]
		}
	}
	return nil
}

// copyArgs splits a COPY/ADD instruction into its --flags, sources and destination.
func copyArgs(in instruction) (flags map[string]string, srcs []string, dst string) {
	flags = map[string]string{}
	var rest []string
	if strings.HasPrefix(in.args, "[") {
		_ = json.Unmarshal([]byte(in.args), &rest)
	} else {
		for _, a := range strings.Fields(in.args) {
			if strings.HasPrefix(a, "--") {
				k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				flags[k] = v
				continue
			}
			rest = append(rest, a)
		}
	}
	if len(rest) == 0 {
		return flags, nil, ""
	}
	return flags, rest[:len(rest)-1], rest[len(rest)-1]
}

// envOf returns the ENV settings of a stage (both ENV forms).
func envOf(s *stage) map[string]string {
	env := map[string]string{}
	for _, in := range s.instrs {
		if in.cmd != "ENV" {
			continue
		}
		if k, v, ok := strings.Cut(strings.Fields(in.args)[0], "="); ok {
			env[k] = strings.Trim(v, `"`)
			for _, kv := range strings.Fields(in.args)[1:] {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = strings.Trim(v, `"`)
			}
		} else {
			f := strings.Fields(in.args)
			env[f[0]] = strings.TrimSpace(strings.TrimPrefix(in.args, f[0]))
		}
	}
	return env
}

// iniSections parses the heredoc-written .ini files of a stage.
func iniSections(s *stage) map[string]map[string]string {
	sections := map[string]map[string]string{}
	for _, in := range s.instrs {
		_, _, dst := copyArgs(in)
		if in.cmd != "COPY" || len(in.heredoc) == 0 || !strings.HasSuffix(dst, ".ini") {
			continue
		}
		sec := ""
		for _, line := range in.heredoc {
			line = strings.TrimSpace(line)
			switch {
			case line == "" || strings.HasPrefix(line, ";") || strings.HasPrefix(line, "#"):
			case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
				sec = strings.Trim(line, "[]")
				if sections[sec] == nil {
					sections[sec] = map[string]string{}
				}
			default:
				k, v, ok := strings.Cut(line, "=")
				if ok && sec != "" {
					sections[sec][strings.TrimSpace(k)] = strings.TrimSpace(v)
				}
			}
		}
	}
	return sections
}

var goBuildOut = regexp.MustCompile(`go build\b[^&;]*?-o\s+(\S+)\s+(\./\S+)`)

type dockerfile struct {
	stages []stage
	// grafanaIni is the [plugin.<id>] section written into the grafana
	// stage's grafana.ini.
	grafanaIni map[string]string
	// dataPath is GF_PATHS_DATA of the grafana stage.
	dataPath string
}

func checkDockerfile(f repoFiles, pi pluginInfo, p *problems) dockerfile {
	d := dockerfile{stages: parseDockerfile(f[dockerfilePath])}
	names := map[string]bool{}
	for _, s := range d.stages {
		if s.name != "" && s.name != "<global>" {
			if names[s.name] {
				p.add("Dockerfile: two stages named %q", s.name)
			}
			names[s.name] = true
		}
	}

	// The binaries: which package each `go build -o` turns into which file.
	outs := map[string]string{} // package → output path
	stageOf := map[string]string{}
	for _, s := range d.stages {
		for _, in := range s.instrs {
			if in.cmd != "RUN" {
				continue
			}
			for _, m := range goBuildOut.FindAllStringSubmatch(in.args, -1) {
				outs[m[2]] = m[1]
				stageOf[m[1]] = s.name
				if !strings.Contains(in.args, "CGO_ENABLED=0") {
					p.add("Dockerfile: %s is not built with CGO_ENABLED=0 (the images have no libc to link)", m[2])
				}
			}
		}
	}
	pluginBin, cliBin := outs["./pkg"], outs["./pkg/cmd/spangraph"]
	if pluginBin == "" || cliBin == "" {
		p.add("Dockerfile: want `go build -o … ./pkg` and `go build -o … ./pkg/cmd/spangraph`, found %v", outs)
	}
	if pluginBin != "" && !strings.HasPrefix(path.Base(pluginBin), pi.Executable+"_") {
		p.add("Dockerfile: the plugin binary %s must be named %s_<os>_<arch> (plugin.json executable)", pluginBin, pi.Executable)
	}

	// grafana: the plugin, dist and binary, in Grafana's plugin directory.
	g := stageNamed(d.stages, "grafana")
	if g == nil {
		p.add("Dockerfile: no stage `FROM … AS grafana`")
	} else {
		if base := resolveArg(d.stages, g.base); !regexp.MustCompile(`^grafana/grafana(-oss)?:12\.\d+\.\d+$`).MatchString(base) {
			p.add("Dockerfile: stage grafana is FROM %q, want grafana/grafana(-oss) with a pinned 12.x.y tag", base)
		}
		var gotBin, gotDist bool
		for _, in := range g.instrs {
			if in.cmd != "COPY" {
				continue
			}
			flags, srcs, dst := copyArgs(in)
			if strings.TrimSuffix(dst, "/") != pluginDir(pi) || flags["from"] == "" {
				continue
			}
			from := stageNamed(d.stages, flags["from"])
			for _, src := range srcs {
				if src == pluginBin && stageOf[src] == flags["from"] {
					gotBin = true
				}
				if strings.TrimSuffix(path.Base(src), "/") == "dist" && from != nil && runs(from, "npm run build") {
					gotDist = true
				}
			}
		}
		if !gotBin {
			p.add("Dockerfile: stage grafana does not copy the plugin binary %s into %s/", pluginBin, pluginDir(pi))
		}
		if !gotDist {
			p.add("Dockerfile: stage grafana does not copy dist/ of an `npm run build` stage into %s/", pluginDir(pi))
		}
		d.grafanaIni = iniSections(g)["plugin."+pi.ID]
		if d.grafanaIni == nil {
			p.add("Dockerfile: stage grafana writes no [plugin.%s] section into grafana.ini", pi.ID)
		}
		d.dataPath = envOf(g)["GF_PATHS_DATA"]
		if d.dataPath == "" {
			d.dataPath = "/var/lib/grafana" // the Grafana image's default
		}
	}

	// spangraph: the CLI as entrypoint.
	s := stageNamed(d.stages, "spangraph")
	if s == nil {
		p.add("Dockerfile: no stage `FROM … AS spangraph`")
	} else {
		installed := ""
		for _, in := range s.instrs {
			if flags, srcs, dst := copyArgs(in); in.cmd == "COPY" && slices.Contains(srcs, cliBin) && flags["from"] == stageOf[cliBin] {
				installed = dst
				if strings.HasSuffix(dst, "/") {
					installed = dst + path.Base(cliBin)
				}
			}
		}
		var entry []string
		for _, in := range s.instrs {
			if in.cmd == "ENTRYPOINT" {
				if err := json.Unmarshal([]byte(in.args), &entry); err != nil {
					p.add("Dockerfile: stage spangraph: ENTRYPOINT must be exec (JSON) form: %v", err)
				}
			}
		}
		if installed == "" || len(entry) == 0 || entry[0] != installed {
			p.add("Dockerfile: stage spangraph must copy %s and run it as ENTRYPOINT (copied to %q, entrypoint %q)", cliBin, installed, entry)
		}
	}

	// .dockerignore keeps the bulky and generated trees out and the sources in.
	ignore := dockerignorePatterns(f[dockerignore])
	for _, want := range []string{"node_modules", "dist", "data"} {
		if !ignored(ignore, want) {
			p.add(".dockerignore: %s is not excluded from the build context", want)
		}
	}
	for _, st := range d.stages {
		for _, in := range st.instrs {
			flags, srcs, _ := copyArgs(in)
			if in.cmd != "COPY" || flags["from"] != "" || len(in.heredoc) > 0 {
				continue
			}
			for _, src := range srcs {
				clean := path.Clean(src)
				if !exists(clean) {
					p.add("Dockerfile: COPY %s: no such file in the repository", src)
				}
				if ignored(ignore, clean) {
					p.add("Dockerfile: COPY %s, but .dockerignore excludes it", src)
				}
			}
		}
	}
	return d
}

func runs(s *stage, cmd string) bool {
	for _, in := range s.instrs {
		if in.cmd == "RUN" && strings.Contains(in.args, cmd) {
			return true
		}
	}
	return false
}

// resolveArg expands ${NAME} and $NAME of a FROM line from the global ARGs.
func resolveArg(stages []stage, s string) string {
	args := map[string]string{}
	if len(stages) > 0 && stages[0].name == "<global>" {
		for _, in := range stages[0].instrs {
			if in.cmd == "ARG" {
				k, v, _ := strings.Cut(in.args, "=")
				args[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
			}
		}
	}
	return os.Expand(s, func(k string) string { return args[k] })
}

func dockerignorePatterns(text string) []string {
	var pats []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "!") {
			continue
		}
		pats = append(pats, strings.Trim(path.Clean(line), "/"))
	}
	return pats
}

// ignored reports whether .dockerignore patterns exclude rel or a parent of it.
func ignored(pats []string, rel string) bool {
	parts := strings.Split(rel, "/")
	for i := 1; i <= len(parts); i++ {
		prefix := strings.Join(parts[:i], "/")
		for _, pat := range pats {
			if ok, _ := path.Match(pat, prefix); ok {
				return true
			}
			if rest, ok := strings.CutPrefix(pat, "**/"); ok {
				for j := 0; j < i; j++ {
					if ok, _ := path.Match(rest, strings.Join(parts[j:i], "/")); ok {
						return true
					}
				}
			}
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// docker-compose.yaml

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string       `yaml:"image"`
	Build       *buildSpec   `yaml:"build"`
	Command     stringList   `yaml:"command"`
	Environment envMap       `yaml:"environment"`
	Ports       []portSpec   `yaml:"ports"`
	Volumes     []volumeSpec `yaml:"volumes"`
	DependsOn   dependsOn    `yaml:"depends_on"`
	Restart     string       `yaml:"restart"`
}

type buildSpec struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
	Target     string `yaml:"target"`
}

func (b *buildSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.Context = n.Value
		return nil
	}
	type plain buildSpec
	return n.Decode((*plain)(b))
}

// stringList is a command: a list, or a string (split on blanks).
type stringList []string

func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = strings.Fields(n.Value)
		return nil
	}
	var l []string
	err := n.Decode(&l)
	*s = l
	return err
}

// envMap is environment: a mapping, or a list of NAME=value.
type envMap map[string]string

func (e *envMap) UnmarshalYAML(n *yaml.Node) error {
	*e = envMap{}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			v := n.Content[i+1]
			if v.Tag == "!!null" {
				(*e)[n.Content[i].Value] = ""
				continue
			}
			(*e)[n.Content[i].Value] = v.Value
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			k, v, _ := strings.Cut(c.Value, "=")
			(*e)[k] = v
		}
	default:
		return fmt.Errorf("line %d: environment must be a mapping or a list", n.Line)
	}
	return nil
}

type portSpec struct{ published, target string }

func (p *portSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch n.Content[i].Value {
			case "target":
				p.target = n.Content[i+1].Value
			case "published":
				p.published = n.Content[i+1].Value
			}
		}
		return nil
	}
	s, _, _ := strings.Cut(n.Value, "/") // drop /tcp
	parts := strings.Split(s, ":")
	p.target = parts[len(parts)-1]
	if len(parts) >= 2 {
		p.published = parts[len(parts)-2]
	}
	return nil
}

type volumeSpec struct {
	source, target string
	readOnly       bool
}

func (v *volumeSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		var m struct {
			Source   string `yaml:"source"`
			Target   string `yaml:"target"`
			ReadOnly bool   `yaml:"read_only"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		*v = volumeSpec{m.Source, m.Target, m.ReadOnly}
		return nil
	}
	parts := strings.Split(n.Value, ":")
	switch len(parts) {
	case 1:
		v.target = parts[0]
	default:
		v.source, v.target = parts[0], parts[1]
		if len(parts) > 2 {
			v.readOnly = slices.Contains(strings.Split(parts[2], ","), "ro")
		}
	}
	return nil
}

func (v volumeSpec) bind() bool {
	return strings.HasPrefix(v.source, ".") || strings.HasPrefix(v.source, "/") || strings.HasPrefix(v.source, "~")
}

type dependsOn []string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		var l []string
		err := n.Decode(&l)
		*d = l
		return err
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			*d = append(*d, n.Content[i].Value)
		}
		return nil
	}
	return fmt.Errorf("line %d: depends_on must be a list or a mapping", n.Line)
}

// hostPath maps a container path to the repository path a bind mount puts
// there, by the longest mount target that contains it.
func hostPath(vols []volumeSpec, container string) (rel string, mount volumeSpec, ok bool) {
	best := -1
	for _, v := range vols {
		if !v.bind() {
			continue
		}
		t := strings.TrimSuffix(v.target, "/")
		if (container == t || strings.HasPrefix(container, t+"/")) && len(t) > best {
			best, mount = len(t), v
			rel = path.Clean(path.Join(v.source, strings.TrimPrefix(container, t)))
		}
	}
	return rel, mount, best >= 0
}

// cliFlags returns the flags, by name, and their Var function ("String",
// "Duration", …) of the flag set that the CLI creates as
// flag.NewFlagSet(command, …), read from the source.
func cliFlags(src, command string) (map[string]string, error) {
	file, err := goparser.ParseFile(token.NewFileSet(), cliPath, src, 0)
	if err != nil {
		return nil, err
	}
	flags := map[string]string{}
	for _, decl := range file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		// The variable holding flag.NewFlagSet("<command>", …) in this function.
		var fsVar string
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			as, ok := n.(*ast.AssignStmt)
			if !ok || len(as.Lhs) != 1 || len(as.Rhs) != 1 {
				return true
			}
			call, ok := as.Rhs[0].(*ast.CallExpr)
			if !ok || !isSel(call.Fun, "flag", "NewFlagSet") || len(call.Args) == 0 {
				return true
			}
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Value == strconv.Quote(command) {
				if id, ok := as.Lhs[0].(*ast.Ident); ok {
					fsVar = id.Name
				}
			}
			return true
		})
		if fsVar == "" {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); !ok || id.Name != fsVar {
				return true
			}
			kind, isVar := strings.CutSuffix(sel.Sel.Name, "Var")
			i := 0
			if isVar {
				i = 1
			}
			if len(call.Args) <= i {
				return true
			}
			if lit, ok := call.Args[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				name, _ := strconv.Unquote(lit.Value)
				flags[name] = kind
			}
			return true
		})
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("no flag.NewFlagSet(%q, …) with flags found", command)
	}
	return flags, nil
}

func isSel(e ast.Expr, pkg, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == pkg && sel.Sel.Name == name
}

// checkFlagValue checks a command-line value against the flag's type.
func checkFlagValue(kind, value string) error {
	var err error
	switch kind {
	case "Duration":
		_, err = time.ParseDuration(value)
	case "Float64":
		_, err = strconv.ParseFloat(value, 64)
	case "Int", "Int64":
		_, err = strconv.ParseInt(value, 10, 64)
	case "Uint", "Uint64":
		_, err = strconv.ParseUint(value, 10, 64)
	case "Bool":
		_, err = strconv.ParseBool(value)
	}
	return err
}

// parseArgs splits Go-flag-style arguments into name → value; a flag with
// no value (a bool) gets "true".
func parseArgs(args []string, kinds map[string]string) (map[string]string, []string, error) {
	vals := map[string]string{}
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			positional = append(positional, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		kind, ok := kinds[name]
		if !ok {
			return nil, nil, fmt.Errorf("flag --%s is not defined", name)
		}
		if !hasValue {
			if kind == "Bool" {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				return nil, nil, fmt.Errorf("flag --%s has no value", name)
			}
		}
		vals[name] = value
	}
	return vals, positional, nil
}

func checkCompose(f repoFiles, pi pluginInfo, d dockerfile, p *problems) composeFile {
	var c composeFile
	if err := yaml.Unmarshal([]byte(f[composePath]), &c); err != nil {
		p.add("%s: %v", composePath, err)
		return c
	}
	for _, name := range []string{"grafana", "prometheus", "loadgen"} {
		if _, ok := c.Services[name]; !ok {
			p.add("compose: no service %q", name)
		}
	}

	for name, s := range c.Services {
		if s.Build == nil && s.Image == "" {
			p.add("compose: service %s has neither build nor image", name)
		}
		if s.Image != "" && s.Build == nil && (!strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest")) {
			p.add("compose: service %s: pin a tag for image %q", name, s.Image)
		}
		if b := s.Build; b != nil {
			df := b.Dockerfile
			if df == "" {
				df = "Dockerfile"
			}
			rel := path.Join(b.Context, df)
			if !exists(b.Context) {
				p.add("compose: service %s: build context %q does not exist", name, b.Context)
			}
			if rel != dockerfilePath {
				p.add("compose: service %s builds %s, not %s", name, rel, dockerfilePath)
			} else if b.Target == "" || stageNamed(d.stages, b.Target) == nil {
				p.add("compose: service %s: build target %q is not a stage of the Dockerfile", name, b.Target)
			}
		}
		for _, v := range s.Volumes {
			switch {
			case v.source == "":
			case v.bind():
				if !exists(v.source) {
					p.add("compose: service %s mounts %s, which does not exist", name, v.source)
				}
			default:
				if _, ok := c.Volumes[v.source]; !ok {
					p.add("compose: service %s uses volume %q, not declared under top-level volumes", name, v.source)
				}
			}
		}
		for _, dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				p.add("compose: service %s depends on %q, which is no service", name, dep)
			}
		}
	}

	g, ok := c.Services["grafana"]
	if ok {
		checkGrafanaService(c, g, pi, d, p)
	}
	if prom, ok := c.Services["prometheus"]; ok {
		if !slices.Contains(prom.Command, "--web.enable-remote-write-receiver") {
			p.add("compose: prometheus runs without --web.enable-remote-write-receiver: remote write from Spangraph would be refused")
		}
		if !publishes(prom, "9090") {
			p.add("compose: prometheus does not publish port 9090")
		}
		configFile := "/etc/prometheus/prometheus.yml"
		for _, a := range prom.Command {
			if v, ok := strings.CutPrefix(a, "--config.file="); ok {
				configFile = v
			}
		}
		if rel, _, ok := hostPath(prom.Volumes, configFile); !ok || rel != promConfigPath {
			p.add("compose: prometheus reads %s, which should be %s mounted from the repository (got %q)", configFile, promConfigPath, rel)
		}
	}
	if lg, ok := c.Services["loadgen"]; ok {
		checkLoadgen(f, c, lg, g, p)
	}
	return c
}

func publishes(s composeService, port string) bool {
	for _, p := range s.Ports {
		if p.target == port && p.published == port {
			return true
		}
	}
	return false
}

func checkGrafanaService(c composeFile, g composeService, pi pluginInfo, d dockerfile, p *problems) {
	if g.Build == nil || g.Build.Target != "grafana" {
		p.add("compose: service grafana must build the Dockerfile's grafana target")
	}
	env := g.Environment
	if !slices.Contains(strings.Split(env["GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS"], ","), pi.ID) {
		p.add("compose: grafana: GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS=%q does not allow %s", env["GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS"], pi.ID)
	}
	if env["GF_AUTH_ANONYMOUS_ENABLED"] != "true" {
		p.add("compose: grafana: the demo wants GF_AUTH_ANONYMOUS_ENABLED=true")
	}
	if !publishes(g, "3000") {
		p.add("compose: grafana does not publish port 3000")
	}
	// Every GF_PLUGIN_* setting must be a key of [plugin.<id>] in the
	// image's grafana.ini: Grafana (12.4+) passes only those to the plugin.
	for k := range env {
		key, ok := strings.CutPrefix(k, "GF_PLUGIN_")
		if !ok {
			continue
		}
		if _, ok := d.grafanaIni[strings.ToLower(key)]; !ok {
			p.add("compose: grafana sets %s, but the Dockerfile's [plugin.%s] has no key %s: Grafana would not pass it to the plugin",
				k, pi.ID, strings.ToLower(key))
		}
	}
	for _, key := range []string{"OTLP_GRPC", "OTLP_HTTP"} {
		addr := env["GF_PLUGIN_"+key]
		if addr == "" {
			addr = d.grafanaIni[strings.ToLower(key)]
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			p.add("compose: grafana: %s listen address %q: %v", key, addr, err)
			continue
		}
		if !publishes(g, port) {
			p.add("compose: grafana: the plugin receives %s on port %s, which is not published", key, port)
		}
	}
	for key, port := range map[string]string{"OTLP_GRPC": "4317", "OTLP_HTTP": "4318"} {
		if _, got, _ := net.SplitHostPort(env["GF_PLUGIN_"+key]); got != port {
			p.add("compose: grafana: GF_PLUGIN_%s=%q, want port %s", key, env["GF_PLUGIN_"+key], port)
		}
	}
	if iv, err := time.ParseDuration(env["GF_PLUGIN_COLLECTION_INTERVAL"]); err != nil || iv < time.Second {
		p.add("compose: grafana: GF_PLUGIN_COLLECTION_INTERVAL=%q is not a duration of 1s or more", env["GF_PLUGIN_COLLECTION_INTERVAL"])
	}
	if rw := env["GF_PLUGIN_REMOTE_WRITE_URL"]; rw != "" {
		u, err := url.Parse(rw)
		if err != nil || u.Scheme != "http" || u.Path != "/api/v1/write" {
			p.add("compose: grafana: GF_PLUGIN_REMOTE_WRITE_URL=%q is not http://<service>:<port>/api/v1/write", rw)
		} else if target, ok := c.Services[u.Hostname()]; !ok {
			p.add("compose: grafana: remote write goes to %q, which is no service", u.Hostname())
		} else if !slices.Contains(target.Command, "--web.enable-remote-write-receiver") {
			p.add("compose: grafana: remote write goes to %s, which does not run --web.enable-remote-write-receiver", u.Hostname())
		}
	}

	// Mounts: provisioning read-only; Grafana's state on a named volume
	// that does not shadow the plugin baked into the image.
	for _, want := range []struct{ container, repo string }{
		{"/etc/grafana/provisioning/datasources/datasources.yaml", datasourcesPath},
		{"/etc/grafana/provisioning/dashboards/dashboards.yaml", dashProvPath},
	} {
		rel, m, ok := hostPath(g.Volumes, want.container)
		if !ok || rel != want.repo {
			p.add("compose: grafana: %s should be %s, got %q", want.container, want.repo, rel)
		} else if !m.readOnly {
			p.add("compose: grafana: mount %s:%s should be read-only", m.source, m.target)
		}
	}
	var state bool
	for _, v := range g.Volumes {
		t := strings.TrimSuffix(v.target, "/")
		if pluginDir(pi) == t || strings.HasPrefix(pluginDir(pi), t+"/") {
			p.add("compose: grafana: volume %s:%s hides the plugin that the image installs in %s (a rebuilt image would keep running the old plugin)",
				v.source, v.target, pluginDir(pi))
		}
		if !v.bind() && v.source != "" && t == d.dataPath {
			state = true
		}
	}
	if !state {
		p.add("compose: grafana: no named volume on Grafana's data path %s (GF_PATHS_DATA)", d.dataPath)
	}
}

func checkLoadgen(f repoFiles, c composeFile, lg, g composeService, p *problems) {
	if lg.Build == nil || lg.Build.Target != "spangraph" {
		p.add("compose: service loadgen must build the Dockerfile's spangraph target")
	}
	if !slices.Contains(lg.DependsOn, "grafana") {
		p.add("compose: loadgen does not depend on grafana")
	}
	if lg.Restart != "on-failure" && lg.Restart != "always" && lg.Restart != "unless-stopped" {
		p.add("compose: loadgen restart is %q: it must come back when it starts before the receiver", lg.Restart)
	}
	if len(lg.Command) == 0 || lg.Command[0] != "loadgen" {
		p.add("compose: loadgen command %q does not start with the loadgen subcommand", lg.Command)
		return
	}
	kinds, err := cliFlags(f[cliPath], "loadgen")
	if err != nil {
		p.add("%s: %v", cliPath, err)
		return
	}
	vals, positional, err := parseArgs(lg.Command[1:], kinds)
	if err != nil {
		p.add("compose: loadgen: %v (%s defines %v)", err, cliPath, slices.Sorted(maps.Keys(kinds)))
		return
	}
	if len(positional) > 0 {
		p.add("compose: loadgen: stray arguments %q", positional)
	}
	for name, v := range vals {
		if err := checkFlagValue(kinds[name], v); err != nil {
			p.add("compose: loadgen: --%s %q is not a valid %s: %v", name, v, kinds[name], err)
		}
	}
	u, err := url.Parse(vals["endpoint"])
	if err != nil || u.Host == "" {
		p.add("compose: loadgen: --endpoint %q is not a URL", vals["endpoint"])
		return
	}
	if _, ok := c.Services[u.Hostname()]; !ok || u.Hostname() != "grafana" {
		p.add("compose: loadgen sends to %q, want the grafana service (the plugin process receives OTLP)", u.Hostname())
	}
	if _, port, _ := net.SplitHostPort(g.Environment["GF_PLUGIN_OTLP_HTTP"]); u.Port() != port {
		p.add("compose: loadgen sends to port %q, the plugin's OTLP/HTTP listens on %q", u.Port(), port)
	}
}

// ---------------------------------------------------------------------------
// provisioning/datasources

type datasource struct {
	Name      string         `yaml:"name"`
	UID       string         `yaml:"uid"`
	Type      string         `yaml:"type"`
	URL       string         `yaml:"url"`
	IsDefault bool           `yaml:"isDefault"`
	JSONData  map[string]any `yaml:"jsonData"`
}

func checkDatasources(f repoFiles, pi pluginInfo, c composeFile, p *problems) map[string]datasource {
	var file struct {
		APIVersion  int          `yaml:"apiVersion"`
		Datasources []datasource `yaml:"datasources"`
	}
	dec := yaml.NewDecoder(strings.NewReader(f[datasourcesPath]))
	if err := dec.Decode(&file); err != nil {
		p.add("%s: %v", datasourcesPath, err)
		return nil
	}
	if file.APIVersion != 1 {
		p.add("datasources: apiVersion %d, want 1", file.APIVersion)
	}
	byUID := map[string]datasource{}
	names := map[string]bool{}
	defaults := 0
	for _, ds := range file.Datasources {
		if ds.UID == "" || ds.Name == "" || ds.Type == "" {
			p.add("datasources: %+v lacks a name, uid or type", ds)
		}
		if _, dup := byUID[ds.UID]; dup {
			p.add("datasources: uid %q is used twice", ds.UID)
		}
		if names[ds.Name] {
			p.add("datasources: name %q is used twice", ds.Name)
		}
		byUID[ds.UID], names[ds.Name] = ds, true
		if ds.IsDefault {
			defaults++
		}
		if ds.URL != "" {
			u, err := url.Parse(ds.URL)
			if err != nil {
				p.add("datasources: %s: url %q: %v", ds.UID, ds.URL, err)
			} else if _, ok := c.Services[u.Hostname()]; !ok && ds.Type != "tempo" {
				p.add("datasources: %s points at %q, which is no compose service", ds.UID, u.Hostname())
			}
		}
	}
	for _, ds := range file.Datasources {
		if v, _ := ds.JSONData["tracesDatasourceUid"].(string); v != "" {
			if _, ok := byUID[v]; !ok {
				p.add("datasources: %s: tracesDatasourceUid %q is no datasource", ds.UID, v)
			}
		}
	}
	if defaults != 1 {
		p.add("datasources: %d default datasources, want 1", defaults)
	}
	sg, ok := byUID["spangraph"]
	if !ok || sg.Type != pi.ID {
		p.add("datasources: no datasource uid spangraph of type %s", pi.ID)
	} else {
		if !sg.IsDefault {
			p.add("datasources: spangraph should be the default datasource")
		}
		if qt, _ := sg.JSONData["defaultQueryType"].(string); !queryTypes[qt] {
			p.add("datasources: spangraph: defaultQueryType %q is not one of %v", qt, slices.Sorted(maps.Keys(queryTypes)))
		}
		if tenant, _ := sg.JSONData["tenant"].(string); tenant == "" {
			p.add("datasources: spangraph: jsonData.tenant is empty")
		}
	}
	if prom, ok := byUID["prometheus"]; !ok || prom.Type != "prometheus" {
		p.add("datasources: no Prometheus datasource uid prometheus")
	} else if u, err := url.Parse(prom.URL); err != nil || u.Hostname() != "prometheus" {
		p.add("datasources: prometheus url %q is not the compose prometheus service", prom.URL)
	}
	tempo, ok := byUID["tempo"]
	if !ok || tempo.Type != "tempo" {
		p.add("datasources: no Tempo datasource uid tempo")
	} else {
		sm, _ := tempo.JSONData["serviceMap"].(map[string]any)
		target, _ := sm["datasourceUid"].(string)
		if ds, ok := byUID[target]; !ok {
			p.add("datasources: tempo serviceMap.datasourceUid %q is no datasource", target)
		} else if ds.Type != pi.ID {
			p.add("datasources: tempo serviceMap.datasourceUid %q is a %s, not Spangraph", target, ds.Type)
		}
	}
	return byUID
}

// ---------------------------------------------------------------------------
// provisioning/dashboards

func checkDashboardProvider(f repoFiles, c composeFile, p *problems) {
	var file struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal([]byte(f[dashProvPath]), &file); err != nil {
		p.add("%s: %v", dashProvPath, err)
		return
	}
	if file.APIVersion != 1 || len(file.Providers) == 0 {
		p.add("dashboards.yaml: want apiVersion 1 and a provider")
	}
	for _, pr := range file.Providers {
		if pr.Type != "file" {
			p.add("dashboards.yaml: provider %s has type %q, want file", pr.Name, pr.Type)
			continue
		}
		rel, _, ok := hostPath(c.Services["grafana"].Volumes, pr.Options.Path)
		if !ok || rel != dashboardsDir {
			p.add("dashboards.yaml: provider %s reads %s, which the grafana service does not mount from %s (got %q)",
				pr.Name, pr.Options.Path, dashboardsDir, rel)
		}
	}
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *dsRef         `json:"datasource"`
	Targets    []target       `json:"targets"`
	Panels     []panel        `json:"panels"`
	GridPos    map[string]int `json:"gridPos"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID           string   `json:"refId"`
	Datasource      *dsRef   `json:"datasource"`
	QueryType       string   `json:"queryType"`
	Expr            string   `json:"expr"`
	Format          string   `json:"format"`
	Filters         string   `json:"filters"`
	GroupBy         string   `json:"groupBy"`
	SpanKinds       []string `json:"spanKinds"`
	ConnectionTypes []string `json:"connectionTypes"`
	Depth           *int     `json:"depth"`
	MaxNodes        *int     `json:"maxNodes"`
	TopN            *int     `json:"topN"`
}

type variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Datasource *dsRef `json:"datasource"`
	Query      any    `json:"query"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

var (
	varRef      = regexp.MustCompile(`\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]`)
	labelValues = regexp.MustCompile(`^label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_]\w*)\s*\)$`)
)

// expand replaces Grafana variables by sample values; an unknown one is an error.
func expand(s string, vars map[string]string) (string, error) {
	var err error
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		sm := varRef.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		if v, ok := builtinVars[name]; ok {
			return v
		}
		if v, ok := vars[name]; ok {
			return v
		}
		err = fmt.Errorf("undefined variable $%s", name)
		return m
	})
	return out, err
}

var promqlParser = parser.NewParser(parser.Options{})

// checkPromQL parses expr and checks that it uses only Spangraph's metrics and labels.
func checkPromQL(expr string) error {
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		return err
	}
	var bad []string
	label := func(l string) {
		if !knownLabels[l] {
			bad = append(bad, "label "+l)
		}
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			if n.Name != "" && !knownMetrics[n.Name] {
				bad = append(bad, "metric "+n.Name)
			}
			for _, m := range n.LabelMatchers {
				label(m.Name)
				if m.Name == "__name__" && !knownMetrics[m.Value] {
					bad = append(bad, "metric "+m.Value)
				}
			}
		case *parser.AggregateExpr:
			for _, l := range n.Grouping {
				label(l)
			}
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				for _, l := range append(slices.Clone(n.VectorMatching.MatchingLabels), n.VectorMatching.Include...) {
					label(l)
				}
			}
		}
		return nil
	})
	if len(bad) > 0 {
		return fmt.Errorf("not in Spangraph's metric contract: %s", strings.Join(bad, ", "))
	}
	return nil
}

func checkDashboards(f repoFiles, pi pluginInfo, datasources map[string]datasource, p *problems) {
	uids, titles := map[string]string{}, map[string]string{}
	for _, name := range f.dashboards() {
		var d dashboard
		dec := json.NewDecoder(strings.NewReader(f[name]))
		if err := dec.Decode(&d); err != nil {
			p.add("%s: invalid JSON: %v", name, err)
			continue
		}
		// A stable uid, so links and bookmarks survive re-provisioning.
		if !regexp.MustCompile(`^[a-zA-Z0-9_-]{1,40}$`).MatchString(d.UID) {
			p.add("%s: uid %q is not a stable uid (1-40 of [a-zA-Z0-9_-])", name, d.UID)
		}
		if other, dup := uids[d.UID]; dup {
			p.add("%s: uid %q is also the uid of %s", name, d.UID, other)
		}
		uids[d.UID] = name
		if d.Title == "" {
			p.add("%s: no title", name)
		} else if other, dup := titles[d.Title]; dup {
			p.add("%s: title %q is also the title of %s", name, d.Title, other)
		}
		titles[d.Title] = name
		if d.SchemaVersion < 39 {
			p.add("%s: schemaVersion %d, want 39 or later", name, d.SchemaVersion)
		}
		checkDashboard(name, d, pi, datasources, p)
	}
}

func checkDashboard(name string, d dashboard, pi pluginInfo, datasources map[string]datasource, p *problems) {
	// Variables: their sample values, and datasource variables by the uid they resolve to.
	vars, dsVars := map[string]string{}, map[string]string{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup || v.Name == "" {
			p.add("%s: variable %q is unnamed or defined twice", name, v.Name)
		}
		vars[v.Name] = "frontend"
		switch v.Type {
		case "datasource":
			cur, _ := v.Current.Value.(string)
			dsVars[v.Name] = cur
			if q, _ := v.Query.(string); q != pi.ID {
				p.add("%s: datasource variable %s lists %q datasources, want %s", name, v.Name, q, pi.ID)
			}
		case "query":
			where := fmt.Sprintf("%s: variable %s", name, v.Name)
			checkDatasourceRef(where, v.Datasource, pi, dsVars, datasources, p)
			q, _ := v.Query.(string)
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			if m := labelValues.FindStringSubmatch(strings.TrimSpace(q)); m != nil {
				if m[1] != "" {
					sel, err := expand(m[1], vars)
					if err == nil {
						err = checkPromQL(sel)
					}
					if err != nil {
						p.add("%s: %s: %v", where, q, err)
					}
				}
				if !knownLabels[m[2]] {
					p.add("%s: %s: label %s is not in Spangraph's metric contract", where, q, m[2])
				}
			} else {
				p.add("%s: query %q is not label_values(…)", where, q)
			}
		}
	}

	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, pn := range panels {
			where := fmt.Sprintf("%s: panel %d %q", name, pn.ID, pn.Title)
			if ids[pn.ID] || pn.ID == 0 {
				p.add("%s: panel id %d is missing or used twice", where, pn.ID)
			}
			ids[pn.ID] = true
			if pn.GridPos["w"] == 0 || pn.GridPos["h"] == 0 {
				p.add("%s: no gridPos", where)
			}
			if pn.Type == "row" {
				walk(pn.Panels)
				continue
			}
			checkDatasourceRef(where, pn.Datasource, pi, dsVars, datasources, p)
			if len(pn.Targets) == 0 {
				p.add("%s: no queries", where)
			}
			refs := map[string]bool{}
			for _, t := range pn.Targets {
				tw := fmt.Sprintf("%s target %s", where, t.RefID)
				if t.RefID == "" || refs[t.RefID] {
					p.add("%s: refId missing or used twice", tw)
				}
				refs[t.RefID] = true
				checkDatasourceRef(tw, t.Datasource, pi, dsVars, datasources, p)
				checkTarget(tw, pn.Type, t, vars, p)
			}
		}
	}
	walk(d.Panels)
}

func checkDatasourceRef(where string, ref *dsRef, pi pluginInfo, dsVars map[string]string, datasources map[string]datasource, p *problems) {
	if ref == nil {
		p.add("%s: no datasource", where)
		return
	}
	uid := ref.UID
	if m := varRef.FindStringSubmatch(uid); m != nil && m[0] == uid {
		resolved, ok := dsVars[m[1]+m[2]+m[3]]
		if !ok {
			p.add("%s: datasource %q is no datasource variable", where, uid)
			return
		}
		uid = resolved
	}
	if uid != "spangraph" {
		p.add("%s: datasource uid %q, want spangraph", where, ref.UID)
		return
	}
	if ref.Type != "" && ref.Type != pi.ID {
		p.add("%s: datasource type %q, want %s", where, ref.Type, pi.ID)
	}
	if ds, ok := datasources[uid]; !ok || ds.Type != pi.ID {
		p.add("%s: datasource uid %s is not provisioned as a %s", where, uid, pi.ID)
	}
}

func checkTarget(where, panelType string, t target, vars map[string]string, p *problems) {
	if !queryTypes[t.QueryType] {
		p.add("%s: queryType %q is not one of promql, serviceGraph, redTable", where, t.QueryType)
		return
	}
	if t.QueryType != "promql" && t.Expr != "" {
		p.add("%s: a %s query with an expr", where, t.QueryType)
	}
	if t.Filters != "" {
		f, err := expand(t.Filters, vars)
		if err == nil {
			_, err = promqlParser.ParseMetricSelector("{" + f + "}")
		}
		if err != nil {
			p.add("%s: filters %q: %v", where, t.Filters, err)
		}
	}
	switch t.QueryType {
	case "promql":
		if strings.TrimSpace(t.Expr) == "" {
			p.add("%s: empty expr", where)
			return
		}
		expr, err := expand(t.Expr, vars)
		if err == nil {
			err = checkPromQL(expr)
		}
		if err != nil {
			p.add("%s: %s: %v", where, t.Expr, err)
		}
		if t.Format != "" && !formats[t.Format] {
			p.add("%s: format %q", where, t.Format)
		}
		if panelType == "heatmap" && t.Format != "heatmap" {
			p.add("%s: a heatmap of buckets needs format heatmap, got %q", where, t.Format)
		}
	case "serviceGraph":
		if panelType != "nodeGraph" {
			p.add("%s: a serviceGraph query in a %s panel, want nodeGraph", where, panelType)
		}
		for _, ct := range t.ConnectionTypes {
			if !connectionTypes[ct] {
				p.add("%s: connection type %q", where, ct)
			}
		}
		if (t.Depth != nil && *t.Depth < 1) || (t.MaxNodes != nil && *t.MaxNodes < 1) {
			p.add("%s: depth and maxNodes must be positive", where)
		}
	case "redTable":
		if t.GroupBy != "" && t.GroupBy != "service" && t.GroupBy != "span_name" {
			p.add("%s: groupBy %q is not service or span_name", where, t.GroupBy)
		}
		for _, k := range t.SpanKinds {
			if !strings.HasPrefix(k, "SPAN_KIND_") {
				p.add("%s: span kind %q", where, k)
			}
		}
		if t.TopN != nil && *t.TopN < 0 {
			p.add("%s: negative topN", where)
		}
	}
}

// ---------------------------------------------------------------------------
// provisioning/prometheus

func checkPrometheusConfig(f repoFiles, c composeFile, p *problems) {
	if _, err := promconfig.Load(f[promConfigPath], slog.New(slog.DiscardHandler)); err != nil {
		p.add("%s: %v", promConfigPath, err)
		return
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(f[promConfigPath]), &cfg); err != nil {
		p.add("%s: %v", promConfigPath, err)
		return
	}
	for _, sc := range cfg.ScrapeConfigs {
		for _, sc2 := range sc.StaticConfigs {
			for _, t := range sc2.Targets {
				host, _, err := net.SplitHostPort(t)
				if _, ok := c.Services[host]; err != nil || (!ok && host != "localhost") {
					p.add("%s: job %s scrapes %q, which is no compose service", promConfigPath, sc.JobName, t)
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------
// The tests.

// checkAll runs every check over f.
func checkAll(f repoFiles) problems {
	var p problems
	pi := parsePlugin(f, &p)
	d := checkDockerfile(f, pi, &p)
	c := checkCompose(f, pi, d, &p)
	ds := checkDatasources(f, pi, c, &p)
	checkDashboardProvider(f, c, &p)
	checkDashboards(f, pi, ds, &p)
	checkPrometheusConfig(f, c, &p)
	return p
}

func TestDockerfile(t *testing.T) {
	f := loadFiles(t)
	var p problems
	d := checkDockerfile(f, parsePlugin(f, &p), &p)
	report(t, p)
	for _, want := range []string{"grafana", "spangraph"} {
		if stageNamed(d.stages, want) == nil {
			t.Errorf("no stage %s", want)
		}
	}
}

func TestCompose(t *testing.T) {
	f := loadFiles(t)
	var p problems
	pi := parsePlugin(f, &p)
	checkCompose(f, pi, checkDockerfile(f, pi, new(problems)), &p)
	report(t, p)
}

func TestDatasources(t *testing.T) {
	f := loadFiles(t)
	var p problems
	pi := parsePlugin(f, &p)
	c := checkCompose(f, pi, checkDockerfile(f, pi, new(problems)), new(problems))
	checkDatasources(f, pi, c, &p)
	report(t, p)
}

func TestDashboards(t *testing.T) {
	f := loadFiles(t)
	var p problems
	pi := parsePlugin(f, &p)
	c := checkCompose(f, pi, checkDockerfile(f, pi, new(problems)), new(problems))
	ds := checkDatasources(f, pi, c, new(problems))
	checkDashboardProvider(f, c, &p)
	checkDashboards(f, pi, ds, &p)
	report(t, p)

	// The two dashboards the README promises, with the panels that make them.
	want := map[string][]string{
		"Service overview": {"timeseries", "heatmap", "table"},
		"Service graph":    {"nodeGraph", "table"},
	}
	for _, name := range f.dashboards() {
		var d dashboard
		if err := json.Unmarshal([]byte(f[name]), &d); err != nil {
			continue
		}
		types := map[string]bool{}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, pn := range ps {
				types[pn.Type] = true
				walk(pn.Panels)
			}
		}
		walk(d.Panels)
		for _, typ := range want[d.Title] {
			if !types[typ] {
				t.Errorf("%s: dashboard %q has no %s panel", name, d.Title, typ)
			}
		}
		delete(want, d.Title)
	}
	for title := range want {
		t.Errorf("no dashboard %q", title)
	}
}

func TestPrometheusConfig(t *testing.T) {
	f := loadFiles(t)
	var p problems
	pi := parsePlugin(f, &p)
	c := checkCompose(f, pi, checkDockerfile(f, pi, new(problems)), new(problems))
	checkPrometheusConfig(f, c, &p)
	report(t, p)
}

// TestChecksCatchBreakage breaks the real files one way at a time and
// expects the checks to say so: a check that cannot fail checks nothing.
func TestChecksCatchBreakage(t *testing.T) {
	base := loadFiles(t)
	if p := checkAll(base); len(p) > 0 {
		t.Fatalf("the files must pass before they can be broken: %q", p)
	}
	firstDash := path.Join(dashboardsDir, "service-overview.json")
	graphDash := path.Join(dashboardsDir, "service-graph.json")
	tests := []struct {
		name, file, old, new, want string
	}{
		{"panel datasource uid", firstDash, `"uid": "spangraph"`, `"uid": "prometheus"`, `want spangraph`},
		{"PromQL syntax", firstDash, `sum by (service) (rate(`, `sum by (service) (rate((`, `unclosed left parenthesis`},
		{"metric name", firstDash, `traces_spanmetrics_latency_bucket{`, `traces_spanmetrics_latency_buckets{`, `metric traces_spanmetrics_latency_buckets`},
		{"label name", firstDash, `sum by (service) (`, `sum by (services) (`, `label services`},
		{"undefined variable", firstDash, `service=~\"$service\"`, `service=~\"$servce\"`, `undefined variable $servce`},
		{"query type", graphDash, `"queryType": "serviceGraph"`, `"queryType": "servicegraph"`, `queryType "servicegraph"`},
		{"redTable filters", firstDash, `service=~\"${service:pipe}\"`, `service=~${service:pipe}`, `filters`},
		{"dashboard uid", graphDash, `"uid": "spangraph-service-graph"`, `"uid": "spangraph-service-overview"`, `is also the uid of`},
		{"dashboard JSON", graphDash, `"panels": [`, `"panels": [,`, `invalid JSON`},
		{"tempo service map", datasourcesPath, "datasourceUid: spangraph", "datasourceUid: spangraf", `serviceMap.datasourceUid "spangraf"`},
		{"datasource uid twice", datasourcesPath, "uid: prometheus", "uid: tempo", `uid "tempo" is used twice`},
		{"compose build target", composePath, "target: spangraph", "target: cli", `build target "cli"`},
		{"Dockerfile stage", dockerfilePath, "AS spangraph", "AS cli", `no stage`},
		{"unsigned plugin", composePath, "GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS: seed-spangraph-datasource", "GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS: other", `does not allow`},
		{"OTLP port", composePath, `- "4317:4317"`, `- "14317:14317"`, `port 4317, which is not published`},
		{"remote-write receiver", composePath, "- --web.enable-remote-write-receiver", "- --web.enable-lifecycle", `remote-write-receiver`},
		{"loadgen flag", composePath, "- --services", "- --service-count", `--service-count is not defined`},
		{"loadgen flag value", composePath, "- 87600h", "- 10y", `not a valid Duration`},
		{"plugin setting not in grafana.ini", composePath, "GF_PLUGIN_COLLECTION_INTERVAL:", "GF_PLUGIN_COLLECT_INTERVAL:", `no key collect_interval`},
		{"volume hides the plugin", composePath, "grafana-data:/var/lib/grafana/data", "grafana-data:/var/lib/grafana", `hides the plugin`},
		{"provisioning path", composePath, "./provisioning/dashboards:", "./provisioning/dashboard:", `does not exist`},
		{"dockerignore", dockerignore, "\ndist\n", "\nsrc\n", `.dockerignore excludes it`},
		{"plugin binary name", dockerfilePath, "/out/gpx_spangraph_", "/out/spangraph_plugin_", `must be named gpx_spangraph`},
		{"prometheus.yml", promConfigPath, `targets: ["grafana:3000"]`, `targets: ["grafna:3000"]`, `no compose service`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := maps.Clone(base)
			if !strings.Contains(f[tc.file], tc.old) {
				t.Fatalf("%s does not contain %q: update this test", tc.file, tc.old)
			}
			f[tc.file] = strings.Replace(f[tc.file], tc.old, tc.new, 1)
			p := checkAll(f)
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("no problem containing %q; got %q", tc.want, p)
			}
		})
	}
}
