package deploy

// The Dockerfile and .dockerignore: the stages, what they build and copy,
// the grafana.ini they write, parsed without a Docker engine.

import (
	"encoding/json"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spangraph/spangraph/pkg/config"
)

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
		// Grafana passes GF_PLUGIN_<KEY> to the plugin only for keys of
		// the section: each key the plugin reads must be there.
		for _, k := range config.EnvKeys() {
			if _, ok := d.grafanaIni[k]; d.grafanaIni != nil && !ok {
				p.add("Dockerfile: grafana.ini's [plugin.%s] has no key %s: GF_PLUGIN_%s would never reach the plugin", pi.ID, k, strings.ToUpper(k))
			}
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
