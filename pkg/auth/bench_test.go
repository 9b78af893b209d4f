package auth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// benchAuth has many tenants, to show that lookup does not grow with them.
func benchAuth(b *testing.B, tenants int) *Authenticator {
	cfg := Config{}
	for i := range tenants {
		cfg.Tenants = append(cfg.Tenants, TenantConfig{
			ID:           fmt.Sprintf("team-%d", i),
			BearerTokens: []Secret{Secret(fmt.Sprintf("token-%032d", i))},
			BasicAuth:    []BasicAuthConfig{{Username: fmt.Sprintf("user-%d", i), Password: "password"}},
		})
	}
	return mustAuth(b, cfg)
}

func BenchmarkTenant(b *testing.B) {
	for _, tenants := range []int{1, 1000} {
		a := benchAuth(b, tenants)
		for _, tc := range []struct{ name, authorization, orgID string }{
			{"bearer", fmt.Sprintf("Bearer token-%032d", tenants-1), ""},
			{"basic", basic(fmt.Sprintf("user-%d", tenants-1), "password"), ""},
			{"wrong", "Bearer token-wrong-00000000000000000000000000", ""},
		} {
			b.Run(fmt.Sprintf("tenants=%d/%s", tenants, tc.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, _ = a.Tenant(tc.authorization, tc.orgID)
				}
			})
		}
	}
	b.Run("off", func(b *testing.B) {
		var a *Authenticator
		b.ReportAllocs()
		for b.Loop() {
			_, _ = a.Tenant("", "team-a")
		}
	})
}

func BenchmarkHTTPMiddleware(b *testing.B) {
	a := benchAuth(b, 10)
	h := a.HTTPMiddleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), nil)
	req := httptest.NewRequest(http.MethodPost, "/v1/traces", nil)
	req.Header.Set("Authorization", fmt.Sprintf("Bearer token-%032d", 3))
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}
