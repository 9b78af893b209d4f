//go:build mage

// Magefile builds the plugin's backend with the Grafana plugin SDK's
// build targets: `mage -v` (BuildAll) writes dist/gpx_spangraph_<os>_<arch>
// for the platforms Grafana runs on. Without mage, the same builds are:
//
//	for p in linux/amd64 linux/arm64 darwin/arm64 windows/amd64; do
//	  os=${p%/*} arch=${p#*/} ext=; [ $os = windows ] && ext=.exe
//	  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -tags arrow_json_stdlib \
//	    -ldflags '-w -s -extldflags "-static"' -o dist/gpx_spangraph_${os}_${arch}$ext ./pkg
//	done
package main

import (
	"github.com/grafana/grafana-plugin-sdk-go/build"
	"github.com/magefile/mage/mg"
)

func init() {
	// plugin.json is at the repository root, not in src/ where the SDK's
	// build looks by default; it names the executable and the plugin id.
	_ = build.SetBeforeBuildCallback(func(cfg build.Config) (build.Config, error) {
		cfg.PluginJSONPath = "."
		cfg.RootPackagePath = "./pkg"
		cfg.OutputBinaryPath = "dist"
		return cfg, nil
	})
}

// BuildAll builds the backend for linux/amd64, linux/arm64, darwin/arm64
// and windows/amd64.
func BuildAll() {
	b := build.Build{}
	mg.Deps(b.Linux, b.LinuxARM64, b.DarwinARM64, b.Windows)
}

// Default is what `mage -v` runs.
var Default = BuildAll
