package cluster

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/go-kit/log"
)

// kitLogger adapts slog to the go-kit logger that dskit's ring, memberlist
// KV and DNS provider log through, so their lines reach the process's
// handler with their level instead of being lost or printed raw.
type kitLogger struct{ l *slog.Logger }

var _ log.Logger = kitLogger{}

// Log turns go-kit key/value pairs into one slog record: "level" picks the
// level (info when absent), "msg" the message, the rest become attributes.
func (k kitLogger) Log(keyvals ...any) error {
	lvl := slog.LevelInfo
	for i := 0; i+1 < len(keyvals); i += 2 {
		if key, _ := keyvals[i].(string); key == "level" {
			lvl = parseKitLevel(fmt.Sprint(keyvals[i+1]))
			break
		}
	}
	ctx := context.Background()
	if !k.l.Enabled(ctx, lvl) {
		return nil
	}
	var msg string
	attrs := make([]any, 0, len(keyvals)/2)
	for i := 0; i < len(keyvals); i += 2 {
		key := fmt.Sprint(keyvals[i])
		var val any = "(MISSING)"
		if i+1 < len(keyvals) {
			val = keyvals[i+1]
		}
		switch key {
		case "level":
		case "msg":
			msg = fmt.Sprint(val)
		default:
			attrs = append(attrs, slog.Any(key, val))
		}
	}
	k.l.Log(ctx, lvl, msg, attrs...)
	return nil
}

func parseKitLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error", "err":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}
