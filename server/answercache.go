package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// answerCache keeps, for the second in which they were made, the encoded answers of the hot
// reads whose content a version names: the status of a stored run (the record object's
// version) and the POST of a task already done. Within one second the signed URLs of an answer
// are the same (their expiry is in whole seconds), so a poller's or a load's repeated reads
// are one encoded answer written again, without building it, signing its URLs or encoding its
// JSON. A new version, or the next second, makes a new answer: nothing stale outlives a
// change of the record.
type answerCache struct {
	mu      sync.Mutex
	second  int64 // the second the answers are of: a new one empties the cache
	bytes   int   // what the answers of this second hold
	answers map[string]cachedAnswer
}

type cachedAnswer struct {
	version string
	code    int
	body    []byte
}

// maxCachedBytes bounds what one second keeps, whatever the readers ask for: a page of a big
// run's tasks with their signed URLs is 50-100 KB, and its readers share it.
const maxCachedBytes = 8 << 20

func newAnswerCache() *answerCache { return &answerCache{answers: map[string]cachedAnswer{}} }

// respond answers c with the answer cached under id if it is of version and of this second,
// else with the one build makes, which it caches unless signing one of its URLs failed
// meanwhile (failures counts them: such an answer lacks a URL). An empty version, or a
// ?pretty request, is never cached.
func (a *answerCache) respond(c echo.Context, failures *atomic.Int64, id, version string, build func() (code int, msg string, data any)) error {
	if version == "" || wantsPretty(c) {
		code, msg, data := build()
		return respond(c, code, msg, data)
	}
	now := time.Now().Unix()
	a.mu.Lock()
	if a.second != now { // answers of an earlier second are never served again
		clear(a.answers)
		a.second, a.bytes = now, 0
	}
	got, ok := a.answers[id]
	a.mu.Unlock()
	if ok && got.version == version {
		return c.Blob(got.code, echo.MIMEApplicationJSON, got.body)
	}
	failed := failures.Load()
	code, msg, data := build()
	body, err := encodeAnswer(code, msg, data)
	if err != nil {
		return err
	}
	if failures.Load() == failed {
		a.mu.Lock()
		if a.second == now && a.bytes-len(a.answers[id].body)+len(body) <= maxCachedBytes {
			a.bytes += len(body) - len(a.answers[id].body) // (an answer of another version goes)
			a.answers[id] = cachedAnswer{version: version, code: code, body: body}
		}
		a.mu.Unlock()
	}
	return c.Blob(code, echo.MIMEApplicationJSON, body)
}

// wantsPretty reports whether the request asks for indented JSON (?pretty). A query that
// cannot name it is not parsed for it: the POST of a task already done parses its own (a
// catalog's), and parsing it again was a tenth of that answer's allocations.
func wantsPretty(c echo.Context) bool {
	raw := c.Request().URL.RawQuery
	if !strings.Contains(raw, "pretty") && !strings.Contains(raw, "%") {
		return false
	}
	_, pretty := c.QueryParams()["pretty"]
	return pretty
}

// encodeAnswer is the answer's JSON as respond writes it (plainJSON).
func encodeAnswer(code int, msg string, data any) ([]byte, error) {
	if data == nil {
		data = struct{}{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(envelope{Status: code, Message: msg, Data: data}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
