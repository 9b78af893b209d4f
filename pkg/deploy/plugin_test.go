package deploy

// plugin.json: a backend datasource whose id is the one the plugin
// registers with Grafana.

import (
	"encoding/json"
	"testing"

	"github.com/spangraph/spangraph/pkg/plugin"
)

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
	if pi.ID != plugin.PluginID {
		p.add("%s: id %q, but the plugin registers as %q (plugin.PluginID)", pluginJSONPath, pi.ID, plugin.PluginID)
	}
	return pi
}

func pluginDir(pi pluginInfo) string { return "/var/lib/grafana/plugins/" + pi.ID }

func TestPluginJSON(t *testing.T) {
	var p problems
	parsePlugin(loadFiles(t), &p)
	report(t, p)
}
