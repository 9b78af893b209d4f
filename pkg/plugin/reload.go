package plugin

import (
	"os"
	"time"
)

// Reloader is what WatchConfigFile reloads: the engine.
type Reloader interface {
	ReloadConfig() error
}

// WatchConfigFile reloads r's config whenever the plugin's config file
// at path (config.PluginConfigFile) changes, checking every interval,
// until stop is closed. Grafana cannot signal a plugin, so the file is
// the plugin's SIGHUP. Polling rather than file events: a Kubernetes
// ConfigMap or an editor replaces the file by renaming another over it,
// which a watch on the old file misses. Without a config file it returns
// at once.
func WatchConfigFile(path string, r Reloader, interval time.Duration, stop <-chan struct{}) {
	if path == "" {
		return
	}
	last := fileStamp(path)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			now := fileStamp(path)
			if now == last {
				continue
			}
			last = now
			// The engine logs the outcome and counts it in
			// spangraph_config_last_reload_successful.
			_ = r.ReloadConfig()
		}
	}
}

// stamp is what tells that a file changed: its modification time and size
// (both, for filesystems with coarse times), or that it is missing.
type stamp struct {
	mod  time.Time
	size int64
	ok   bool
}

func fileStamp(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
}
