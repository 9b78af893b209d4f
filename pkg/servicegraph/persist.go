package servicegraph

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"

	"github.com/spangraph/spangraph/pkg/atomicfile"
	"github.com/spangraph/spangraph/pkg/otlp"
)

// Half edges still waiting when the process stops are written to a file
// and read back at the next start, so that a restart (for a new config, an
// upgrade) neither loses them nor settles them early: a server span that
// arrives after the restart still pairs with the client span that waited
// for it. Tempo's generator drops them; settling them all at stop, as
// Spangraph did before, turned every pair in flight into virtual or
// unpaired spans.
//
// The file is replaced atomically (pkg/atomicfile), and ends
// with a CRC-32 of everything before it, so a crash while writing leaves
// either the previous file or none, and a damaged file is refused whole.
// Layout, integers as unsigned varints unless said otherwise:
//
//	"SGPE" 1 | number of dimensions | each dimension name
//	per half edge: 1 | key (24 bytes) | deadline, start, end |
//	  weight (8 bytes, little endian) | kind | flags | service | peer | dimension values
//	0 | CRC-32 (IEEE, 4 bytes, little endian)
//
// Strings are a length and the bytes. Dimensions are matched by name, so
// that a config that adds or removes one keeps the values of the others.

// The flags byte uses flagFailed and flagRoot. A half edge's call site
// is not saved: its hash is seeded per process, so restored half edges
// settle like any other but teach the site table nothing.
const (
	pendingMagic   = "SGPE"
	pendingVersion = 1
	savedFlags     = flagFailed | flagRoot
)

// SaveFile takes every pending half edge out of the store and writes it to
// path. It returns how many were written; on error nothing was taken out.
func (p *Processor) SaveFile(path string) (int, error) {
	var n int
	err := atomicfile.Write(path, func(w io.Writer) error {
		var err error
		n, err = p.save(w)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("saving pending edges to %s: %w", path, err)
	}
	p.clear()
	return n, nil
}

// save writes the pending half edges to out, checksum last.
func (p *Processor) save(out io.Writer) (int, error) {
	h := crc32.NewIEEE()
	w := bufio.NewWriterSize(io.MultiWriter(out, h), 1<<16)
	var buf []byte
	buf = append(buf, pendingMagic...)
	buf = binary.AppendUvarint(buf, pendingVersion)
	buf = binary.AppendUvarint(buf, uint64(p.nDims))
	for _, d := range p.cfg.Dimensions {
		buf = appendString(buf, d)
	}
	n := 0
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		for j := sh.head; j != none; j = sh.edge(j).next {
			e := sh.edge(j)
			buf = append(buf, 1)
			buf = append(buf, e.key[:]...)
			buf = binary.AppendUvarint(buf, uint64(e.deadline))
			buf = binary.AppendUvarint(buf, e.start)
			buf = binary.AppendUvarint(buf, e.end)
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(e.weight))
			buf = binary.AppendUvarint(buf, uint64(e.kind))
			buf = append(buf, e.flags&savedFlags)
			buf = appendString(buf, sh.strs.str(e.service))
			buf = appendString(buf, sh.strs.str(e.peer))
			for _, id := range sh.dims(j) {
				buf = appendString(buf, sh.strs.str(id))
			}
			n++
			if len(buf) > 1<<15 {
				if _, err := w.Write(buf); err != nil {
					sh.mu.Unlock()
					return 0, err
				}
				buf = buf[:0]
			}
		}
		sh.mu.Unlock()
	}
	buf = append(buf, 0)
	if _, err := w.Write(buf); err != nil {
		return 0, err
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	_, err := out.Write(binary.LittleEndian.AppendUint32(nil, h.Sum32()))
	return n, err
}

// clear forgets every pending half edge: they were saved.
func (p *Processor) clear() {
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		for sh.head != none {
			sh.remove(sh.head)
		}
		sh.mu.Unlock()
	}
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// ErrPendingCorrupt says a saved file of pending edges is damaged.
var ErrPendingCorrupt = errors.New("pending edges file is damaged")

