package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The client commands drive a running server over its HTTP API, for scripts and people:
// trigger, status, logs, cancel, runs, schedules, backfill. Exit status: 0 done, 1 the run failed or was cancelled,
// 2 a usage or connection error (exitError carries it).

// exitError ends the program with a status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, args ...any) error {
	return &exitError{2, fmt.Errorf(format, args...)}
}

// clientOpts are the flags every client command takes.
type clientOpts struct {
	server, token, conf string
	from, to            string
	json, wait, force   bool
	follow, stop, all   bool
	args                []string // the positional arguments
}

// parseClientArgs reads flags anywhere among the arguments (--server URL or --server=URL).
func parseClientArgs(args []string, getenv func(string) string, allowed ...string) (clientOpts, error) {
	o := clientOpts{server: defaultServer(getenv), token: getenv("NECTAR_TOKEN")}
	valued := o.valued()
	bools := map[string]*bool{"json": &o.json, "wait": &o.wait, "force": &o.force, "f": &o.follow, "follow": &o.follow, "stop": &o.stop, "all": &o.all}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			o.args = append(o.args, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !slices.Contains(allowed, name) && name != "server" && name != "token" {
			return o, usageError("unknown flag %s (this command takes: --server, --token, %s)", a, flagList(allowed))
		}
		if dst, ok := valued[name]; ok {
			if !hasVal {
				if i+1 >= len(args) {
					return o, usageError("flag %s needs a value", a)
				}
				i++
				val = args[i]
			}
			*dst = val
			continue
		}
		if dst, ok := bools[name]; ok {
			*dst = !hasVal || val == "true"
			continue
		}
		return o, usageError("unknown flag %s", a)
	}
	o.server = strings.TrimSuffix(o.server, "/")
	if u, err := url.Parse(o.server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return o, usageError("--server %q: want an http(s) URL such as http://127.0.0.1:5000 (or set NECTAR_SERVER)", o.server)
	}
	return o, nil
}

// defaultServer is the server without --server: NECTAR_SERVER, else the local default.
func defaultServer(getenv func(string) string) string {
	if v := getenv("NECTAR_SERVER"); v != "" {
		return strings.TrimSuffix(v, "/")
	}
	return "http://127.0.0.1:5000"
}

// valued are the client's flags that take a value (--server URL or --server=URL), by name.
func (o *clientOpts) valued() map[string]*string {
	return map[string]*string{"server": &o.server, "token": &o.token, "conf": &o.conf, "from": &o.from, "to": &o.to}
}

// printJSON writes v as one line of JSON, URLs as they are (not & escaped as \u0026).
func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func flagList(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "--" + n
	}
	return strings.Join(out, ", ")
}

