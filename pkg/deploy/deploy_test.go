package deploy

// The checks together, and the test that they can fail.

import (
	"maps"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/spangraph/spangraph/pkg/plugin"
)

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
		{"unsigned plugin", composePath, "GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS: " + plugin.PluginID, "GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS: other", `does not allow`},
		{"OTLP port", composePath, `- "127.0.0.1:4317:4317"`, `- "127.0.0.1:14317:14317"`, `port 4317, which is not published`},
		{"remote-write receiver", composePath, "- --web.enable-remote-write-receiver", "- --web.enable-lifecycle", `remote-write-receiver`},
		{"loadgen flag", composePath, "- --services", "- --service-count", `flag provided but not defined: -service-count`},
		{"loadgen flag value", composePath, "- 87600h", "- 10y", `invalid value "10y" for flag -duration`},
		{"plugin setting not in grafana.ini", composePath, "GF_PLUGIN_COLLECTION_INTERVAL:", "GF_PLUGIN_COLLECT_INTERVAL:", `no key collect_interval`},
		{"volume hides the plugin", composePath, "grafana-data:/var/lib/grafana/data", "grafana-data:/var/lib/grafana", `hides the plugin`},
		{"ring join", composePath, "spangraph-1:7946,spangraph-2:7946,spangraph-3:7946", "spangraph-1:7946,spangraph-2:7946", `does not join spangraph-3`},
		{"ring instance id", composePath, "- --cluster-instance-id\n      - spangraph-2", "- --cluster-instance-id\n      - spangraph-1", `share cluster.instance_id`},
		{"ring query backend", composePath, "- http://prometheus:9090\n", "- http://prometheus:9091\n", `reads from "http://prometheus:9091"`},
		{"ring loadgen", composePath, "http://spangraph-3:4318", "http://spangraph-3:4319", `no ring member's OTLP/HTTP port`},
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
