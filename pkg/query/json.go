package query

import (
	"bytes"
	"encoding/json"
	"math"
)

// marshal is json.Marshal without HTML escaping, so that edge ids read
// "a->b" rather than "a-\u003eb".
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// num is a float for JSON: NaN and infinities, which encoding/json
// refuses, become null ("unknown").
type num float64

func (n num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// MarshalJSON encodes unknown figures as null.
func (n Node) MarshalJSON() ([]byte, error) {
	return marshal(struct {
		ID           string `json:"id"`
		Title        string `json:"title"`
		Subtitle     string `json:"subtitle,omitempty"`
		Kind         string `json:"kind"`
		Rate         num    `json:"rate"`
		ErrorRatio   num    `json:"errorRatio"`
		AvgMs        num    `json:"avgMs"`
		P90Ms        num    `json:"p90Ms"`
		ArcSuccess   num    `json:"arcSuccess"`
		ArcFailed    num    `json:"arcFailed"`
		Instrumented bool   `json:"instrumented"`
	}{n.ID, n.Title, n.Subtitle, n.Kind, num(n.Rate), num(n.ErrorRatio), num(n.AvgMs), num(n.P90Ms), num(n.ArcSuccess), num(n.ArcFailed), n.Instrumented})
}

// MarshalJSON encodes unknown figures as null.
func (e Edge) MarshalJSON() ([]byte, error) {
	return marshal(struct {
		ID             string `json:"id"`
		Source         string `json:"source"`
		Target         string `json:"target"`
		ConnectionType string `json:"connectionType,omitempty"`
		Rate           num    `json:"rate"`
		ErrorRatio     num    `json:"errorRatio"`
		AvgMs          num    `json:"avgMs"`
		P90Ms          num    `json:"p90Ms"`
	}{e.ID, e.Source, e.Target, e.ConnectionType, num(e.Rate), num(e.ErrorRatio), num(e.AvgMs), num(e.P90Ms)})
}

// MarshalJSON encodes unknown figures as null.
func (r REDRow) MarshalJSON() ([]byte, error) {
	return marshal(struct {
		Service      string `json:"service"`
		SpanName     string `json:"spanName,omitempty"`
		Rate         num    `json:"rate"`
		ErrorPercent num    `json:"errorPercent"`
		P50Ms        num    `json:"p50Ms"`
		P90Ms        num    `json:"p90Ms"`
		P99Ms        num    `json:"p99Ms"`
	}{r.Service, r.SpanName, num(r.Rate), num(r.ErrorPercent), num(r.P50Ms), num(r.P90Ms), num(r.P99Ms)})
}
