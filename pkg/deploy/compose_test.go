package deploy

// docker-compose.yaml: the services, their builds, ports, volumes and
// environment, against the Dockerfile, plugin.json and the loadgen flags.

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/loadgen"
)

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
	Profiles    []string     `yaml:"profiles"`
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
		checkLoadgen(c, lg, g, p)
	}
	checkRing(c, p)
	return c
}

// checkRing: the "ring" profile's instances parse as `spangraph serve`
// configurations that form one ring (each joins every member at its gossip
// port, under an id of its own), write to and read from the prometheus
// service, and its trace generator sends to every member in turn.
func checkRing(c composeFile, p *problems) {
	members := map[string]config.Config{}
	for name, s := range c.Services {
		if !slices.Contains(s.Profiles, "ring") || name == "loadgen-ring" {
			continue
		}
		if len(s.Command) == 0 || s.Command[0] != "serve" {
			p.add("compose: ring service %s does not run serve", name)
			continue
		}
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f := config.RegisterFlags(fs)
		if err := fs.Parse(s.Command[1:]); err != nil {
			p.add("compose: %s: %v", name, err)
			continue
		}
		cfg, err := f.Load()
		if err != nil {
			p.add("compose: %s: %v", name, err)
			continue
		}
		members[name] = cfg
	}
	if len(members) < 3 {
		p.add("compose: the ring profile has %d serve instances, want 3", len(members))
	}
	ids := map[string]string{}
	for name, cfg := range members {
		if other, dup := ids[cfg.Cluster.InstanceID]; dup {
			p.add("compose: %s and %s share cluster.instance_id %q", name, other, cfg.Cluster.InstanceID)
		}
		ids[cfg.Cluster.InstanceID] = name
		_, gossipPort, _ := net.SplitHostPort(cfg.Cluster.Listen)
		for other := range members {
			if !slices.Contains(cfg.Cluster.Join, net.JoinHostPort(other, gossipPort)) {
				p.add("compose: %s does not join %s at %s", name, other, net.JoinHostPort(other, gossipPort))
			}
		}
		if len(cfg.RemoteWrite) != 1 || !strings.HasPrefix(cfg.RemoteWrite[0].URL.String(), "http://prometheus:9090/") {
			p.add("compose: %s does not remote-write to the prometheus service", name)
		}
		if cfg.QueryBackend.URL != "http://prometheus:9090" {
			p.add("compose: %s reads from %q, want the prometheus service", name, cfg.QueryBackend.URL)
		}
	}
	lg, ok := c.Services["loadgen-ring"]
	if !ok {
		p.add("compose: no loadgen-ring service in the ring profile")
		return
	}
	vals, err := parseLoadgenArgs(lg.Command[1:])
	if err != nil {
		p.add("compose: loadgen-ring: %v", err)
		return
	}
	sent := map[string]bool{}
	for _, e := range strings.Split(vals["endpoint"], ",") {
		u, err := url.Parse(e)
		if err != nil {
			p.add("compose: loadgen-ring: --endpoint %q is not a URL", e)
			continue
		}
		cfg, ok := members[u.Hostname()]
		if _, port, _ := net.SplitHostPort(cfg.OTLPHTTP); !ok || u.Port() != port {
			p.add("compose: loadgen-ring sends to %s, which is no ring member's OTLP/HTTP port", e)
		}
		sent[u.Hostname()] = true
	}
	for name := range members {
		if !sent[name] {
			p.add("compose: loadgen-ring sends nothing to %s", name)
		}
	}
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

// checkLoadgen checks the loadgen service: it sends to the plugin's
// receiver, with flags that `spangraph loadgen` accepts.
func checkLoadgen(c composeFile, lg, g composeService, p *problems) {
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
	vals, err := parseLoadgenArgs(lg.Command[1:])
	if err != nil {
		p.add("compose: loadgen: %v", err)
		return
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

// parseLoadgenArgs parses args with the flags that `spangraph loadgen`
// registers, and returns the flags they set, by name: an unknown flag, a
// value of the wrong type or a stray argument is an error, as it would be
// when the container starts.
func parseLoadgenArgs(args []string) (map[string]string, error) {
	o := loadgen.DefaultOptions()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("stray arguments %q", fs.Args())
	}
	vals := map[string]string{}
	fs.Visit(func(fl *flag.Flag) { vals[fl.Name] = fl.Value.String() })
	return vals, nil
}

func TestCompose(t *testing.T) {
	f := loadFiles(t)
	var p problems
	pi := parsePlugin(f, &p)
	checkCompose(f, pi, checkDockerfile(f, pi, new(problems)), &p)
	report(t, p)
}