// RestoreFile reads the half edges saved at path back into the store,
// where they wait out the rest of their wait (those whose wait ended
// while the process was down settle at the next expiry), and removes the
// file. A missing file is not an error. A damaged file is removed too,
// and reported with ErrPendingCorrupt: nothing of it is restored.
func (p *Processor) RestoreFile(path string) (restored, dropped int, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(path)
	entries, err := p.parse(data)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	for i := range entries {
		e := &entries[i]
		sh := &p.shards[shardIndex(e.key.traceID(), p.shardBits)]
		sh.mu.Lock()
		if sh.find(&e.key) != none {
			sh.mu.Unlock()
			continue
		}
		j := sh.insert(&e.key, e.deadline)
		if j == none {
			sh.mu.Unlock()
			dropped++
			continue
		}
		sh.put(j, &e.half, e.dims)
		sh.mu.Unlock()
		restored++
	}
	return restored, dropped, nil
}

// savedHalf is a half edge read from a file, with its dimension values
// in the configured order.
type savedHalf struct {
	key      key
	deadline int64
	half
	dims []string
}

// parse checks data's checksum and decodes it, mapping the saved
// dimensions onto the configured ones by name.
func (p *Processor) parse(data []byte) ([]savedHalf, error) {
	if len(data) < len(pendingMagic)+4 || string(data[:len(pendingMagic)]) != pendingMagic {
		return nil, fmt.Errorf("%w: not a pending edges file", ErrPendingCorrupt)
	}
	body := data[:len(data)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrPendingCorrupt)
	}
	r := reader{b: body[len(pendingMagic):]}
	if v := r.uvarint(); v != pendingVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrPendingCorrupt, v, pendingVersion)
	}
	nSaved := int(r.uvarint())
	if r.err != nil || nSaved > 1<<10 {
		return nil, fmt.Errorf("%w: bad header", ErrPendingCorrupt)
	}
	// where[i] is the configured position of saved dimension i, or -1.
	where := make([]int, nSaved)
	for i := range where {
		name := r.string()
		where[i] = -1
		for j, d := range p.cfg.Dimensions {
			if d == name {
				where[i] = j
			}
		}
	}
	var out []savedHalf
	for r.err == nil {
		switch r.byte() {
		case 0:
			if len(r.b) != 0 {
				return nil, fmt.Errorf("%w: %d bytes after the end", ErrPendingCorrupt, len(r.b))
			}
			return out, nil
		case 1:
		default:
			return nil, fmt.Errorf("%w: bad record", ErrPendingCorrupt)
		}
		var e savedHalf
		copy(e.key[:], r.bytes(len(e.key)))
		e.deadline = int64(r.uvarint())
		e.start, e.end = r.uvarint(), r.uvarint()
		e.weight = math.Float64frombits(binary.LittleEndian.Uint64(r.bytes(8)))
		e.kind = otlp.SpanKind(r.uvarint())
		switch e.kind {
		case otlp.SpanKindClient, otlp.SpanKindProducer, otlp.SpanKindServer, otlp.SpanKindConsumer:
		default:
			// Only these wait, and settling counts expirations by kind.
			r.fail()
		}
		flags := r.byte()
		e.failed, e.root = flags&flagFailed != 0, flags&flagRoot != 0
		e.service, e.peer = r.string(), r.string()
		e.dims = make([]string, p.nDims)
		for i := 0; i < nSaved; i++ {
			if v := r.string(); where[i] >= 0 {
				e.dims[where[i]] = v
			}
		}
		out = append(out, e)
	}
	return nil, fmt.Errorf("%w: truncated", ErrPendingCorrupt)
}

// reader decodes the file's fields; the first error sticks and makes every
// later read return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() { r.err, r.b = ErrPendingCorrupt, nil }

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n > len(r.b) {
		r.fail()
		return make([]byte, n)
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte { return r.bytes(1)[0] }

func (r *reader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	return string(r.bytes(int(n)))
}
