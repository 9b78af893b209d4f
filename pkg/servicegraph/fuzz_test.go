package servicegraph

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/spangraph/spangraph/pkg/registry"
)

// FuzzParsePending feeds the saved-edges decoder arbitrary bodies with a
// valid checksum, so that it is the decoder and not the CRC that meets
// them: it must refuse or decode, never panic, and what it decodes must
// save and decode again to the same.
func FuzzParsePending(f *testing.F) {
	cfg := DefaultConfig()
	cfg.Dimensions = []string{"env"}
	p, err := New(cfg, registry.New(registry.Config{}), Options{})
	if err != nil {
		f.Fatal(err)
	}
	p.Push(makeBatch(f, res{service: "fe", spans: []sp{client(1), with(client(2), func(s *sp) { s.err = true })}}))
	path := filepath.Join(f.TempDir(), "seed")
	if _, err := p.SaveFile(path); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed[:len(seed)-4])
	f.Add([]byte(pendingMagic + "\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		data := binary.LittleEndian.AppendUint32(append([]byte(nil), body...), crc32.ChecksumIEEE(body))
		q, err := New(cfg, registry.New(registry.Config{}), Options{})
		if err != nil {
			t.Fatal(err)
		}
		entries, err := q.parse(data)
		if err != nil {
			return
		}
		path := filepath.Join(t.TempDir(), "pending")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		restored, dropped, err := q.RestoreFile(path)
		if err != nil || restored+dropped > len(entries) {
			t.Fatalf("parsed %d entries, restored %d and dropped %d: %v", len(entries), restored, dropped, err)
		}
		if _, err := q.SaveFile(path); err != nil {
			t.Fatal(err)
		}
		again, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := q.parse(again); err != nil || len(back) != restored {
			t.Fatalf("saved %d restored edges, read back %d: %v", restored, len(back), err)
		}
	})
}
