package receiver

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/otlp"
)

const (
	contentTypeProto = "application/x-protobuf"
	contentTypeJSON  = "application/json"
)

// HTTPHandler serves OTLP/HTTP trace exports (POST, protobuf or JSON,
// optionally gzip) at whatever path it is mounted on.
func (r *Receiver) HTTPHandler() http.Handler {
	return http.HandlerFunc(r.serveHTTP)
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	// Requests built in process (Grafana's resource adapter) may carry no
	// body at all; net/http's own always have one.
	if req.Body == nil {
		req.Body = http.NoBody
	}
	asJSON := false
	fail := func(code int, reason, msg string) {
		requestsRejected.WithLabelValues(protocolHTTP, reason).Inc()
		writeStatus(w, code, msg, asJSON)
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, ReasonBadMethod, "OTLP/HTTP exports must be POST requests")
		return
	}
	mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	switch {
	case err == nil && mt == contentTypeProto:
	case err == nil && mt == contentTypeJSON:
		asJSON = true
	default:
		fail(http.StatusUnsupportedMediaType, ReasonMediaType,
			fmt.Sprintf("unsupported Content-Type %q: send application/x-protobuf or application/json", req.Header.Get("Content-Type")))
		return
	}
	tenant, err := r.access.Auth.Tenant(req.Header.Get("Authorization"), req.Header.Get("X-Scope-OrgID"))
	if err != nil {
		code := auth.HTTPStatus(err)
		if code == http.StatusUnauthorized {
			r.access.Auth.SetChallenge(w.Header())
		}
		fail(code, auth.ReasonOf(err), err.Error())
		return
	}
	limit := int64(r.cfg.MaxRequestBytes)
	if req.ContentLength > limit {
		fail(http.StatusRequestEntityTooLarge, ReasonTooLarge,
			fmt.Sprintf("request body of %d bytes exceeds max_request_bytes (%d)", req.ContentLength, limit))
		return
	}
	var body io.Reader = io.LimitReader(req.Body, limit+1)
	// The buffer is sized, and charged, from Content-Length before the
	// body is read; a gzip body's size is known only as it inflates.
	size := int(req.ContentLength)
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		size = 0
		gz, err := gzip.NewReader(body)
		if err != nil {
			fail(http.StatusBadRequest, ReasonMalformed, "invalid gzip body: "+err.Error())
			return
		}
		defer gz.Close()
		body = gz
	default:
		fail(http.StatusUnsupportedMediaType, ReasonMediaType,
			fmt.Sprintf("unsupported Content-Encoding %q: send gzip or no encoding", enc))
		return
	}
	o := origin{ctx: req.Context(), auth: req.Header.Get("Authorization"), orgID: req.Header.Get("X-Scope-OrgID")}
	b := otlp.GetBatch()
	b.Charge(r.gate)
	var pl *plan
	buf, err := b.ReadBody(body, size, int(limit))
	switch {
	case err != nil:
	case asJSON:
		err = b.DecodeJSON(buf)
	default:
		rt, _ := r.routerOf(o) // a refusal is accept's to give
		if b, pl, err = r.planRaw(rt, o, tenant, protocolHTTP, b, buf); err == nil && pl == nil {
			err = b.DecodeProto(buf)
		}
	}
	if err != nil {
		b.Release()
		var timeout net.Error
		var rf Refusal
		switch me := r.refuseMemory(protocolHTTP, err); {
		case errors.As(err, &rf):
			writeRefusal(w, rf, asJSON)
		case me != nil:
			writeRefusal(w, me, asJSON)
		case errors.Is(err, otlp.ErrTooLarge):
			fail(http.StatusRequestEntityTooLarge, ReasonTooLarge,
				fmt.Sprintf("request body exceeds max_request_bytes (%d) after decompression", limit))
		case errors.As(err, &timeout) && timeout.Timeout():
			fail(http.StatusRequestTimeout, ReasonReadTimeout,
				fmt.Sprintf("the request body did not arrive within http_read_timeout (%s)", r.cfg.HTTPReadTimeout))
		case errors.Is(err, otlp.ErrMalformed):
			fail(http.StatusBadRequest, ReasonMalformed, err.Error())
		default:
			fail(http.StatusBadRequest, ReasonMalformed, "reading request body: "+err.Error())
		}
		return
	}
	rejected, reason, err := r.accept(o, tenant, protocolHTTP, b, pl)
	if err != nil {
		b.Release()
		var le Refusal
		if errors.As(err, &le) {
			if ra := le.RetryAfterHeader(); ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			writeStatus(w, le.HTTPStatus(), err.Error(), asJSON)
			return
		}
		w.Header().Set("Retry-After", "1")
		code := http.StatusTooManyRequests
		if errors.Is(err, errShuttingDown) || errors.Is(err, errNotAdmitted) || errors.Is(err, errJoining) {
			code = http.StatusServiceUnavailable
		}
		writeStatus(w, code, err.Error(), asJSON)
		return
	}
	out, err := otlp.EncodeResponse(otlp.PartialSuccess(rejected, reason), asJSON)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, err.Error(), asJSON)
		return
	}
	if asJSON {
		w.Header().Set("Content-Type", contentTypeJSON)
	} else {
		w.Header().Set("Content-Type", contentTypeProto)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// writeRefusal answers with a Refusal's status and retry hint.
func writeRefusal(w http.ResponseWriter, rf Refusal, asJSON bool) {
	if ra := rf.RetryAfterHeader(); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	writeStatus(w, rf.HTTPStatus(), rf.Error(), asJSON)
}

// writeStatus answers with a google.rpc.Status body in the request's
// encoding, as the OTLP/HTTP specification asks.
func writeStatus(w http.ResponseWriter, httpCode int, msg string, asJSON bool) {
	st := &status.Status{Code: int32(grpcCodeFor(httpCode)), Message: msg}
	var out []byte
	if asJSON {
		out, _ = protojson.Marshal(st)
		w.Header().Set("Content-Type", contentTypeJSON)
	} else {
		out, _ = proto.Marshal(st)
		w.Header().Set("Content-Type", contentTypeProto)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(httpCode)
	_, _ = w.Write(out)
}

func grpcCodeFor(httpCode int) codes.Code {
	switch httpCode {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed:
		return codes.Unimplemented
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	}
	return codes.Internal
}
