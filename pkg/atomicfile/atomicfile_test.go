package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	for name, replace := range map[string]func(string, func(io.Writer) error) error{
		"synced": Write, "unsynced": WriteUnsynced,
	} {
		t.Run(name, func(t *testing.T) { testReplace(t, replace) })
	}
}

func testReplace(t *testing.T, replace func(string, func(io.Writer) error) error) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	write := func(content string, fail error) error {
		return replace(path, func(w io.Writer) error {
			if _, err := io.WriteString(w, content); err != nil {
				return err
			}
			return fail
		})
	}
	if err := write("one", nil); err != nil {
		t.Fatal(err)
	}
	// A failing fill leaves the old content and no temporary file.
	boom := errors.New("boom")
	if err := write("two, half written", boom); !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom", err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "one" {
		t.Errorf("content %q, %v; want the old one", got, err)
	}
	if err := write("three", nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "three" {
		t.Errorf("content %q, want three", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d files in the directory, want only f", len(entries))
	}
	if err := replace(filepath.Join(dir, "missing", "f"), func(io.Writer) error { return nil }); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}
