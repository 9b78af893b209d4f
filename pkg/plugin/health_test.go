package plugin

import (
	"strings"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/remotewrite"
)

func TestRemoteWriteHealth(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		st   remotewrite.EndpointStatus
		good bool
		want string
	}{
		{"live", remotewrite.EndpointStatus{Name: "prom", URL: "http://p/api/v1/write", SamplesSent: 10, HighestSent: now, Lag: 2 * time.Second}, true, "10 samples sent, 2s behind"},
		{"far behind", remotewrite.EndpointStatus{Name: "prom", SamplesSent: 10, HighestSent: now, Lag: 10 * time.Minute}, false, "10m0s behind"},
		{"refuses everything", remotewrite.EndpointStatus{Name: "prom", SamplesFailed: 5, LastError: "401 Unauthorized"}, false, "5 refused for good; last error: 401 Unauthorized"},
		{"catching up", remotewrite.EndpointStatus{Name: "prom", CatchingUp: true}, true, "catching up"},
	}
	for _, tc := range tests {
		msg, good := remoteWriteHealth(tc.st, 15*time.Second)
		if good != tc.good || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %q good=%v, want %q good=%v", tc.name, msg, good, tc.want, tc.good)
		}
	}
}
