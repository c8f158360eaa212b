package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sync/errgroup"

	"nectar/chains"
	"nectar/chains/params"
	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/server/runs"
	"nectar/server/signing"
	"nectar/targets"
)

// ---- catalog ----

type taskInfo struct {
	*catalog.Task
	URL string `json:"url"`
}

func taskURL(t *catalog.Task) string {
	return "/api/chains/" + t.Type + "/" + t.Chain + "/" + t.Name
}

func (s *Server) listTypes(c echo.Context) error {
	type typeInfo struct {
		Type   string   `json:"type"`
		URL    string   `json:"url"`
		Chains []string `json:"chains"`
	}
	out := []typeInfo{}
	for _, t := range s.catalog.Types() {
		out = append(out, typeInfo{Type: t, URL: "/api/chains/" + t, Chains: s.catalog.Chains(t)})
	}
	return respond(c, http.StatusOK, fmt.Sprintf("%d chain types", len(out)), map[string]any{"types": out})
}

func (s *Server) listChains(c echo.Context) error {
	typ := c.Param("type")
	chainNames := s.catalog.Chains(typ)
	if len(chainNames) == 0 {
		return unknownType(typ)
	}
	type chainInfo struct {
		Chain string   `json:"chain"`
		URL   string   `json:"url"`
		Tasks []string `json:"tasks"`
	}
	out := []chainInfo{}
	for _, ch := range chainNames {
		info := chainInfo{Chain: ch, URL: "/api/chains/" + typ + "/" + ch}
		for _, t := range s.catalog.ChainTasks(typ, ch) {
			info.Tasks = append(info.Tasks, t.Name)
		}
		out = append(out, info)
	}
	return respond(c, http.StatusOK, fmt.Sprintf("%d chains in %s", len(out), typ), map[string]any{"type": typ, "chains": out})
}

func (s *Server) listTasks(c echo.Context) error {
	typ, ch := c.Param("type"), c.Param("chain")
	if err := s.checkChain(typ, ch); err != nil {
		return err
	}
	out := []taskInfo{}
	for _, t := range s.catalog.ChainTasks(typ, ch) {
		out = append(out, taskInfo{t, taskURL(t)})
	}
	return respond(c, http.StatusOK, fmt.Sprintf("%d tasks in %s/%s", len(out), typ, ch), map[string]any{"type": typ, "chain": ch, "tasks": out})
}

func (s *Server) describeTask(c echo.Context) error {
	t, err := s.findTask(c.Param("type"), c.Param("chain"), c.Param("task"))
	if err != nil {
		return err
	}
	return respond(c, http.StatusOK, t.Name, taskInfo{t, taskURL(t)})
}

// unknownType is the answer for a chain type the catalog does not have (names from the path
// are clipped; those known to the catalog are short).
func unknownType(typ string) error {
	return newError(ErrUnknownTask, fmt.Sprintf("unknown chain type %q (see /api/chains)", clip(typ)))
}

func (s *Server) checkChain(typ, ch string) error {
	if len(s.catalog.Chains(typ)) == 0 {
		return unknownType(typ)
	}
	if len(s.catalog.ChainTasks(typ, ch)) == 0 {
		return newError(ErrUnknownTask, fmt.Sprintf("unknown chain %q in type %q (see /api/chains/%s)", clip(ch), typ, typ))
	}
	return nil
}

func (s *Server) findTask(typ, ch, name string) (*catalog.Task, error) {
	if err := s.checkChain(typ, ch); err != nil {
		return nil, err
	}
	t, ok := s.catalog.Task(typ, ch, name)
	if !ok {
		return nil, newError(ErrUnknownTask, fmt.Sprintf("unknown task %q in %s/%s (see /api/chains/%s/%s)", clip(name), typ, ch, typ, ch))
	}
	return t, nil
}

func (s *Server) unknownTask(c echo.Context) error {
	_, err := s.findTask(c.Param("type"), c.Param("chain"), c.Param("task"))
	if err == nil { // cannot happen: every known task has its own route
		err = newError(ErrUnknownTask, "unknown task")
	}
	return err
}

// ---- runs ----

// reservedQuery are the query parameters the API reads itself on a POST.
var reservedQuery = []string{"wait", "force"}

