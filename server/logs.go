package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"nectar/server/catalog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"nectar/chains/params"
	"nectar/server/runs"
	"nectar/server/signing"
	"nectar/targets"
)

// liveLogURL is the signed URL of a task's log that works while the task runs: with
// ?offset=N it returns what was written after byte N; with ?follow=true it streams until the
// task ends. After the end it serves the stored log, so one URL covers the task's whole life.
//
// worker names the worker running the task ("" if none yet): an API server where the task does
// not run asks that worker for the log. It is a routing hint, outside the signature: a wrong
// one finds no live log, and the stored one is served.
func (s *Server) liveLogURL(taskKey, worker string) string {
	exp, sig := s.signer.Sign(signing.PurposeLog, taskKey, s.cfg.URLExpiry)
	v := url.Values{"task": {taskKey}, "expires": {exp}, "signature": {sig}}
	if worker != "" {
		v.Set("worker", worker)
	}
	return s.base() + "/api/chainlog?" + v.Encode()
}

// followPoll is how often a followed log is checked for new lines.
const followPoll = 100 * time.Millisecond

func (s *Server) taskLog(c echo.Context) error {
	q, err := catalog.ParseRawQuery(c.Request().URL.RawQuery) // (a pair it cannot read is not dropped)
	if err != nil {
		return err
	}
	key := q.Get("task")
	if err := s.signer.Verify(signing.PurposeLog, key, q.Get("expires"), q.Get("signature")); err != nil {
		return fmt.Errorf("log URL for %q: %w", clip(key), err)
	}
	if _, err := parseStatusChain(key + "/" + runs.OutName); err != nil {
		return &params.Error{Param: "task", Value: key, Reason: "want chains/<type>/<chain>/<task>/<md5>"}
	}
	var offset int64
	if v := q.Get("offset"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return &params.Error{Param: "offset", Value: v, Reason: "is not a byte offset (0 or more)"}
		}
		offset = n
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := params.ParseBool("follow", v)
		if err != nil {
			return err
		}
		follow = b
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	if l, ok := s.runs.Live(key); ok {
		// Opened now, the file stays readable even when it is committed (renamed or uploaded
		// and removed) while we read it. The plugin creates it at the task's first line: until
		// then the log is empty (and a follower waits for it, or for the task's end).
		f, err := openWhenCreated(c.Request().Context(), l, follow)
		switch {
		case err == nil:
			defer f.Close()
			return s.streamLiveLog(c, f, offset, follow, l.Done)
		case errors.Is(err, os.ErrNotExist) && !follow:
			select {
			case <-l.Done: // finished meanwhile: the stored log below is complete
			default:
				h.Set("X-Log-Complete", "false")
				h.Set("X-Next-Offset", strconv.FormatInt(offset, 10))
				return c.NoContent(http.StatusOK)
			}
		}
	}
	if worker := q.Get("worker"); worker != "" && s.queue != nil {
		chunk, err := s.runs.RemoteLog(c.Request().Context(), worker, key, offset)
		if errors.Is(err, runs.ErrBadWorkerID) {
			return &params.Error{Param: "worker", Value: worker, Reason: "is not a worker id"}
		}
		if err != nil {
			return err
		}
		if chunk.Live {
			return s.streamRemoteLog(c, worker, key, offset, follow, chunk)
		}
	}
	return s.storedLog(c, key, offset)
}

