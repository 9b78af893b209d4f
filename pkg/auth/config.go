package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"unicode"

	"github.com/spangraph/spangraph/pkg/tenant"
)

// Secret is a credential from the config. Every way of printing it —
// fmt's verbs, YAML, JSON, slog — shows "<secret>", so that dumping or
// logging a config never leaks one. Use string(s) to read it.
type Secret string

const redacted = "<secret>"

func (s Secret) String() string   { return s.redact() }
func (s Secret) GoString() string { return `"` + s.redact() + `"` }

// MarshalYAML keeps secrets out of a re-encoded config.
func (s Secret) MarshalYAML() (any, error) { return s.redact(), nil }

// MarshalText covers encoding/json and slog's text and JSON handlers.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.redact()), nil }

// LogValue covers slog.Any and slog attributes.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.redact()) }

// redact shows whether a secret is set, never what it is.
func (s Secret) redact() string {
	if s == "" {
		return ""
	}
	return redacted
}

// Config is the `auth:` section.
//
// With no tenants, authentication is off: the tenant comes from
// X-Scope-OrgID (default single-tenant). With tenants, every request must
// authenticate, unless required is set to false: then a request without
// credentials is served by X-Scope-OrgID as without tenants, but only for
// tenants that are not listed here (listed tenants always need their
// credentials) — a migration mode while senders get their tokens.
type Config struct {
	Tenants []TenantConfig `yaml:"tenants"`
	// Required defaults to true when tenants are listed; true with no
	// tenants is refused, since nobody could authenticate.
	Required *bool `yaml:"required,omitempty"`
}

// TenantConfig lists the credentials of one tenant.
//
// Secrets (bearer_tokens, basic_auth passwords) may be written literally,
// as ${ENV_VAR} references expanded from the environment at load, or read
// from files (*_file, surrounding whitespace trimmed: one secret a file).
type TenantConfig struct {
	ID               string            `yaml:"id"`
	BearerTokens     []Secret          `yaml:"bearer_tokens"`
	BearerTokenFiles []string          `yaml:"bearer_token_files"`
	BasicAuth        []BasicAuthConfig `yaml:"basic_auth"`
	// AllowOrgIDHeader lets this tenant's credentials pick any tenant with
	// X-Scope-OrgID (a gateway or a collector that routes for several
	// teams). Without it, naming another tenant is refused (403).
	AllowOrgIDHeader bool `yaml:"allow_org_id_header"`
}

