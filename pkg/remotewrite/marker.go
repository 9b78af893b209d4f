package remotewrite

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spangraph/spangraph/pkg/atomicfile"
)

// marker is what is persisted per tenant and endpoint: the endpoint has
// acknowledged (or refused for good) every sample before ResumeFromMs, so
// catching up from it (inclusive) loses nothing. It may have some samples
// after it too; the catch-up recognises those (see catchup.go).
type marker struct {
	URL          string    `json:"url"`
	ResumeFromMs int64     `json:"resume_from_ms"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func markerPath(tsdbDir, name string) string {
	// PathEscape keeps any configured name a single, safe file name.
	return filepath.Join(tsdbDir, "remote_write", url.PathEscape(name)+".json")
}

// loadMarker returns the marker, or ok=false when there is none.
func loadMarker(path string) (m marker, ok bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, false, fmt.Errorf("%s: %w", path, err)
	}
	return m, true, nil
}

// saveMarker writes atomically, so that a crash leaves the old marker or
// the new one, never a torn file.
func saveMarker(path string, m marker) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