// storedLog serves task key's committed log from offset on. A task that is done and wrote no
// log has none stored (unless it was its run's root): its log is complete, and empty.
func (s *Server) storedLog(c echo.Context, key string, offset int64) error {
	h := c.Response().Header()
	ctx := c.Request().Context()
	// The key may hold a log that is not this task's to show: an earlier failure's, beside an
	// out that says it has none (runs.LogToShow).
	show, err := runs.LogToShow(ctx, s.store, key)
	if err != nil {
		return fmt.Errorf("looking for the out and log of %s: %w", key, targets.Unavailable(err))
	}
	noLog := func() error { // done, and no log to show: complete, and empty
		h.Set("X-Log-Complete", "true")
		h.Set("X-Next-Offset", strconv.FormatInt(offset, 10))
		return c.NoContent(http.StatusOK)
	}
	if !show {
		return noLog()
	}
	rc, err := s.store.Get(ctx, key+"/"+runs.LogName)
	if errors.Is(err, targets.ErrNotExist) {
		done, oerr := targets.Exists(ctx, s.store, key+"/"+runs.OutName)
		if oerr != nil {
			return fmt.Errorf("looking for the out of %s: %w", key, targets.Unavailable(oerr))
		}
		if !done {
			return newError(err, "no log for task "+key+" (it has not run)")
		}
		return noLog()
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, offset); err != nil && err != io.EOF {
		return err
	}
	h.Set("X-Log-Complete", "true")
	c.Response().WriteHeader(http.StatusOK)
	_, err = io.Copy(c.Response(), rc)
	return err
}

// streamRemoteLog serves a live log held by another process's worker, from its first chunk
// on: one chunk, or (following) chunk after chunk until the task ends. When the worker no
// longer holds it, the rest comes from the store, where the log then is.
func (s *Server) streamRemoteLog(c echo.Context, worker, key string, offset int64, follow bool, chunk runs.LogChunk) error {
	w := c.Response()
	if !follow {
		w.Header().Set("X-Log-Complete", strconv.FormatBool(chunk.Complete))
		w.Header().Set("X-Next-Offset", strconv.FormatInt(offset+int64(len(chunk.Data)), 10))
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(chunk.Data)
		return err
	}
	w.WriteHeader(http.StatusOK)
	ctx := c.Request().Context()
	for {
		if _, err := w.Write(chunk.Data); err != nil {
			return err
		}
		w.Flush()
		offset += int64(len(chunk.Data))
		if chunk.Complete {
			return nil
		}
		if len(chunk.Data) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(followPoll):
			}
		}
		var err error
		if chunk, err = s.runs.RemoteLog(ctx, worker, key, offset); err != nil {
			return err // the answer has begun: the client sees it cut short
		}
		if !chunk.Live { // committed meanwhile: the rest is in the store
			return s.copyStoredFrom(c, key, offset)
		}
	}
}

// copyStoredFrom appends the stored log of key from offset to an answer already begun. None
// stored: the task wrote no log (what was streamed is all there is).
func (s *Server) copyStoredFrom(c echo.Context, key string, offset int64) error {
	ctx := c.Request().Context()
	if show, err := runs.LogToShow(ctx, s.store, key); err != nil || !show {
		return err // (a log the key holds before an out that says it has none is another run's)
	}
	rc, err := s.store.Get(ctx, key+"/"+runs.LogName)
	if errors.Is(err, targets.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, offset); err != nil && err != io.EOF {
		return err
	}
	_, err = io.Copy(c.Response(), rc)
	return err
}

// openWhenCreated opens a live log; following, it waits for the file to appear.
func openWhenCreated(ctx context.Context, l *runs.LiveLog, follow bool) (*os.File, error) {
	for {
		f, err := os.Open(l.Path)
		if err == nil || !errors.Is(err, os.ErrNotExist) || !follow {
			return f, err
		}
		select {
		case <-l.Done:
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(followPoll / 4):
		}
	}
}

func (s *Server) streamLiveLog(c echo.Context, f *os.File, offset int64, follow bool, done <-chan struct{}) error {
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	w := c.Response()
	if !follow {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		n := max(fi.Size()-offset, 0)
		w.Header().Set("X-Log-Complete", "false")
		w.Header().Set("X-Next-Offset", strconv.FormatInt(offset+n, 10))
		w.WriteHeader(http.StatusOK)
		_, err = io.CopyN(w, f, n)
		return err
	}
	w.WriteHeader(http.StatusOK)
	ctx := c.Request().Context()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		w.Flush()
		select {
		case <-done: // complete: send what was appended at the end, then stop
			_, err := io.Copy(w, f)
			w.Flush()
			return err
		case <-ctx.Done():
			return nil
		case <-time.After(followPoll):
		}
	}
}

// isLive is true for task states whose log is still being written.
func isLive(st runs.Status) bool { return st == runs.Running }
