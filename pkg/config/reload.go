package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Reloadable are the top-level keys a reload applies to a running
// process (SIGHUP, POST /-/reload, the plugin's config file changing):
// the processors, the registry's limits, the ingestion limits, the
// credentials and the remote-write endpoints. Everything else is bound to
// a listener, a store or a budget made at start.
var Reloadable = []string{"registry", "spanmetrics", "servicegraph", "overrides", "remote_write", "auth", "limits"}

// CheckReload reports, naming the key, the first setting next changes
// that only a restart can apply; nil when next can be reloaded over c.
func (c *Config) CheckReload(next *Config) error {
	reloadable := map[string]bool{}
	for _, k := range Reloadable {
		reloadable[k] = true
	}
	a, b := reflect.ValueOf(c).Elem(), reflect.ValueOf(next).Elem()
	for i := range a.NumField() {
		key := yamlKey(a.Type().Field(i))
		if reloadable[key] {
			continue
		}
		if path, differs := firstDifference(a.Field(i), b.Field(i), key); differs {
			return fmt.Errorf("%s: cannot change without a restart (a reload applies %s); the running config stays",
				path, strings.Join(Reloadable, ", "))
		}
	}
	return nil
}

func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// firstDifference finds where a and b differ, as a dotted key path under
// path.
func firstDifference(a, b reflect.Value, path string) (string, bool) {
	if a.Kind() == reflect.Struct {
		for i := range a.NumField() {
			f := a.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			if p, differs := firstDifference(a.Field(i), b.Field(i), path+"."+yamlKey(f)); differs {
				return p, true
			}
		}
		return "", false
	}
	return path, !reflect.DeepEqual(a.Interface(), b.Interface())
}
