// Package tenant says what a tenant id is: the id of requests that name
// none, and which ids are valid, by dskit's rules, so that an id is safe
// both as a directory name under data_dir and as an X-Scope-OrgID value.
// It is its own package so that the packages that only check a name
// (auth, limits, the plugin's settings) need not import the storage layer.
package tenant

import (
	"errors"

	dskittenant "github.com/grafana/dskit/tenant"
)

// Default is the tenant of requests that name none, as in Tempo, Mimir
// and Loki.
const Default = "single-tenant"

// Validate refuses ids that are not safe as directory names or as
// X-Scope-OrgID values (dskit's rules: [a-zA-Z0-9!-_.*'()], at most 150
// bytes, not "." or "..").
func Validate(id string) error {
	if id == "" {
		return errors.New("tenant id is empty")
	}
	return dskittenant.ValidTenantID(id)
}
