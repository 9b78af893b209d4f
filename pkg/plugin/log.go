package plugin

import (
	"context"
	"log/slog"

	"github.com/grafana/grafana-plugin-sdk-go/backend/log"
)

// NewLogger returns a slog.Logger for the engine that writes through the
// SDK's logger, so that Grafana shows the engine's lines in its own log
// with their level and attributes rather than as unparsed stderr. level is
// the log_level setting.
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated with the config
	return slog.New(&sdkHandler{logger: log.DefaultLogger, level: l})
}

type sdkHandler struct {
	logger log.Logger
	level  slog.Level
	group  string
}

func (h *sdkHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *sdkHandler) Handle(_ context.Context, r slog.Record) error {
	args := make([]any, 0, 2*r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		args = append(args, h.key(a.Key), a.Value.Resolve().Any())
		return true
	})
	switch {
	case r.Level >= slog.LevelError:
		h.logger.Error(r.Message, args...)
	case r.Level >= slog.LevelWarn:
		h.logger.Warn(r.Message, args...)
	case r.Level >= slog.LevelInfo:
		h.logger.Info(r.Message, args...)
	default:
		h.logger.Debug(r.Message, args...)
	}
	return nil
}

func (h *sdkHandler) key(k string) string {
	if h.group == "" {
		return k
	}
	return h.group + "." + k
}

func (h *sdkHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	args := make([]any, 0, 2*len(attrs))
	for _, a := range attrs {
		args = append(args, h.key(a.Key), a.Value.Resolve().Any())
	}
	return &sdkHandler{logger: h.logger.With(args...), level: h.level, group: h.group}
}

func (h *sdkHandler) WithGroup(name string) slog.Handler {
	return &sdkHandler{logger: h.logger, level: h.level, group: h.key(name)}
}