// runData is the data of POST and status answers.
type runData struct {
	Key         string          `json:"key"`
	JobStatus   *runs.Status    `json:"job_status"`
	Type        string          `json:"type,omitempty"`
	Chain       string          `json:"chain,omitempty"`
	Task        string          `json:"task,omitempty"`
	Params      json.RawMessage `json:"params,omitempty"`
	Error       *string         `json:"error"`
	StatusURL   string          `json:"status_url,omitempty"`
	ResourceURL string          `json:"resource_url,omitempty"`
	LogURL      string          `json:"log_url,omitempty"`
	ParamsURL   string          `json:"params_url,omitempty"`
	ExpiresIn   int             `json:"expires_in"`
	SubmittedAt *time.Time      `json:"submitted_at,omitempty"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
	// Tasks lists runs.DefaultTaskPage tasks (tasks_limit: up to runs.MaxTaskPage) from
	// TasksFrom; TasksNextURL (the status URL with tasks_from set) lists the next ones, and
	// FailedTasks and RunningTasks the first failed and running tasks outside this page.
	// TaskCounts counts them all.
	TaskCounts   *runs.TaskCounts `json:"task_counts,omitempty"`
	Tasks        []taskData       `json:"tasks,omitempty"`
	TasksFrom    int              `json:"tasks_from,omitempty"`
	TasksNextURL string           `json:"tasks_next_url,omitempty"`
	FailedTasks  []taskData       `json:"failed_tasks,omitempty"`
	RunningTasks []taskData       `json:"running_tasks,omitempty"`
	Metrics      *runs.Metrics    `json:"metrics,omitempty"`
	MetricsURL   string           `json:"metrics_url,omitempty"`
}

type taskData struct {
	Index int `json:"index"` // its position in the run's tasks (what requires lists)
	runs.TaskState
	LogURL    string         `json:"log_url,omitempty"`
	Artifacts []artifactData `json:"artifacts,omitempty"` // the record's, with their URLs
	// ArtifactsNotListed counts the artifacts of a task past the answer's budget
	// (maxAnswerArtifacts), which ArtifactsURL, a status URL of a page of this task alone, lists.
	ArtifactsNotListed int    `json:"artifacts_not_listed,omitempty"`
	ArtifactsURL       string `json:"artifacts_url,omitempty"`
}

// maxAnswerArtifacts bounds the artifacts one status answer lists, each with a signed URL: a
// page of 1,000 tasks of 1,000 artifacts each would be a million URLs. A task always fits on a
// page of its own (chains.MaxArtifacts is no more).
const maxAnswerArtifacts = chains.MaxArtifacts

// artifactData is an artifact in a status answer: its signed URL, and its published path's.
type artifactData struct {
	runs.Artifact
	URL          string `json:"url,omitempty"`
	PublishedURL string `json:"published_url,omitempty"`
}

func (s *Server) submit(t *catalog.Task) echo.HandlerFunc {
	return func(c echo.Context) error {
		q, err := requestParams(c, t)
		if err != nil {
			return err
		}
		canon, err := t.ParseQuery(q, reservedQuery...)
		if err != nil {
			return err
		}
		wait, err := s.parseWait(q)
		if err != nil {
			return err
		}
		force, err := params.QueryBool(q, "force", "false", false)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		l, joined, done, err := s.launch(ctx, t, canon, force, triggerOf(c.Request()))
		if err != nil {
			return err
		}
		if done { // the same answer for every POST of the key, but for its URLs' times
			version := "done"
			if l.logEmpty {
				version = "done/nolog"
			}
			return s.answers.respond(c, &s.presignFailures, "done "+l.Key, version, func() (int, string, any) {
				rec := runs.Record{Key: l.Key, Status: runs.Done, Type: t.Type, Chain: t.Chain, Task: t.Name, Params: canon}
				if l.logEmpty {
					rec.Tasks = []runs.TaskState{{Chain: t.Chain, Task: t.Name, Key: l.Key, Status: runs.Done, Cached: true, LogEmpty: true}}
				}
				return http.StatusOK, "already done", s.runData(context.WithoutCancel(ctx), rec)
			})
		}
		if !joined {
			// A graph over NECTAR_MAX_TASKS is refused here, with a 400, not accepted and
			// failed later (unless the run waits in the queue: then its status says so).
			if err := l.Run.AwaitPlan(ctx); err != nil {
				return err
			}
		}
		if wait > 0 {
			timer := time.NewTimer(wait)
			defer timer.Stop()
			select {
			case <-l.Run.Done():
			case <-timer.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return s.respondRun(c, l.Run, joined)
	}
}

// launched is what launch did: started or joined Run, or found Key done.
type launched struct {
	Key      string
	logEmpty bool      // done, and its log is not stored (doneWithParams)
	Run      *runs.Run // nil when the key was done
}

// launch is the one way a run starts (a POST, a schedule's tick, a backfill): a key whose out
// exists answers done at once and starts nothing (unless force); a key running here is joined;
// otherwise a run is submitted, which joins a run of the key on another server.
func (s *Server) launch(ctx context.Context, t *catalog.Task, canon []byte, force bool, trigger string) (l launched, joined, done bool, err error) {
	key := runs.Key(t.Type, t.Chain, t.Name, canon)
	l.Key = key
	r, running := s.runs.Active(key)
	if running {
		select {
		case <-r.Done(): // ended a moment ago and storing its record: its out decides
			running = false
		default:
		}
	}
	if force {
		s.done.forget(key) // the rerun may store a log where there was none
	}
	if !running && !force {
		done, l.logEmpty = s.done.hit(key)
		if !done {
			if done, l.logEmpty, err = s.doneWithParams(ctx, key, canon); err != nil {
				return l, false, false, err
			}
			if done {
				s.done.add(key, l.logEmpty)
			}
		}
		if done { // idempotency: answer at once, start nothing
			s.countHit(key)
			return l, false, true, nil
		}
	}
	if !running {
		if err := s.queueReachable(); err != nil { // a new run would wait on it, unanswered
			return l, false, false, err
		}
	}
	l.Run, joined, err = s.runs.Submit(runs.Spec{Type: t.Type, Chain: t.Chain, Task: t.Name, Params: canon, Force: force, Trigger: trigger})
	if err != nil {
		return l, false, false, err
	}
	if joined {
		s.countHit(key)
	}
	return l, joined, false, nil
}

// doneWithParams reports whether key's out exists and, if so, makes sure its params are
// stored too: a task that ran only as another's dependency has its params in that run's
// record, and the answer of this POST hands out a params_url. It also reports whether the
// log is missing: such a task stores none if it wrote none, and the answer then links none.
func (s *Server) doneWithParams(ctx context.Context, key string, canon []byte) (done, logEmpty bool, err error) {
	var hasParams, hasLog bool
	// The out says whether a log goes with it where the store keeps metadata; else the log
	// is looked for (runs.DoneLog).
	outAndLog := func() (err error) { done, hasLog, err = runs.DoneLog(ctx, s.store, key); return err }
	paramsExist := func() (err error) { hasParams, err = targets.Exists(ctx, s.store, key+"/"+runs.ParamsName); return err }
	if _, local := s.store.(targets.LocalPather); local {
		// A stat each, microseconds: the params matter only if the out exists.
		if err = outAndLog(); err == nil && done {
			err = paramsExist()
		}
	} else { // on S3 each is a round trip: side by side
		var g errgroup.Group
		g.Go(outAndLog)
		g.Go(paramsExist)
		err = g.Wait()
	}
	if err != nil {
		return false, false, fmt.Errorf("looking for the out of %s: %w", key, targets.Unavailable(err))
	}
	if done && !hasParams {
		if err := s.runs.PutParams(ctx, key, canon); err != nil {
			return false, false, fmt.Errorf("writing the params of %s: %w", key, targets.Unavailable(err))
		}
	}
	return done, done && !hasLog, nil
}

// respondRun answers a POST from one view of its run, so that code, message and job_status
// agree: a run may end between Submit and the answer (a joiner often arrives as it does), and
// then the answer is its final status, not "in progress".
func (s *Server) respondRun(c echo.Context, r *runs.Run, joined bool) error {
	ctx := c.Request().Context()
	rec, page := r.View(0, runs.DefaultTaskPage)
	d := s.runDataPage(ctx, rec, page)
	switch {
	case rec.Status.Final():
		return respond(c, http.StatusOK, "run "+strings.ToLower(string(rec.Status)), d)
	case !joined:
		return respond(c, http.StatusAccepted, "run started", d)
	case rec.Status == runs.Pending:
		return respond(c, http.StatusAccepted, "joined the run already waiting to start", d)
	}
	return respond(c, http.StatusAccepted, "joined the run already in progress", d)
}

// cancelByKey answers DELETE /api/chains/<type>/<chain>/<Task>?params: cancel that key's run.
func (s *Server) cancelByKey(t *catalog.Task) echo.HandlerFunc {
	return func(c echo.Context) error {
		q, err := requestParams(c, t)
		if err != nil {
			return err
		}
		canon, err := t.ParseQuery(q)
		if err != nil {
			return err
		}
		return s.cancel(c, runs.Key(t.Type, t.Chain, t.Name, canon))
	}
}

// cancel stops key's run and answers with its final record (CANCELLED) once it has stopped.
func (s *Server) cancel(c echo.Context, key string) error {
	r, err := s.runs.Cancel(key, "cancelled by DELETE from "+c.RealIP())
	if errors.Is(err, runs.ErrNotRunning) {
		return &answerError{kind: err, msg: fmt.Sprintf("%v: %s", err, key), data: map[string]any{"key": key}}
	}
	if errors.Is(err, runs.ErrCancelRequested) {
		return s.awaitRemoteCancel(c, key)
	}
	if err != nil {
		return err
	}
	select {
	case <-r.Done():
	case <-time.After(5 * time.Second):
	}
	rec, page := r.View(0, runs.DefaultTaskPage) // one view: the message and job_status must agree
	if !rec.Status.Final() {
		return respond(c, http.StatusAccepted, "cancelling", s.runDataPage(c.Request().Context(), rec, page))
	}
	return respond(c, http.StatusOK, "run "+strings.ToLower(string(rec.Status)), s.runDataPage(c.Request().Context(), rec, page))
}

// awaitRemoteCancel answers the cancel of a run another server executes: that server stops it
// within its lease's poll, and stores the final record, which this one reads (for up to 5 s,
// as a local cancel waits; then 202, still cancelling).
func (s *Server) awaitRemoteCancel(c echo.Context, key string) error {
	ctx := c.Request().Context()
	deadline := time.Now().Add(5 * time.Second)
	for {
		view, err := s.runs.Status(ctx, key)
		if err != nil {
			return err
		}
		rec, page := view.Page(0, runs.DefaultTaskPage)
		if rec.Status.Final() {
			return respond(c, http.StatusOK, "run "+strings.ToLower(string(rec.Status)), s.runDataPage(ctx, rec, page))
		}
		if time.Now().After(deadline) {
			return respond(c, http.StatusAccepted, "cancelling: the server that runs it stops it", s.runDataPage(ctx, rec, page))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Server) parseWait(q url.Values) (time.Duration, error) {
	d, err := params.QueryDuration(q, "wait", "0s", false, false)
	if err != nil {
		return 0, err
	}
	if d > s.cfg.MaxWait {
		return 0, &params.Error{Param: "wait", Value: q.Get("wait"), Reason: fmt.Sprintf("must be between 0s and %s", s.cfg.MaxWait)}
	}
	return d, nil
}

// runData turns a record into the API's answer, with its first page of tasks.
func (s *Server) runData(ctx context.Context, rec runs.Record) runData {
	return s.runDataPage(ctx, rec.Header(), rec.Page(0, runs.DefaultTaskPage))
}

// runDataPage turns a record (without tasks) and a page of its tasks into the API's answer,
// with signed URLs for what exists.
func (s *Server) runDataPage(ctx context.Context, rec runs.Record, page runs.TaskPage) runData {
	st := rec.Status
	d := runData{
		Key: rec.Key, JobStatus: &st, Type: rec.Type, Chain: rec.Chain, Task: rec.Task, Params: rec.Params,
		StatusURL: s.statusURL(rec.Key), ExpiresIn: int(s.cfg.URLExpiry.Seconds()),
		StartedAt: rec.StartedAt, FinishedAt: rec.FinishedAt,
	}
	if !rec.SubmittedAt.IsZero() {
		d.SubmittedAt = &rec.SubmittedAt
	}
	if rec.Error != "" {
		d.Error = &rec.Error
	}
	if st == runs.Done {
		d.ResourceURL = s.presign(ctx, rec.Key+"/"+runs.OutName)
	}
	// Signed only for objects that exist: a run writes its params when it starts (the done
	// answer of a POST writes them if a run of another key made the out); the root's log
	// exists once it finished an attempt, and when its out does unless it was made as another
	// run's dependency that wrote no log (LogEmpty).
	if st != runs.Pending && (rec.RunID != "" || rec.Params != nil) && !rec.ParamsNotStored {
		d.ParamsURL = s.presign(ctx, rec.Key+"/"+runs.ParamsName)
	}
	rootHasLog := page.From == 0 && len(page.Tasks) > 0 && page.Tasks[0].HasLog()
	if (st == runs.Done && !page.RootLogEmpty) || (st.Final() && rootHasLog) {
		d.LogURL = s.presign(ctx, rec.Key+"/"+runs.LogName)
	}
	if d.Metrics = rec.Metrics; d.Metrics != nil && st.Final() && !rec.MetricsNotStored {
		d.MetricsURL = s.presign(ctx, rec.Key+"/"+runs.MetricsName)
	}
	if page.Total > 0 {
		d.TaskCounts = &page.Counts
		d.TasksFrom = page.From
	}
	artifacts := maxAnswerArtifacts // the answer's budget, spent in the order tasks are listed
	for i, t := range page.Tasks {
		td := s.taskData(ctx, rec.Key, page.From+i, t, &artifacts)
		if t.Key == rec.Key && isLive(t.Status) {
			d.LogURL = td.LogURL
		}
		d.Tasks = append(d.Tasks, td)
	}
	for _, t := range page.Failed {
		d.FailedTasks = append(d.FailedTasks, s.taskData(ctx, rec.Key, t.Index, t.TaskState, &artifacts))
	}
	for _, t := range page.Running {
		d.RunningTasks = append(d.RunningTasks, s.taskData(ctx, rec.Key, t.Index, t.TaskState, &artifacts))
	}
	if next := page.From + len(page.Tasks); next < page.Total {
		d.TasksNextURL = s.statusURL(rec.Key) + fmt.Sprintf("&tasks_from=%d&tasks_limit=%d", next, max(len(page.Tasks), 1))
	}
	return d
}

// taskData is task t (at index i of the run of key runKey) in an answer, with the URLs of its
// log and artifacts: those, if they fit in what is left of the answer's budget of artifacts,
// else their number and the URL of a page of this task alone.
func (s *Server) taskData(ctx context.Context, runKey string, i int, t runs.TaskState, artifacts *int) taskData {
	td := taskData{Index: i, TaskState: t}
	td.TaskState.Artifacts = nil // (listed below, with their URLs)
	switch n := len(t.Artifacts); {
	case n <= *artifacts:
		*artifacts -= n
	case *artifacts == maxAnswerArtifacts: // alone, and still too many (a record older than the bound)
		td.ArtifactsNotListed = n - *artifacts
		t.Artifacts, *artifacts = t.Artifacts[:*artifacts], 0
	default:
		td.ArtifactsNotListed = n
		td.ArtifactsURL = s.statusURL(runKey) + fmt.Sprintf("&tasks_from=%d&tasks_limit=1", i)
		t.Artifacts = nil
	}
	switch {
	case isLive(t.Status):
		td.LogURL = s.liveLogURL(t.Key, t.Worker)
	case t.HasLog():
		td.LogURL = s.presign(ctx, t.Key+"/"+runs.LogName)
	}
	for _, a := range t.Artifacts {
		ad := artifactData{Artifact: a, URL: s.presign(ctx, t.Key+"/"+runs.ArtifactsDir+"/"+a.Name)}
		if a.Published != "" {
			ad.PublishedURL = s.presign(ctx, a.Published)
		}
		td.Artifacts = append(td.Artifacts, ad)
	}
	return td
}

func (s *Server) presign(ctx context.Context, key string) string {
	p, ok := s.store.(targets.Presigner)
	if !ok {
		return ""
	}
	var u string
	var err error
	if tp, ok := s.store.(targets.TypedPresigner); ok && isArtifact(key) {
		// A bucket serves an object as stored (octet-stream): the URL names what it is.
		u, err = tp.PresignGetAs(ctx, key, s.cfg.URLExpiry, runs.ContentType(key))
	} else {
		u, err = p.PresignGet(ctx, key, s.cfg.URLExpiry)
	}
	if err != nil {
		s.presignFailures.Add(1) // an answer missing this URL is not cached (answercache.go)
		s.log.Warn("presigning", "key", key, "err", err)
		return ""
	}
	return u
}

// status answers GET /api/chainstatus?chain=<key>/out&expires=&signature=.
func (s *Server) status(c echo.Context) error {
	q, err := catalog.ParseRawQuery(c.Request().URL.RawQuery) // (a pair it cannot read is not dropped)
	if err != nil {
		return err
	}
	chain := q.Get("chain")
	if chain == "" {
		return &params.Error{Param: "chain", Reason: "is required (use the status_url a POST returned)"}
	}
	if err := s.signer.Verify(signing.PurposeStatus, chain, q.Get("expires"), q.Get("signature")); err != nil {
		return fmt.Errorf("status URL for %q: %w", clip(chain), err)
	}
	key, err := parseStatusChain(chain)
	if err != nil {
		return err
	}
	if c.Request().Method == http.MethodDelete {
		return s.cancel(c, key)
	}
	from, err := queryRange(q, "tasks_from", 0, 0, math.MaxInt32)
	if err != nil {
		return err
	}
	limit, err := queryRange(q, "tasks_limit", runs.DefaultTaskPage, 1, runs.MaxTaskPage)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	view, err := s.runs.Status(ctx, key)
	if s.backfills.waiting(key) && errors.Is(err, runs.ErrUnknownKey) {
		pending := runs.Record{Key: key, Status: runs.Pending}
		return respond(c, http.StatusOK, "pending: a backfill starts it in turn", s.runDataPage(ctx, pending, pending.Page(0, 1)))
	}
	if errors.Is(err, runs.ErrUnknownKey) {
		return &answerError{kind: err, msg: "no run, record or output for key " + key,
			data: map[string]any{"key": key, "job_status": nil}}
	}
	if err != nil {
		return err
	}
	return s.answers.respond(c, &s.presignFailures, "status "+key+" "+strconv.Itoa(from)+" "+strconv.Itoa(limit), view.Version, func() (int, string, any) {
		rec, page := view.Page(from, limit)
		// Not this request's context: the answer may serve others (a client that hangs up
		// must not cost them a URL).
		return http.StatusOK, strings.ToLower(string(rec.Status)), s.runDataPage(context.WithoutCancel(ctx), rec, page)
	})
}

// queryRange reads the whole number name (def when absent) and checks it is in [lo, hi].
func queryRange(q url.Values, name string, def, lo, hi int) (int, error) {
	n, err := params.QueryInt(q, name, strconv.Itoa(def), false)
	if err != nil {
		return 0, err
	}
	if n < int64(lo) || n > int64(hi) {
		return 0, &params.Error{Param: name, Value: q.Get(name), Reason: fmt.Sprintf("must be between %d and %d", lo, hi)}
	}
	return int(n), nil
}

// parseStatusChain checks that chain is chains/<type>/<chain>/<task>/<md5>/out and returns the key.
func parseStatusChain(chain string) (string, error) {
	bad := func(why string) error {
		return &params.Error{Param: "chain", Value: chain, Reason: why}
	}
	if err := targets.CheckKey(chain); err != nil {
		return "", bad("is not a clean relative path")
	}
	// Six segments (counted, not split: every status read parses one).
	key, isOut := strings.CutSuffix(chain, "/"+runs.OutName)
	if strings.Count(chain, "/") != 5 || !strings.HasPrefix(chain, "chains/") || !isOut {
		return "", bad("want chains/<type>/<chain>/<task>/<md5>/out")
	}
	if md5 := key[strings.LastIndexByte(key, '/')+1:]; len(md5) != 32 || strings.Trim(md5, "0123456789abcdef") != "" {
		return "", bad("has no valid md5 segment")
	}
	return key, nil
}

// isArtifact reports whether key is a task's artifact or a published one.
func isArtifact(key string) bool {
	return strings.Contains(key, "/"+runs.ArtifactsDir+"/") || !strings.HasPrefix(key, "chains/")
}

// artifactCSP confines a served artifact: sandboxed (no cookies, no same-origin access), no
// requests anywhere, inline styles and data: images allowed (a self-contained report).
const artifactCSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"

// download serves a local store object behind a signed URL.
func (s *Server) download(c echo.Context) error {
	key := c.Param("*")
	q := c.QueryParams()
	if err := s.signer.Verify(signing.PurposeDownload, key, q.Get("expires"), q.Get("signature")); err != nil {
		return fmt.Errorf("download URL for %q: %w", clip(key), err)
	}
	// The signature is the capability; this is defence in depth: task files and published
	// artifacts, never the store's own files (.signing-key) or the schedules' state.
	if err := checkSourcePath(key); err != nil || strings.HasPrefix(key, "schedules/") {
		return newError(targets.ErrBadKey, fmt.Sprintf("download path %q is not a task's file or a published artifact", clip(key)))
	}
	rc, err := s.store.Get(c.Request().Context(), key)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := c.Response().Header()
	switch path.Base(key) {
	case runs.LogName:
		h.Set(echo.HeaderContentType, "text/plain; charset=utf-8")
	case runs.ParamsName, runs.RecordName, runs.MetricsName:
		h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	default:
		if isArtifact(key) {
			h.Set(echo.HeaderContentType, runs.ContentType(key)) // as its name says
		}
	}
	// Whatever a task wrote (an out, an artifact, a log) is served in a sandbox (a unique
	// origin, no script, no requests), so an HTML file cannot act for the UI's user.
	h.Set("Content-Security-Policy", artifactCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "private, max-age=60")
	if f, ok := rc.(*os.File); ok {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		http.ServeContent(c.Response(), c.Request(), "", fi.ModTime(), f)
		return nil
	}
	if h.Get(echo.HeaderContentType) == "" {
		h.Set(echo.HeaderContentType, echo.MIMEOctetStream)
	}
	c.Response().WriteHeader(http.StatusOK)
	_, err = io.Copy(c.Response(), rc)
	return err
}

// TriggerHeader lets the web UI mark the runs it starts (the history shows how a run began);
// any other value, or none, is an API call.
const TriggerHeader = "X-Nectar-Trigger"

func triggerOf(r *http.Request) string {
	if r.Header.Get(TriggerHeader) == history.TriggerUI {
		return history.TriggerUI
	}
	return history.TriggerAPI
}

// countHit counts a POST that joined a run or found its out done on the key's latest run in the
// history (a map update; the index writes the sums in batches).
func (s *Server) countHit(key string) {
	if s.history != nil {
		s.history.Hit(key)
	}
}

// ErrUnsupportedBody is a request body the API does not read (415): parameters come in the query
// or as a JSON object.
var ErrUnsupportedBody = errors.New("unsupported request body")

// requestParams are a request's parameters: its query, parsed strictly (a pair Go would drop
// is an error, never a silent default), and the JSON object of its body (Content-Type:
// application/json), a name in both being an error. Both give the same key for the same values.
func requestParams(c echo.Context, t *catalog.Task) (url.Values, error) {
	req := c.Request()
	q, err := catalog.ParseRawQuery(req.URL.RawQuery)
	if err != nil {
		return nil, err
	}
	if req.ContentLength == 0 { // no body (a chunked one has length -1): no read, no buffer
		return q, nil
	}
	body, err := io.ReadAll(req.Body) // bounded by the body limit: over it, a 413
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return q, nil
	}
	ctype, _, _ := strings.Cut(req.Header.Get(echo.HeaderContentType), ";")
	if strings.TrimSpace(strings.ToLower(ctype)) != echo.MIMEApplicationJSON {
		return nil, newError(ErrUnsupportedBody, fmt.Sprintf("a body of type %q is not read: send the parameters in the query or as a JSON object with Content-Type: application/json", clip(ctype)))
	}
	fromBody, err := t.ParseJSONBody(body, q)
	if err != nil {
		return nil, err
	}
	for k, v := range fromBody {
		q[k] = v
	}
	return q, nil
}
