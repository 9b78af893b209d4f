// Command gpx_spangraph is the Spangraph datasource's backend, run by
// Grafana as a plugin process. It starts the engine (OTLP receiver, stores,
// collection) before serving Grafana, so that traces are received from the
// plugin's start, and stops it, with a last collection, when Grafana stops
// the plugin.
package main

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend/datasource"
	"github.com/grafana/grafana-plugin-sdk-go/backend/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/plugin"
	"github.com/spangraph/spangraph/pkg/server"
)

// stopTimeout bounds the receiver's drain at exit: Grafana's plugin client
// kills a plugin that has not exited two seconds after asking it to.
const stopTimeout = 1500 * time.Millisecond

// configWatchInterval is how often the plugin looks at its config file for
// a change to reload.
const configWatchInterval = 5 * time.Second

func main() {
	svc, stop := start()
	// Grafana stops a plugin through the plugin protocol, which makes
	// Manage return; a SIGTERM sent to the process directly (a container
	// stopping) gets the same last collection.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		stop()
		os.Exit(0)
	}()
	err := datasource.Manage(plugin.PluginID, svc.NewInstance, datasource.ManageOpts{})
	stop()
	if err != nil {
		log.DefaultLogger.Error("plugin exited", "err", err)
		os.Exit(1)
	}
}

// start builds and starts the engine from defaults, GF_PLUGIN_CONFIG_FILE
// and GF_PLUGIN_* variables. When it cannot, the plugin still serves
// Grafana, answering every request with the reason.
func start() (*plugin.Service, func()) {
	cfg, err := plugin.LoadConfig(os.Environ())
	if err != nil {
		log.DefaultLogger.Error("invalid Spangraph settings", "err", err)
		return plugin.Failed(err), func() {}
	}
	logger := plugin.NewLogger(cfg.LogLevel)
	eng, err := engine.New(cfg, logger, prometheus.DefaultRegisterer)
	if err == nil {
		eng.LimitProcessMemory()
		err = eng.Start()
	}
	if err != nil {
		log.DefaultLogger.Error("Spangraph could not start", "err", err)
		return plugin.Failed(err), func() {}
	}
	// A change of the config file, or POST /-/reload on the standalone
	// API, reloads what can be reloaded.
	eng.SetConfigSource(func() (config.Config, error) { return plugin.LoadConfig(os.Environ()) })
	stopWatch := make(chan struct{})
	go plugin.WatchConfigFile(config.PluginConfigFile(os.Environ()), eng, configWatchInterval, stopWatch)
	logger.Info("Spangraph started", "otlp_grpc", eng.Receiver().GRPCAddr(), "otlp_http", eng.Receiver().HTTPAddr(), "data_dir", cfg.DataDir)
	svc := plugin.New(eng, plugin.Options{Registerer: prometheus.DefaultRegisterer, Logger: logger})
	var api *server.Server
	if cfg.HTTP != "" {
		// Off by default inside Grafana; a port in use there is no reason
		// not to serve Grafana. It is the standalone server's read API,
		// with the same authentication, TLS and limits.
		if api, err = server.Start(eng, svc.Querier(), logger); err != nil {
			logger.Error("standalone query API not started", "err", err)
		}
	}
	var once sync.Once
	return svc, func() {
		once.Do(func() {
			close(stopWatch)
			if api != nil {
				_ = api.Close()
			}
			svc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			eng.Stop(ctx)
			logger.Info("Spangraph stopped")
		})
	}
}