// envelope is every JSON answer of the API.
type envelope struct {
	Status  int             `json:"status"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

type taskStatus struct {
	Task     string `json:"task"`
	Key      string `json:"key"`
	Status   string `json:"status"`
	Cached   bool   `json:"cached"`
	Error    string `json:"error"`
	LogURL   string `json:"log_url"`
	LogEmpty bool   `json:"log_empty"` // done, and it wrote no log: none is stored
	Progress *struct {
		Done, Total int64
		Status      string
	} `json:"progress"`
}

type runStatus struct {
	Key         string       `json:"key"`
	JobStatus   *string      `json:"job_status"`
	Task        string       `json:"task"`
	Error       *string      `json:"error"`
	StatusURL   string       `json:"status_url"`
	ResourceURL string       `json:"resource_url"`
	LogURL      string       `json:"log_url"`
	SubmittedAt *time.Time   `json:"submitted_at"`
	Tasks       []taskStatus `json:"tasks"`
	// TaskCounts counts all the run's tasks; Tasks is only a page of them (the first 100 unless
	// the URL asks for more), TasksNextURL the next page, and FailedTasks and RunningTasks the
	// first failed and running tasks outside the page.
	TaskCounts *struct {
		Total   int `json:"total"`
		Running int `json:"running"`
		Done    int `json:"done"`
	} `json:"task_counts,omitempty"`
	TasksFrom    int          `json:"tasks_from,omitempty"`
	TasksNextURL string       `json:"tasks_next_url,omitempty"`
	FailedTasks  []taskStatus `json:"failed_tasks,omitempty"`
	RunningTasks []taskStatus `json:"running_tasks,omitempty"`
}

// nextPage reads the page of st's tasks after st's, as big as the server allows (the first
// page of a status URL is small: a poll need not carry a big run's tasks).
func (c *client) nextPage(ctx context.Context, st runStatus) (runStatus, error) {
	u, err := url.Parse(st.TasksNextURL)
	if err != nil {
		return runStatus{}, fmt.Errorf("tasks_next_url %q: %w", st.TasksNextURL, err)
	}
	q := u.Query()
	q.Set("tasks_limit", strconv.Itoa(maxTaskPage))
	u.RawQuery = q.Encode()
	env, _, err := c.call(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return runStatus{}, err
	}
	var next runStatus
	json.Unmarshal(env.Data, &next)
	switch {
	case len(next.Tasks) == 0 && next.TasksNextURL == "": // the run has fewer tasks now (rerun)
	case len(next.Tasks) == 0 || next.TasksFrom <= st.TasksFrom:
		// The server always moves on; a page that does not would be paged forever.
		return runStatus{}, fmt.Errorf("%s: the page after task %d lists none after it", redactURL(st.TasksNextURL), st.TasksFrom)
	}
	return next, nil
}

// laterPages calls more with each page of st's run's tasks after st's, until it says to stop
// or none is left.
func (c *client) laterPages(ctx context.Context, st runStatus, more func(runStatus) bool) error {
	for page := st; page.TasksNextURL != ""; {
		var err error
		if page, err = c.nextPage(ctx, page); err != nil {
			return err
		}
		if !more(page) {
			return nil
		}
	}
	return nil
}

// maxTaskPage is the most tasks the server lists in one page (tasks_limit).
const maxTaskPage = 1000

// findTask finds the first task of st's run that match says is the one: in the page st holds,
// among its failed and running tasks outside the page, then through the pages that follow.
// names are the run's task names it saw (each once), for saying what there is when none matched.
func (c *client) findTask(ctx context.Context, st runStatus, match func(taskStatus) bool) (task *taskStatus, names []string, err error) {
	seen := func(list []taskStatus) *taskStatus {
		for i, t := range list {
			if match(t) {
				return &list[i]
			}
			if !slices.Contains(names, t.Task) {
				names = append(names, t.Task)
			}
		}
		return nil
	}
	for _, list := range [][]taskStatus{st.Tasks, st.FailedTasks, st.RunningTasks} {
		if t := seen(list); t != nil {
			return t, names, nil
		}
	}
	err = c.laterPages(ctx, st, func(page runStatus) bool {
		task = seen(page.Tasks)
		return task == nil
	})
	return task, names, err
}

type client struct {
	o    clientOpts
	http *http.Client
}

// call sends a request and decodes the envelope; a connection error or a 401 is exit status 2
// with what to do.
func (c *client) call(ctx context.Context, method, u string, body []byte) (envelope, int, error) {
	if !strings.HasPrefix(u, "http") {
		u = c.o.server + u
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return envelope{}, 0, usageError("%v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.o.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.o.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return envelope{}, 0, &exitError{2, fmt.Errorf("cannot reach the server at %s: %v (is it running? --server or NECTAR_SERVER names another)", c.o.server, rootCause(err))}
	}
	defer resp.Body.Close()
	var env envelope
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return envelope{}, resp.StatusCode, &exitError{2, fmt.Errorf("%s %s answered %d, not the API's JSON: is %s a Nectar server?", method, redactURL(u), resp.StatusCode, c.o.server)}
	}
	if resp.StatusCode == http.StatusUnauthorized {
		hint := "give a token with --token or NECTAR_TOKEN"
		if c.o.token != "" {
			hint = "the token given (--token or NECTAR_TOKEN) is not one of the server's"
		}
		return env, resp.StatusCode, &exitError{2, fmt.Errorf("%s: %s", env.Message, hint)}
	}
	if resp.StatusCode >= 400 {
		return env, resp.StatusCode, &exitError{2, errors.New(env.Message)}
	}
	return env, resp.StatusCode, nil
}

// redactURL drops a signed URL's query (its signature is a capability).
func redactURL(u string) string {
	base, _, _ := strings.Cut(u, "?")
	return base
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// listing GETs a list; with --json it prints the answer's data as it came (printed is true).
func (c *client) listing(ctx context.Context, path string, stdout io.Writer) (env envelope, printed bool, err error) {
	env, _, err = c.call(ctx, http.MethodGet, path, nil)
	if err == nil && c.o.json {
		fmt.Fprintln(stdout, string(env.Data))
		return env, true, nil
	}
	return env, false, err
}

func newClient(o clientOpts) *client { return &client{o: o, http: &http.Client{}} }

// trigger: POST a task with k=v parameters and/or --conf JSON; --wait follows it to the end.
func trigger(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseClientArgs(args, getenv, "conf", "wait", "force", "json")
	if err != nil {
		return err
	}
	if len(o.args) == 0 {
		return usageError("usage: nectar trigger <type>/<chain>/<Task> [k=v ...] [--conf JSON] [--wait] [--force] [--json]")
	}
	path := o.args[0]
	if strings.Count(path, "/") != 2 {
		return usageError("%q: want <type>/<chain>/<Task>, such as testchains/hello_chain/HelloTask", path)
	}
	q := url.Values{}
	for _, kv := range o.args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usageError("%q: want param=value", kv)
		}
		q.Add(k, v)
	}
	if o.force {
		q.Set("force", "true")
	}
	var body []byte
	if o.conf != "" {
		var conf map[string]json.RawMessage
		if err := json.Unmarshal([]byte(o.conf), &conf); err != nil || conf == nil {
			return usageError("--conf: not a JSON object of parameters: %s", o.conf)
		}
		for k := range conf {
			if q.Has(k) {
				return usageError("parameter %q is given twice: by --conf and as %s=%s", k, k, q.Get(k))
			}
		}
		body = []byte(o.conf)
	}
	c := newClient(o)
	u := "/api/chains/" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	env, _, err := c.call(ctx, http.MethodPost, u, body)
	if err != nil {
		return err
	}
	var st runStatus
	json.Unmarshal(env.Data, &st)
	if !o.wait {
		if o.json {
			fmt.Fprintln(stdout, string(env.Data))
			return nil
		}
		fmt.Fprintf(stdout, "%s %s\nkey     %s\nstatus  %s\n", deref(st.JobStatus), env.Message, st.Key, st.StatusURL)
		return nil
	}
	return c.follow(ctx, st, stdout, stderr)
}

func deref(s *string) string {
	if s == nil {
		return "UNKNOWN"
	}
	return *s
}

// follow polls a run's status URL until it ends, showing progress: on a terminal one line
// rewritten in place, otherwise a line per change.
func (c *client) follow(ctx context.Context, st runStatus, stdout, stderr io.Writer) error {
	tty := isTerminal(stderr)
	last := ""
	for {
		if s := deref(st.JobStatus); s == "DONE" || s == "FAILED" || s == "CANCELLED" {
			if tty && last != "" {
				fmt.Fprint(stderr, "\r\033[K")
			}
			return c.finish(st, stdout, stderr)
		}
		line := progressLine(st)
		if line != last {
			if tty {
				fmt.Fprintf(stderr, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(stderr, line)
			}
			last = line
		}
		select {
		case <-ctx.Done():
			return &exitError{2, errors.New("interrupted; the run goes on (nectar cancel " + st.Key + " stops it)")}
		case <-time.After(500 * time.Millisecond):
		}
		env, _, err := c.call(ctx, http.MethodGet, st.StatusURL, nil)
		if err != nil {
			return err
		}
		var next runStatus
		json.Unmarshal(env.Data, &next)
		if next.StatusURL == "" {
			next.StatusURL = st.StatusURL
		}
		st = next
	}
}

// progressLine is "RUNNING 3/10 tasks done · running: ExtractTask (step 4 of 20)".
func progressLine(st runStatus) string {
	done, running := 0, []string{}
	for _, t := range append(st.Tasks[:len(st.Tasks):len(st.Tasks)], st.RunningTasks...) {
		switch t.Status {
		case "DONE":
			done++
		case "RUNNING":
			r := t.Task
			if t.Progress != nil && t.Progress.Status != "" {
				r += " (" + t.Progress.Status + ")"
			} else if t.Progress != nil && t.Progress.Total > 0 {
				r += fmt.Sprintf(" (%d/%d)", t.Progress.Done, t.Progress.Total)
			}
			running = append(running, r)
		}
	}
	total, runningCount := len(st.Tasks), len(running)
	if c := st.TaskCounts; c != nil { // a big run: the answer lists only some of its tasks
		total, done, runningCount = c.Total, c.Done, max(c.Running, len(running))
	}
	if total == 0 {
		return deref(st.JobStatus) + " (planning its tasks)"
	}
	s := fmt.Sprintf("%s %d/%d tasks done", deref(st.JobStatus), done, total)
	if len(running) > maxRunningShown {
		running = running[:maxRunningShown]
	}
	if more := runningCount - len(running); more > 0 && len(running) > 0 {
		running = append(running, fmt.Sprintf("and %d more", more))
	}
	if len(running) > 0 {
		s += " · running: " + strings.Join(running, ", ")
	}
	return s
}

// maxRunningShown is how many running tasks a progress line names.
const maxRunningShown = 3

// finish prints a final status: the out's URL when done, the failing task and why otherwise.
func (c *client) finish(st runStatus, stdout, stderr io.Writer) error {
	if c.o.json {
		printJSON(stdout, st)
	}
	s := deref(st.JobStatus)
	if s == "DONE" {
		if !c.o.json {
			fmt.Fprintf(stdout, "DONE %s\nout  %s\n", st.Key, st.ResourceURL)
		}
		return nil
	}
	msg := s
	if st.Error != nil {
		msg += ": " + *st.Error
	}
	failed := func(t taskStatus) bool { return t.Status == "FAILED" && t.LogURL != "" }
	for _, list := range [][]taskStatus{st.Tasks, st.FailedTasks} {
		if i := slices.IndexFunc(list, failed); i >= 0 {
			msg += "\nlog of " + list[i].Task + ": " + list[i].LogURL
			break
		}
	}
	return errors.New(msg) // exit status 1
}

// findRun resolves a key or a status URL to the run's status (a key through the history).
func (c *client) findRun(ctx context.Context, ref string) (runStatus, error) {
	statusURL := ref
	if !strings.HasPrefix(ref, "http") {
		env, _, err := c.call(ctx, http.MethodGet, "/api/runs?limit=1&key="+url.QueryEscape(ref), nil)
		if err != nil {
			return runStatus{}, err
		}
		var page struct {
			Runs []struct {
				StatusURL string `json:"status_url"`
			} `json:"runs"`
		}
		json.Unmarshal(env.Data, &page)
		if len(page.Runs) == 0 {
			return runStatus{}, &exitError{2, fmt.Errorf("no run with key %s in the history (see nectar runs)", ref)}
		}
		statusURL = page.Runs[0].StatusURL
	}
	// A page's URL (a tasks_next_url) reads from its first task: the run's root is task 0,
	// and status lists the tasks from the start. The paging parameters are not signed.
	if u, err := url.Parse(statusURL); err == nil && (u.Query().Has("tasks_from") || u.Query().Has("tasks_limit")) {
		q := u.Query()
		q.Del("tasks_from")
		q.Del("tasks_limit")
		u.RawQuery = q.Encode()
		statusURL = u.String()
	}
	env, _, err := c.call(ctx, http.MethodGet, statusURL, nil)
	if err != nil {
		return runStatus{}, err
	}
	var st runStatus
	json.Unmarshal(env.Data, &st)
	if st.StatusURL == "" {
		st.StatusURL = statusURL
	}
	return st, nil
}

// status prints a run's status and its tasks.
func status(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	o, err := parseClientArgs(args, getenv, "json", "all")
	if err != nil {
		return err
	}
	if len(o.args) != 1 {
		return usageError("usage: nectar status <key | status URL> [--all] [--json]")
	}
	c := newClient(o)
	st, err := c.findRun(ctx, o.args[0])
	if err != nil {
		return err
	}
	if o.all { // every task, page after page
		if err := c.laterPages(ctx, st, func(page runStatus) bool { st.Tasks = append(st.Tasks, page.Tasks...); return true }); err != nil {
			return err
		}
		st.TasksNextURL, st.FailedTasks, st.RunningTasks = "", nil, nil
	}
	if o.json {
		printJSON(stdout, st)
		return nil
	}
	fmt.Fprintf(stdout, "%s %s %s\n", deref(st.JobStatus), st.Task, st.Key)
	if st.Error != nil {
		fmt.Fprintf(stdout, "error: %s\n", *st.Error)
	}
	w := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TASK\tSTATUS\tNOTE")
	for _, list := range [][]taskStatus{st.Tasks, st.FailedTasks, st.RunningTasks} {
		for _, t := range list {
			note := t.Error
			if t.Cached {
				note = "cached"
			}
			if t.Progress != nil && t.Status == "RUNNING" {
				note = fmt.Sprintf("%d/%d %s", t.Progress.Done, t.Progress.Total, t.Progress.Status)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", t.Task, t.Status, note)
		}
	}
	w.Flush()
	if st.TaskCounts != nil && st.TasksNextURL != "" {
		listed := len(st.Tasks) + len(st.FailedTasks) + len(st.RunningTasks)
		fmt.Fprintf(stdout, "(%d of %d tasks listed: the first %d, and the failed and running ones after them; --all lists every one)\n",
			listed, st.TaskCounts.Total, len(st.Tasks))
	}
	if s := deref(st.JobStatus); s == "FAILED" || s == "CANCELLED" {
		return &exitError{1, errors.New(strings.ToLower(s))}
	}
	return nil
}

// logs prints a task's log (the run's root task by default); -f follows a running one.
func logs(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseClientArgs(args, getenv, "f", "follow")
	if err != nil {
		return err
	}
	if len(o.args) < 1 || len(o.args) > 2 {
		return usageError("usage: nectar logs [-f] <key | status URL> [Task]")
	}
	c := newClient(o)
	st, err := c.findRun(ctx, o.args[0])
	if err != nil {
		return err
	}
	task, names, err := c.findTask(ctx, st, func(t taskStatus) bool {
		return (len(o.args) == 2 && t.Task == o.args[1]) || (len(o.args) == 1 && t.Key == st.Key)
	})
	if err != nil {
		return err
	}
	switch {
	case task == nil && len(o.args) == 2:
		return usageError("the run has no task %s (its tasks: %s)", o.args[1], strings.Join(names, ", "))
	case task == nil:
		return &exitError{2, fmt.Errorf("the run of %s lists no tasks yet: it is %s (nectar status shows it)", st.Key, deref(st.JobStatus))}
	case task.LogURL == "" && task.LogEmpty: // its log is complete, and empty
		fmt.Fprintf(stderr, "%s wrote no log\n", task.Task)
		return nil
	case task.LogURL == "" && (task.Status == "PENDING" || task.Status == "UPSTREAM_FAILED" || task.Status == "CANCELLED"):
		return &exitError{2, fmt.Errorf("%s has no log: it is %s, it never ran (nectar status shows the run's tasks)", task.Task, task.Status)}
	case task.LogURL == "":
		return &exitError{2, fmt.Errorf("%s has no log (it is %s; nectar status shows the run's tasks)", task.Task, task.Status)}
	}
	u := task.LogURL
	if o.follow && strings.Contains(u, "/api/chainlog") {
		u += "&follow=true"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return &exitError{2, fmt.Errorf("cannot reach the server at %s: %v", c.o.server, rootCause(err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &exitError{2, fmt.Errorf("the log answered %d", resp.StatusCode)}
	}
	_, err = io.Copy(stdout, resp.Body)
	return err
}

// cancel stops a run.
func cancelRun(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	o, err := parseClientArgs(args, getenv)
	if err != nil {
		return err
	}
	if len(o.args) != 1 {
		return usageError("usage: nectar cancel <key | status URL>")
	}
	c := newClient(o)
	st, err := c.findRun(ctx, o.args[0])
	if err != nil {
		return err
	}
	if s := deref(st.JobStatus); s == "DONE" || s == "FAILED" || s == "CANCELLED" {
		return &exitError{2, fmt.Errorf("the run of %s has already ended: it is %s", st.Key, s)}
	}
	env, _, err := c.call(ctx, http.MethodDelete, st.StatusURL, nil)
	if err != nil {
		return err
	}
	var after runStatus
	json.Unmarshal(env.Data, &after)
	fmt.Fprintf(stdout, "%s %s\n", deref(after.JobStatus), st.Key)
	return nil
}

// runs lists the history: filters as k=v (task=HelloTask status=FAILED q=ada limit=20).
func listRuns(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	o, err := parseClientArgs(args, getenv, "json")
	if err != nil {
		return err
	}
	q := url.Values{}
	for _, kv := range o.args {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usageError("%q: filters are k=v (type, chain, task, status, trigger, key, since, until, q, limit, cursor)", kv)
		}
		q.Set(k, v)
	}
	c := newClient(o)
	env, printed, err := c.listing(ctx, "/api/runs?"+q.Encode(), stdout)
	if err != nil || printed {
		return err
	}
	var page struct {
		Runs []struct {
			RunID, Key, Task, Status, Trigger, Error string
			Params                                   string
			SubmittedAt                              time.Time `json:"submitted_at"`
			DurationMS                               int64     `json:"duration_ms"`
		} `json:"runs"`
		Next string `json:"next_cursor"`
	}
	json.Unmarshal(env.Data, &page)
	w := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SUBMITTED\tSTATUS\tTASK\tPARAMS\tDURATION\tBY\tKEY")
	for _, r := range page.Runs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%dms\t%s\t%s\n", r.SubmittedAt.Local().Format("2006-01-02 15:04:05"), r.Status, r.Task, r.Params, r.DurationMS, r.Trigger, r.Key)
	}
	w.Flush()
	if page.Next != "" {
		server := ""
		if c.o.server != defaultServer(getenv) {
			server = " --server " + c.o.server
		}
		fmt.Fprintf(stdout, "more: nectar runs%s %s cursor=%s\n", server, strings.Join(o.args, " "), page.Next)
	}
	return nil
}

// isTerminal reports whether w is a terminal (progress is then redrawn in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
