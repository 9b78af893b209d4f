package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/backend/gtime"
	"github.com/grafana/grafana-plugin-sdk-go/backend/log"
	"github.com/grafana/grafana-plugin-sdk-go/data"
)

// Streams live at serviceGraph/<hash> and redTable/<hash>: the hash is the
// subscriber's digest of the query, so that panels with the same query
// share one stream, and the query itself travels as the subscribe
// request's data: the query's JSON plus an optional "window" (how far
// back each refresh looks, default 5m).
//
// Each refresh sends complete frames (schema and values): for a service
// graph the "nodes" frame, then the "edges" frame, told apart by name.
const defaultStreamWindow = 5 * time.Minute

type streamQuery struct {
	kind   string
	model  queryModel
	window time.Duration
}

func parseStream(path string, raw json.RawMessage) (streamQuery, error) {
	kind, hash, _ := strings.Cut(path, "/")
	if (kind != QueryTypeServiceGraph && kind != QueryTypeREDTable) || hash == "" || strings.Contains(hash, "/") {
		return streamQuery{}, fmt.Errorf("unknown stream %q: subscribe to serviceGraph/<hash> or redTable/<hash>", path)
	}
	m, err := parseQuery(raw, kind, kind)
	if err != nil {
		return streamQuery{}, err
	}
	var extra struct {
		Window string `json:"window"`
	}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &extra) // parseQuery has checked the JSON
	}
	sq := streamQuery{kind: kind, model: m, window: defaultStreamWindow}
	if extra.Window != "" {
		if sq.window, err = gtime.ParseDuration(extra.Window); err != nil || sq.window <= 0 {
			return streamQuery{}, fmt.Errorf("stream window %q is not a positive duration such as 5m", extra.Window)
		}
	}
	return sq, nil
}

// SubscribeStream accepts the two stream kinds with a valid query.
func (i *Instance) SubscribeStream(_ context.Context, req *backend.SubscribeStreamRequest) (*backend.SubscribeStreamResponse, error) {
	if err := i.svc.failure(); err != nil {
		return nil, err
	}
	if _, err := parseStream(req.Path, req.Data); err != nil {
		return &backend.SubscribeStreamResponse{Status: backend.SubscribeStreamStatusNotFound}, nil
	}
	return &backend.SubscribeStreamResponse{Status: backend.SubscribeStreamStatusOK}, nil
}

// PublishStream refuses: the streams are computed, not written to.
func (*Instance) PublishStream(context.Context, *backend.PublishStreamRequest) (*backend.PublishStreamResponse, error) {
	return &backend.PublishStreamResponse{Status: backend.PublishStreamStatusPermissionDenied}, nil
}

// RunStream sends fresh frames at once and then after every collection,
// when the figures can have changed, until Grafana ends the stream.
func (i *Instance) RunStream(ctx context.Context, req *backend.RunStreamRequest, sender *backend.StreamSender) error {
	if err := i.svc.failure(); err != nil {
		return err
	}
	sq, err := parseStream(req.Path, req.Data)
	if err != nil {
		return err
	}
	for {
		collected := i.svc.eng.Collected()
		if err := i.pushStream(ctx, sq, sender); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A failed refresh (say, a query timeout under load) is
			// worth a log line, not the end of the stream.
			log.DefaultLogger.Warn("stream refresh failed", "path", req.Path, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-collected:
		}
	}
}

func (i *Instance) pushStream(ctx context.Context, sq streamQuery, sender *backend.StreamSender) error {
	now := time.Now()
	tr := backend.TimeRange{From: now.Add(-sq.window), To: now}
	var frames data.Frames
	var err error
	if sq.kind == QueryTypeServiceGraph {
		frames, err = i.serviceGraphFrames(ctx, graphOptions(tr, sq.model))
	} else {
		var f *data.Frame
		f, err = i.redFrame(ctx, redOptions(tr, sq.model))
		frames = data.Frames{f}
	}
	if err != nil {
		return err
	}
	for _, f := range frames {
		if err := sender.SendFrame(f, data.IncludeAll); err != nil {
			return err
		}
	}
	return nil
}
