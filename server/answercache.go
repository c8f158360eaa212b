package server

import (
	"bytes"
	"encoding/json"
	"sync"
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
	answers map[string]cachedAnswer
}

type cachedAnswer struct {
	version string
	second  int64
	code    int
	body    []byte
}

// maxCachedAnswers bounds the cache: past it, it starts over (entries live a second anyway).
const maxCachedAnswers = 4096

func newAnswerCache() *answerCache { return &answerCache{answers: map[string]cachedAnswer{}} }

// respond answers c with the answer cached under id if it is of version and of this second,
// else with the one build makes, which it caches. An empty version, or a ?pretty request,
// is never cached.
func (a *answerCache) respond(c echo.Context, id, version string, build func() (code int, msg string, data any)) error {
	if _, pretty := c.QueryParams()["pretty"]; version == "" || pretty {
		code, msg, data := build()
		return respond(c, code, msg, data)
	}
	now := time.Now().Unix()
	a.mu.Lock()
	got, ok := a.answers[id]
	a.mu.Unlock()
	if ok && got.version == version && got.second == now {
		return c.Blob(got.code, echo.MIMEApplicationJSON, got.body)
	}
	code, msg, data := build()
	body, err := encodeAnswer(code, msg, data)
	if err != nil {
		return err
	}
	a.mu.Lock()
	if len(a.answers) >= maxCachedAnswers {
		clear(a.answers)
	}
	a.answers[id] = cachedAnswer{version: version, second: now, code: code, body: body}
	a.mu.Unlock()
	return c.Blob(code, echo.MIMEApplicationJSON, body)
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
