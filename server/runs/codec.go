package runs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Task messages in a compact binary form rather than JSON: a worker decodes every task it runs,
// and a driver encodes it, so on a fan-in of small tasks JSON's reflection was a tenth of the
// server's CPU. The form is a version byte, then each field in a fixed order: unsigned varints
// for lengths and counts, signed varints for numbers, bytes for strings. Every field of
// taskJob that JSON would carry is here; TestJobMsgCodecCoversEveryField checks it.

// jobMsgVersion is the first byte of a task message; a worker refuses other versions.
const jobMsgVersion = 2

// encode appends m's binary form to b.
func (m *jobMsg) encode(b []byte) []byte {
	e := encoder{b: append(b, jobMsgVersion)}
	e.str(m.Driver)
	e.int(int64(m.Parallelism))
	e.strs(m.RunConns)
	e.str(string(m.Graph))
	e.uint(uint64(len(m.Jobs)))
	for i := range m.Jobs {
		j := &m.Jobs[i]
		e.str(j.Run)
		e.str(j.Type)
		e.int(int64(j.Index))
		e.str(j.Ref.Chain)
		e.str(j.Ref.Task)
		e.str(string(j.Ref.Params))
		e.str(j.Key)
		e.strs(j.Inputs)
		e.int(int64(j.Timeout))
		e.int(int64(j.Retry.Attempts))
		e.int(int64(j.Retry.Backoff))
		e.int(int64(j.Retry.MaxBackoff))
		e.bools(j.Isolate, j.Metrics, j.NoSync, j.FolderMade, j.Plain)
		e.strs(j.Conns)
		e.str(j.Queue)
		e.str(j.DeadRun)
		e.int(int64(j.Send))
	}
	return e.b
}

// decode reads a message encode wrote.
func (m *jobMsg) decode(b []byte) error {
	if len(b) == 0 || b[0] != jobMsgVersion {
		return errors.New("not a task message of this version")
	}
	d := decoder{b: b[1:]}
	m.Driver = d.str()
	m.Parallelism = int(d.int())
	m.RunConns = d.strs()
	if g := d.str(); g != "" {
		m.Graph = []byte(g)
	}
	n := d.count()
	if n > maxBatch { // no more than a driver sends: a corrupt count allocates nothing big
		return fmt.Errorf("a task message of %d tasks, over %d", n, maxBatch)
	}
	m.Jobs = make([]taskJob, n)
	for i := range m.Jobs {
		j := &m.Jobs[i]
		j.Run = d.str()
		j.Type = d.str()
		j.Index = int(d.int())
		j.Ref.Chain = d.str()
		j.Ref.Task = d.str()
		if p := d.str(); p != "" {
			j.Ref.Params = []byte(p)
		}
		j.Key = d.str()
		j.Inputs = d.strs()
		j.Timeout = time.Duration(d.int())
		j.Retry.Attempts = int(d.int())
		j.Retry.Backoff = time.Duration(d.int())
		j.Retry.MaxBackoff = time.Duration(d.int())
		// Plain is a fifth bit of the same byte: a worker of the version before ignores it.
		flags := d.bools(5)
		j.Isolate, j.Metrics, j.NoSync, j.FolderMade, j.Plain = flags[0], flags[1], flags[2], flags[3], flags[4]
		j.Conns = d.strs()
		j.Queue = d.str()
		j.DeadRun = d.str()
		j.Send = int(d.int())
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d bytes after the last task", len(d.b))
	}
	return nil
}

type encoder struct{ b []byte }

func (e *encoder) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) int(v int64)   { e.b = binary.AppendVarint(e.b, v) }

func (e *encoder) str(s string) {
	e.uint(uint64(len(s)))
	e.b = append(e.b, s...)
}

// strs writes a nil slice and an empty one alike: decode gives nil for both.
func (e *encoder) strs(ss []string) {
	e.uint(uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

func (e *encoder) bools(bs ...bool) {
	var v byte
	for i, b := range bs {
		if b {
			v |= 1 << i
		}
	}
	e.b = append(e.b, v)
}

// decoder reads what encoder wrote; the first error sticks and zero values follow it.
type decoder struct {
	b   []byte
	err error
}

var errTruncated = errors.New("a truncated task message")

func (d *decoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length that must fit in what is left (each element takes a byte at least),
// so a corrupt message cannot make decode allocate without bound.
func (d *decoder) count() int {
	n := d.uint()
	if n > uint64(len(d.b)) {
		if d.err == nil {
			d.err = errTruncated
		}
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.count()
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) strs() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.str()
	}
	return ss
}

func (d *decoder) bools(n int) []bool {
	bs := make([]bool, n)
	if d.err != nil || len(d.b) == 0 {
		if d.err == nil {
			d.err = errTruncated
		}
		return bs
	}
	for i := range bs {
		bs[i] = d.b[0]&(1<<i) != 0
	}
	d.b = d.b[1:]
	return bs
}
