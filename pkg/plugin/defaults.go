package plugin

import (
	"encoding/json"

	"github.com/spangraph/spangraph/pkg/query"
)

// queryDefaults are the values a service graph or RED table query gets
// for the fields it leaves out. They are the one source of these values:
// the editors read them from src/queryDefaults.json, which
// `go test ./pkg/plugin -run TestQueryDefaultsJSON -update` writes from
// here, so that the editor's placeholders say what the backend applies.
var queryDefaults = struct {
	ServiceGraph struct {
		Depth int `json:"depth"`
		// MaxNodes is what Grafana's node graph panel draws at most.
		MaxNodes int `json:"maxNodes"`
	} `json:"serviceGraph"`
	REDTable struct {
		GroupBy   string   `json:"groupBy"`
		SpanKinds []string `json:"spanKinds"`
		// TopN 0 keeps every row.
		TopN int `json:"topN"`
	} `json:"redTable"`
}{}

func init() {
	queryDefaults.ServiceGraph.Depth = 2
	queryDefaults.ServiceGraph.MaxNodes = 1500
	queryDefaults.REDTable.GroupBy = "service"
	queryDefaults.REDTable.SpanKinds = []string{"SPAN_KIND_SERVER"}
}

// queryDefaultsJSON is src/queryDefaults.json.
func queryDefaultsJSON() []byte {
	b, err := json.MarshalIndent(queryDefaults, "", "  ")
	if err != nil {
		panic(err) // a fixed struct of strings and numbers
	}
	return append(b, '\n')
}

// withGraphDefaults fills in what a service graph query leaves out. No
// connection type, or an empty list (the editor's cleared selection),
// means every type.
func withGraphDefaults(o query.GraphOptions) query.GraphOptions {
	if o.Depth <= 0 {
		o.Depth = queryDefaults.ServiceGraph.Depth
	}
	if o.MaxNodes <= 0 {
		o.MaxNodes = queryDefaults.ServiceGraph.MaxNodes
	}
	if len(o.ConnectionTypes) == 0 {
		o.ConnectionTypes = nil
	}
	return o
}

// withREDDefaults fills in what a RED table query leaves out.
func withREDDefaults(o query.REDOptions) query.REDOptions {
	if o.GroupBy == "" {
		o.GroupBy = queryDefaults.REDTable.GroupBy
	}
	if len(o.SpanKinds) == 0 {
		o.SpanKinds = queryDefaults.REDTable.SpanKinds
	}
	return o
}
