// Package atomicfile replaces files so that a crash at any moment leaves
// either the old content or the new, never a mix or a torn write.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Write writes what fill writes to a temporary file beside path, syncs it,
// renames it over path and syncs the directory. On error path is left as
// it was and the temporary file is removed.
func Write(path string, fill func(io.Writer) error) error { return write(path, fill, true) }

// WriteUnsynced is Write without the syncs: the new content survives the
// process (a crash, kill -9) but not necessarily the machine (a power
// loss may leave the old content), as the TSDB's own WAL does between its
// segment syncs. It is for files rewritten every second, where a sync
// each time would cost more than it protects.
func WriteUnsynced(path string, fill func(io.Writer) error) error { return write(path, fill, false) }

func write(path string, fill func(io.Writer) error, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = fill(f)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if !sync {
		return nil
	}
	// The rename is durable once the directory is.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