// BasicAuthConfig is one username and its password, given literally (or
// as ${ENV}) or in a file; exactly one of the two.
type BasicAuthConfig struct {
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// Enabled reports whether any tenant is configured.
func (c *Config) Enabled() bool { return len(c.Tenants) > 0 }

// IsRequired is the effective value of required.
func (c *Config) IsRequired() bool {
	if c.Required != nil {
		return *c.Required
	}
	return c.Enabled()
}

// Validate checks the config, reading the secret files and environment
// variables it names; errors name the key under prefix and never contain a
// secret.
func (c *Config) Validate(prefix string) error {
	_, err := c.resolve(prefix, os.LookupEnv, os.ReadFile)
	return err
}

// credentialKind separates bearer tokens from basic-auth pairs in the
// digest, so that a token spelled "user:password" can never match a
// basic-auth credential or the other way round.
type credentialKind byte

const (
	kindBearer credentialKind = 'b'
	kindBasic  credentialKind = 'u'
)

// resolvedCredential is a credential with its secret read, before it is
// hashed; it never leaves this package.
type resolvedCredential struct {
	kind   credentialKind
	secret string // token, or "username:password"
	key    string // config key, for error messages
}

type resolvedTenant struct {
	id          string
	allowHeader bool
	creds       []resolvedCredential
}

// resolve reads every secret and checks everything Validate promises.
func (c *Config) resolve(prefix string, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) ([]resolvedTenant, error) {
	if c.Required != nil && *c.Required && !c.Enabled() {
		return nil, fmt.Errorf("%s.required: true, but %s.tenants is empty: nobody could authenticate", prefix, prefix)
	}
	out := make([]resolvedTenant, 0, len(c.Tenants))
	seenIDs := map[string]string{}
	seenUsers := map[string]string{}
	for ti, tc := range c.Tenants {
		tkey := fmt.Sprintf("%s.tenants[%d]", prefix, ti)
		if tc.ID == "" {
			return nil, fmt.Errorf("%s.id: required", tkey)
		}
		if err := tenant.Validate(tc.ID); err != nil {
			return nil, fmt.Errorf("%s.id: %w", tkey, err)
		}
		if prev, dup := seenIDs[tc.ID]; dup {
			return nil, fmt.Errorf("%s.id: tenant %q is already listed at %s; list each tenant once with all its credentials", tkey, tc.ID, prev)
		}
		seenIDs[tc.ID] = tkey
		rt := resolvedTenant{id: tc.ID, allowHeader: tc.AllowOrgIDHeader}
		for i, tok := range tc.BearerTokens {
			key := fmt.Sprintf("%s.bearer_tokens[%d]", tkey, i)
			s, err := expandEnv(string(tok), lookupEnv)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			if err := checkToken(s); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			rt.creds = append(rt.creds, resolvedCredential{kindBearer, s, key})
		}
		for i, path := range tc.BearerTokenFiles {
			key := fmt.Sprintf("%s.bearer_token_files[%d]", tkey, i)
			s, err := readSecretFile(path, readFile)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			if err := checkToken(s); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", key, path, err)
			}
			rt.creds = append(rt.creds, resolvedCredential{kindBearer, s, key})
		}
		for i, ba := range tc.BasicAuth {
			key := fmt.Sprintf("%s.basic_auth[%d]", tkey, i)
			switch {
			case ba.Username == "":
				return nil, fmt.Errorf("%s.username: required", key)
			case strings.ContainsRune(ba.Username, ':'):
				// Basic credentials are "username:password": the first
				// colon ends the username.
				return nil, fmt.Errorf("%s.username: must not contain ':'", key)
			case ba.Password != "" && ba.PasswordFile != "":
				return nil, fmt.Errorf("%s: set password or password_file, not both", key)
			case ba.Password == "" && ba.PasswordFile == "":
				return nil, fmt.Errorf("%s: password or password_file is required", key)
			}
			if prev, dup := seenUsers[ba.Username]; dup {
				return nil, fmt.Errorf("%s.username: %q is already used at %s; a username belongs to one tenant", key, ba.Username, prev)
			}
			seenUsers[ba.Username] = key
			var pw string
			var err error
			pkey := key + ".password"
			if ba.PasswordFile != "" {
				pkey = key + ".password_file"
				pw, err = readSecretFile(ba.PasswordFile, readFile)
			} else {
				pw, err = expandEnv(string(ba.Password), lookupEnv)
			}
			if err == nil && pw == "" {
				err = errors.New("the password is empty")
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", pkey, err)
			}
			rt.creds = append(rt.creds, resolvedCredential{kindBasic, ba.Username + ":" + pw, pkey})
		}
		if len(rt.creds) == 0 {
			return nil, fmt.Errorf("%s: tenant %q has no credentials: set bearer_tokens, bearer_token_files or basic_auth", tkey, tc.ID)
		}
		out = append(out, rt)
	}
	// The same token for two tenants would make the tenant of a request
	// depend on map order. Refuse it, naming the keys, never the token.
	owner := map[[32]byte]resolvedCredential{}
	ownerTenant := map[[32]byte]string{}
	for _, rt := range out {
		for _, cr := range rt.creds {
			d := digest(cr.kind, cr.secret)
			if prev, dup := owner[d]; dup && ownerTenant[d] != rt.id {
				return nil, fmt.Errorf("%s: the same credential is configured for tenant %q at %s; credentials must be unique across tenants",
					cr.key, ownerTenant[d], prev.key)
			}
			owner[d] = cr
			ownerTenant[d] = rt.id
		}
	}
	return out, nil
}

// checkToken refuses tokens that could never match an Authorization
// header: empty, or with whitespace or control characters inside (a token
// file with two lines, say).
func checkToken(s string) error {
	if s == "" {
		return errors.New("the token is empty")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return errors.New("the token contains whitespace or control characters")
		}
	}
	return nil
}

// readSecretFile reads a file holding one secret. Surrounding whitespace
// is trimmed: files written by `echo` or editors end with a newline. The
// error is os's ("open /path: no such file or directory"), which names the
// file, not the content.
func readSecretFile(path string, readFile func(string) ([]byte, error)) (string, error) {
	if path == "" {
		return "", errors.New("empty file name")
	}
	data, err := readFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// expandEnv replaces ${NAME} references with the environment variable's
// value; "$$" is a literal "$". A "$" followed by anything else is kept
// as it is. An unset or empty variable is an error: an empty secret would
// either lock everyone out or, worse, match an empty credential.
func expandEnv(s string, lookupEnv func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", errors.New("unterminated ${ in the value")
			}
			name := s[i+2 : i+2+end]
			if !validEnvName(name) {
				return "", fmt.Errorf("${%s}: not a valid environment variable name", name)
			}
			v, ok := lookupEnv(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			if v == "" {
				return "", fmt.Errorf("environment variable %s is empty", name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
