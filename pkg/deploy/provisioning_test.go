package deploy

// provisioning/: the datasources, the dashboard provider, the dashboards
// (their PromQL against the metrics Spangraph writes) and the Prometheus
// that receives the remote-written copy.

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/spangraph/spangraph/pkg/plugin"
	"github.com/spangraph/spangraph/pkg/servicegraph"
	"github.com/spangraph/spangraph/pkg/spanmetrics"
)

// The metric contract: the series Spangraph writes, with Tempo's names, and
// their labels. Dashboards may use nothing else.
var (
	knownMetrics = setOf(
		spanmetrics.MetricCalls,
		spanmetrics.MetricLatency+"_bucket", spanmetrics.MetricLatency+"_sum", spanmetrics.MetricLatency+"_count",
		servicegraph.MetricRequestTotal, servicegraph.MetricRequestFailedTotal,
		servicegraph.MetricRequestServerSeconds+"_bucket", servicegraph.MetricRequestServerSeconds+"_sum",
		servicegraph.MetricRequestServerSeconds+"_count",
		servicegraph.MetricRequestClientSeconds+"_bucket", servicegraph.MetricRequestClientSeconds+"_sum",
		servicegraph.MetricRequestClientSeconds+"_count",
	)
	knownLabels = setOf(labels.MetricName, spanmetrics.LabelService, spanmetrics.LabelSpanName, spanmetrics.LabelSpanKind,
		spanmetrics.LabelStatusCode, labels.BucketLabel,
		servicegraph.LabelClient, servicegraph.LabelServer, servicegraph.LabelConnectionType)
	queryTypes      = setOf(plugin.QueryTypePromQL, plugin.QueryTypeServiceGraph, plugin.QueryTypeREDTable)
	formats         = setOf("time_series", "table", "heatmap")
	connectionTypes = setOf("", servicegraph.ConnectionDatabase, servicegraph.ConnectionMessaging, servicegraph.ConnectionVirtualNode)
	// Grafana's own variables, with a value the PromQL parser accepts.
	builtinVars = map[string]string{
		"__rate_interval": "1m", "__interval": "1m", "__range": "1m",
		"__interval_ms": "60000", "__range_s": "60", "__range_ms": "60000",
	}
)

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
