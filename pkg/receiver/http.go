package receiver

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/limits"
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

// errTooLarge reports a body over max_request_bytes.
var errTooLarge = errors.New("request body too large")

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
	tenant, err := r.cfg.Auth.Tenant(req.Header.Get("Authorization"), req.Header.Get("X-Scope-OrgID"))
	if err != nil {
		code := auth.HTTPStatus(err)
		if code == http.StatusUnauthorized {
			r.cfg.Auth.SetChallenge(w.Header())
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
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
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
	b := otlp.GetBatch()
	buf, err := readAll(body, b.Buffer(), limit)
	switch {
	case errors.Is(err, errTooLarge):
		b.Release()
		fail(http.StatusRequestEntityTooLarge, ReasonTooLarge,
			fmt.Sprintf("request body exceeds max_request_bytes (%d) after decompression", limit))
		return
	case err != nil:
		b.Release()
		fail(http.StatusBadRequest, ReasonMalformed, "reading request body: "+err.Error())
		return
	}
	if asJSON {
		err = b.DecodeJSON(buf)
	} else {
		err = b.DecodeProto(buf)
	}
	if err != nil {
		b.Release()
		fail(http.StatusBadRequest, ReasonMalformed, err.Error())
		return
	}
	rejected, reason, err := r.accept(tenant, protocolHTTP, b)
	if err != nil {
		b.Release()
		var le *limits.Error
		if errors.As(err, &le) {
			if ra := le.RetryAfterHeader(); ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			writeStatus(w, le.HTTPStatus(), err.Error(), asJSON)
			return
		}
		w.Header().Set("Retry-After", "1")
		code := http.StatusTooManyRequests
		if errors.Is(err, errShuttingDown) || errors.Is(err, errNotAdmitted) {
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

// readAll reads r into buf, failing with errTooLarge past limit bytes.
func readAll(r io.Reader, buf []byte, limit int64) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
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
