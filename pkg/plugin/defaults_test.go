package plugin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
)

// TestQueryDefaultsJSON keeps the editors' defaults (src/queryDefaults.json)
// equal to the backend's; -update rewrites the file.
func TestQueryDefaultsJSON(t *testing.T) {
	path := filepath.Join("..", "..", "src", "queryDefaults.json")
	want := queryDefaultsJSON()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Compared as values, not bytes: prettier may lay the file out its way.
	var gotV, wantV any
	if err := json.Unmarshal(got, &gotV); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := json.Unmarshal(want, &wantV); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotV, wantV) {
		t.Fatalf("%s is stale: run go test ./pkg/plugin -run TestQueryDefaultsJSON -update\ngot  %s\nwant %s", path, got, want)
	}
}

func TestQueryDefaultsApply(t *testing.T) {
	f := newFixture(t, `{}`)
	f.feedShop(t, 5, 10)
	from, to := t0, t0.Add(time.Minute)
	all := f.run(t, dataQuery("A", from, to, map[string]any{"queryType": "serviceGraph"}))
	// A cleared "Connections" selection is every type, not none.
	cleared := f.run(t, dataQuery("A", from, to, map[string]any{"queryType": "serviceGraph", "connectionTypes": []string{}}))
	if all.Error != nil || cleared.Error != nil || all.Frames[1].Rows() == 0 || cleared.Frames[1].Rows() != all.Frames[1].Rows() {
		t.Fatalf("edges: %v rows without a selection, %v with a cleared one (%v %v)", all.Frames[1].Rows(), cleared.Frames[1].Rows(), all.Error, cleared.Error)
	}
	if o := graphOptions(backend.TimeRange{}, queryModel{}); o.Depth != 2 || o.MaxNodes != 1500 {
		t.Fatalf("graph defaults %+v", o)
	}
}
