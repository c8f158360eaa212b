package plugins

import (
	"encoding/json"
	"strconv"

	"nectar/chains/params"
)

// sizedBatchInputs is the number of inputs from which a batch is encoded by marshalSized.
const sizedBatchInputs = 256

// marshalSized encodes b as encoding/json does, into one buffer sized for it. Why: a
// join's message holds its inputs (50,000 keys are 4 MB), and encoding/json grows its buffer by
// doubling, then keeps it in a pool that every later encoding takes from and gives back: the
// server would hold 8 MB for good after one big join. Each call's request is encoded by
// encoding/json without its inputs (small), and the inputs are written after it.
func (b *taskBatch) marshalSized() ([]byte, error) {
	heads := make([][]byte, len(b.Run))
	size := len(`{"run":[],"cancel":[]}`) + 21*len(b.Cancel)
	for i, c := range b.Run {
		req := *c.Req
		req.Inputs = nil
		h, err := json.Marshal(&req)
		if err != nil {
			return nil, err
		}
		heads[i] = h
		size += len(`{"id":,"req":,"inputs":[]},"deadline":""`) + 20 + len(h) + len(time3339Nano)
		for _, in := range c.Req.Inputs {
			size += quotedLen(in) + 1
		}
	}
	out := make([]byte, 0, size)
	out = append(out, '{')
	if len(b.Run) > 0 {
		out = append(out, `"run":[`...)
		for i, c := range b.Run {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, `{"id":`...)
			out = strconv.AppendUint(out, c.ID, 10)
			out = append(out, `,"req":`...)
			h := heads[i]
			if len(c.Req.Inputs) == 0 {
				out = append(out, h...)
			} else {
				out = append(out, h[:len(h)-1]...) // its closing brace comes after the inputs
				out = append(out, `,"inputs":[`...)
				for j, in := range c.Req.Inputs {
					if j > 0 {
						out = append(out, ',')
					}
					out = appendQuoted(out, in)
				}
				out = append(out, "]}"...)
			}
			if !c.Deadline.IsZero() {
				d, err := c.Deadline.MarshalJSON()
				if err != nil {
					return nil, err
				}
				out = append(out, `,"deadline":`...)
				out = append(out, d...)
			}
			out = append(out, '}')
		}
		out = append(out, ']')
	}
	if len(b.Cancel) > 0 {
		if len(b.Run) > 0 {
			out = append(out, ',')
		}
		out = append(out, `"cancel":[`...)
		for i, id := range b.Cancel {
			if i > 0 {
				out = append(out, ',')
			}
			out = strconv.AppendUint(out, id, 10)
		}
		out = append(out, ']')
	}
	return append(out, '}'), nil
}

// inputs counts the inputs of b's tasks (0 if one has no request: encoding/json says null).
func (b *taskBatch) inputs() int {
	n := 0
	for _, c := range b.Run {
		if c.Req == nil {
			return 0
		}
		n += len(c.Req.Inputs)
	}
	return n
}

// time3339Nano is the longest time a deadline encodes as.
const time3339Nano = `"2006-01-02T15:04:05.999999999-07:00"`

// plainJSON says whether s encodes as itself between quotes: printable ASCII that encoding/json
// does not escape (it escapes '"', '\\', and '<', '>', '&' for HTML).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// quotedLen is the length of s encoded as a JSON string, as appendQuoted writes it.
func quotedLen(s string) int {
	if plainJSON(s) {
		return len(s) + 2
	}
	return len(params.AppendJSONString(nil, s, true)) // rare: a key is plain
}

// appendQuoted appends s encoded as a JSON string, as encoding/json encodes it.
func appendQuoted(b []byte, s string) []byte { return params.AppendJSONString(b, s, true) }
