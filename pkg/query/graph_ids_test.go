package query

import "testing"

func TestSetEdgeIDs(t *testing.T) {
	edges := []Edge{
		{Source: "shop", Target: "kafka"},
		{Source: "shop", Target: "kafka", ConnectionType: "messaging_system"},
		{Source: "shop", Target: "postgres", ConnectionType: "database"},
	}
	setEdgeIDs(edges)
	for i, want := range []string{"shop->kafka/rpc", "shop->kafka/messaging_system", "shop->postgres"} {
		if edges[i].ID != want {
			t.Errorf("edge %d: id %q, want %q", i, edges[i].ID, want)
		}
	}
}
