package ui

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"nectar/chains/params"
	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/server/runs"
	"nectar/targets"
)

// ---- runs ----

type countLink struct {
	Status string
	N      int64
	URL    string
}

type runsView struct {
	Filter     history.ListParams
	Since      string
	Filtered   bool
	Runs       []history.Entry
	CountList  []countLink
	Total      int64
	Cursor     bool
	NextURL    string
	FirstURL   string
	TableURL   string
	Live       bool
	Rebuilding bool
	Error      string
	Tasks      []string
	Statuses   []string
	Triggers   []string
}

func (u *UI) runsView(c echo.Context) (runsView, int) {
	q := c.QueryParams()
	v := runsView{Statuses: history.Statuses, Triggers: history.Triggers}
	seen := map[string]bool{}
	for _, t := range u.b.Catalog().Tasks() {
		if !seen[t.Name] {
			seen[t.Name] = true
			v.Tasks = append(v.Tasks, t.Name)
		}
	}
	// Empty form fields mean "any": drop them before the API's parser sees them.
	clean := url.Values{}
	for k, vs := range q {
		if len(vs) > 0 && vs[0] != "" {
			clean[k] = vs
		}
	}
	clean.Del("counts")
	p, _, err := history.ParseQuery(clean)
	if err != nil {
		v.Error = err.Error()
		return v, http.StatusBadRequest
	}
	v.Filter, v.Since = p, clean.Get("since")
	v.Filtered = p.Filter != (history.Filter{})
	v.Cursor = p.Cursor != nil
	v.Live = !v.Cursor
	page, counts, err := u.b.ListRuns(c.Request().Context(), p, true)
	if err != nil {
		u.log.Warn("ui: listing runs", "err", err)
		v.Error = "The run history is unavailable right now; try again in a moment."
		return v, http.StatusServiceUnavailable
	}
	v.Runs = page.Entries
	base := clean
	base.Del("cursor")
	for _, s := range history.Statuses {
		if n := counts[s]; n > 0 {
			f := cloneValues(base)
			f.Set("status", s)
			v.CountList = append(v.CountList, countLink{Status: s, N: n, URL: "/?" + f.Encode()})
		}
		v.Total += counts[s]
	}
	v.FirstURL = "/?" + base.Encode()
	if page.Next != "" {
		f := cloneValues(base)
		f.Set("cursor", page.Next)
		v.NextURL = "/?" + f.Encode()
	}
	v.TableURL = "/ui/runs/table?" + base.Encode()
	return v, http.StatusOK
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func (u *UI) runsPage(c echo.Context) error {
	v, code := u.runsView(c)
	return u.render(c, code, "runs", "Runs", "runs", v)
}

func (u *UI) runsTable(c echo.Context) error {
	v, _ := u.runsView(c)
	return u.renderFragment(c, "runs", "runs-table", v)
}

// ---- one run ----

type taskRow struct {
	runs.TaskState
	Index    int
	Selected bool
}

type groupView struct {
	Label, Detail string
	Members       []taskRow // the first maxTaskRows (failed ones first), and the selected one
	More          int       // members not listed
	Open          bool
}

type preview struct {
	Kind      string // text, image, csv, none
	Text      string
	Rows      [][]string
	URL       string
	Truncated bool
}

type selView struct {
	Task                     taskRow
	Live                     bool
	LogURL                   string
	LogText                  string
	LogUnread                bool // the store did not answer: not "the log is empty"
	LogTruncated             bool
	OutURL, LogDL, ParamsURL string
	Params                   string // the task's canonical parameters, from the run record
	Preview                  *preview
	// Artifacts: images as a gallery, HTML reports in a sandboxed frame, the rest as links;
	// Filter keeps those whose name holds it (an airport code).
	Images, Reports, Files []artifactView
	Filter                 string
	ArtifactCount          int
}

// artifactView is one artifact on the run page.
type artifactView struct {
	runs.Artifact
	URL string
}

// maxGallery bounds the images a page shows at once (the filter narrows the rest down).
const maxGallery = 60

type chartView struct {
	W, H           int
	CPU, RSS       string
	MaxCPU, MaxRSS string
	Summary        string
}

type runView struct {
	Entry      history.Entry
	Rec        *runs.Record
	Status     string
	StatusLine string
	Progress   float64
	Error      string
	Final      bool
	Graph      Graph
	Groups     []groupView
	TaskRows   []taskRow
	MoreTasks  int
	Sel        *selView
	Chart      *chartView
	Curl       string
	Command    string
	LiveURL    string
}

// maxTaskRows bounds the tasks table (the graph groups the rest), and each group's list.
const maxTaskRows = 200

// maxGroupRows bounds the members of all groups listed on a page, but for the failed ones and
// the selected one.
const maxGroupRows = 1000

// previewBytes is how much of an out or a log a page shows.
const previewBytes = 64 << 10

// runView reads a run for its page; whole adds what only the whole page shows (the selected
// task's out, log and artifacts, the metrics chart), which the live fragment polled every
// second does not.
func (u *UI) runView(c echo.Context, whole bool) (runView, error) {
	ctx := c.Request().Context()
	id := c.Param("run_id")
	e, err := u.b.GetRun(ctx, id)
	var gl *runs.Glance
	switch {
	case errors.Is(err, history.ErrNotFound):
		// Just submitted from a form: the history writes in batches, the record is already there.
		key := c.QueryParam("key")
		if key == "" {
			return runView{}, echo.NewHTTPError(http.StatusNotFound, "no run "+clipText(id, 80)+" in the history")
		}
		g, gerr := u.b.Glance(ctx, key)
		if gerr != nil && !errors.Is(gerr, runs.ErrUnknownKey) {
			return runView{}, gerr // the store, not the run: unavailable, not missing
		}
		if gerr != nil || g.Header.RunID != id {
			return runView{}, echo.NewHTTPError(http.StatusNotFound, "no run "+clipText(id, 80)+" in the history")
		}
		gl = &g
		r := &g.Header
		e = history.Entry{RunID: r.RunID, Key: r.Key, Type: r.Type, Chain: r.Chain, Task: r.Task, Params: string(r.Params),
			Status: string(r.Status), Trigger: r.Trigger, SubmittedAt: r.SubmittedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt}
	case err != nil:
		return runView{}, err
	default:
		g, gerr := u.b.Glance(ctx, e.Key)
		switch {
		case gerr == nil && g.Header.RunID == e.RunID:
			gl = &g
		case gerr != nil && !errors.Is(gerr, runs.ErrUnknownKey):
			// Not "replaced by a later run": the store did not answer (the page says so, and
			// the next poll tries again).
			return runView{}, gerr
		}
	}
	v := runView{Entry: e, Status: e.Status, StatusLine: e.StatusLine, Progress: e.Progress, Error: e.Error,
		LiveURL: "/ui/runs/" + url.PathEscape(e.RunID) + "/live?" + c.QueryParams().Encode()}
	q := paramsQuery(e.Params)
	q2 := cloneValues(q)
	q2.Set("wait", "60s")
	v.Curl = fmt.Sprintf("curl -X POST '%s/api/chains/%s/%s/%s?%s'", u.b.BaseURL(), e.Type, e.Chain, e.Task, q2.Encode())
	args := []string{"bin/nectar", "run", e.Type + "/" + e.Chain + "/" + e.Task}
	for _, k := range sortedKeys(q) {
		args = append(args, shellQuote(k+"="+q.Get(k)))
	}
	v.Command = strings.Join(args, " ")
	if gl == nil {
		v.Final = true
		return v, nil
	}
	rec := &gl.Header
	v.Rec = rec
	v.Status, v.Error = string(rec.Status), rec.Error
	v.Final = rec.Status.Final()
	if p := gl.Progress(); p != nil {
		v.Progress, v.StatusLine = p.Fraction, p.Status
	}
	// Everything below reads each task's brief (its status) and copies only the tasks it
	// lists: a page of a 50,000-task run costs its briefs, not its record.
	return u.drawRun(c, v, gl, whole)
}

// drawRun fills a run page's graph, tables and selected task from a glance of the run. A run
// this server follows may take other tasks between the glance and what it copies (see
// runs.Glance.Shapes): the page is then drawn again from a new glance.
func (u *UI) drawRun(c echo.Context, v runView, gl *runs.Glance, whole bool) (runView, error) {
	for tries := 0; ; tries++ {
		drawn, err := u.drawTasks(c, v, gl, whole)
		if !errors.Is(err, runs.ErrRunChanged) || tries == 2 {
			return drawn, err
		}
		g, gerr := u.b.Glance(c.Request().Context(), gl.Header.Key)
		if gerr != nil || g.Header.RunID != gl.Header.RunID {
			return runView{}, echo.NewHTTPError(http.StatusConflict, "the run changed as its page was drawn: reload the page")
		}
		gl = &g
	}
}

func (u *UI) drawTasks(c echo.Context, v runView, gl *runs.Glance, whole bool) (runView, error) {
	ctx := c.Request().Context()
	sh, err := u.shapes.get(ctx, gl)
	if err != nil {
		return runView{}, err
	}
	briefs := gl.Briefs
	v.Graph = sh.graph(briefs)
	sel := -1
	if s := c.QueryParam("task"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < len(briefs) {
			sel = n
		}
	}
	if sel < 0 && len(briefs) > 0 {
		sel = 0
		for i, b := range briefs { // show the failure, if there is one
			if b.Status() == runs.Failed {
				sel = i
				break
			}
		}
	}
	// The table lists the tasks the graph draws one by one; a group's members are in its own
	// list below the graph.
	var rows []int
	listable := 0
	for i := range briefs {
		if sh.grouped[i] && i != sel {
			continue
		}
		listable++
		if len(rows) < maxTaskRows || i == sel {
			rows = append(rows, i)
		}
	}
	v.MoreTasks = listable - len(rows)
	// A group may hold 50,000 tasks: list a page of them, the failed ones (and the selected
	// one) first, so the page stays small and still shows what went wrong.
	// Each group lists its failed members first, then the others, up to maxTaskRows; all groups
	// share one budget (the selected task aside), so that a graph of 10,000 groups of 10 lists
	// a page of members, not all 100,000.
	var members [][]int
	budget := maxGroupRows
	for _, n := range sh.nodes {
		if !n.Group {
			continue
		}
		var list []int
		listed := map[int]bool{}
		add := func(m int) {
			switch {
			case listed[m]:
			case m == sel:
				listed[m] = true
				list = append(list, m)
			case len(list) < maxTaskRows && budget > 0:
				listed[m] = true
				list = append(list, m)
				budget--
			}
		}
		for _, m := range n.Tasks {
			if m == sel || (m < len(briefs) && briefs[m].Status() == runs.Failed) {
				add(m)
			}
		}
		for _, m := range n.Tasks {
			if len(list) >= maxTaskRows || budget <= 0 {
				break
			}
			add(m)
		}
		members = append(members, list)
	}
	// One copy of every task the page shows, the selected one last.
	want := slices.Clone(rows)
	for _, list := range members {
		want = append(want, list...)
	}
	if sel >= 0 {
		want = append(want, sel)
	}
	tasks, ok := gl.Tasks(want)
	if !ok {
		return runView{}, runs.ErrRunChanged
	}
	for i, m := range rows {
		v.TaskRows = append(v.TaskRows, taskRow{TaskState: tasks[i], Index: m, Selected: m == sel})
	}
	tasks = tasks[len(rows):]
	gi := 0
	for _, n := range v.Graph.Nodes {
		if !n.Group {
			continue
		}
		list := members[gi]
		gi++
		g := groupView{Label: n.Label, Detail: n.Detail, Open: slices.Contains(n.Tasks, sel), More: len(n.Tasks) - len(list)}
		for i, m := range list {
			g.Members = append(g.Members, taskRow{TaskState: tasks[i], Index: m})
		}
		tasks = tasks[len(list):]
		v.Groups = append(v.Groups, g)
	}
	if sel >= 0 && whole {
		v.Sel = u.taskDetail(ctx, tasks[0], sel, !gl.Header.ParamsNotStored && (gl.Header.RunID != "" || gl.Header.Params != nil))
		u.artifacts(ctx, v.Sel, strings.TrimSpace(c.QueryParam("artifact")))
	}
	if v.Final && whole {
		v.Chart = chart(u.b.Metrics(ctx, gl.Header.Key))
	}
	return v, nil
}

func sortedKeys(q url.Values) []string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789=_-.,/:") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// taskDetail is the selected task i, with its files' URLs; paramsStored says whether its run
// stored the root's params (the record says when it did not).
func (u *UI) taskDetail(ctx context.Context, t runs.TaskState, i int, paramsStored bool) *selView {
	s := &selView{Task: taskRow{TaskState: t, Index: i, Selected: true}, Params: string(t.Params)}
	live := t.Status == runs.Running || t.Status == runs.Pending
	if live {
		s.Live, s.LogURL = true, u.b.LiveLogURL(t.Key, t.Worker)
		return s
	}
	if i == 0 && paramsStored { // a dependency's params are in the record only (below)
		s.ParamsURL = u.b.DownloadURL(ctx, t.Key+"/"+runs.ParamsName)
	}
	if t.LogEmpty { // it wrote none: none is stored
	} else if b, err := u.b.Head(ctx, t.Key+"/"+runs.LogName, previewBytes+1); err == nil {
		// Signed only when there is one: a task that never started has no log.
		s.LogDL = u.b.DownloadURL(ctx, t.Key+"/"+runs.LogName)
		s.LogTruncated = len(b) > previewBytes
		s.LogText = validText(b[:min(len(b), previewBytes)])
	} else if !errors.Is(err, targets.ErrNotExist) {
		s.LogUnread = true
	}
	if t.Status != runs.Done {
		return s
	}
	s.OutURL = u.b.DownloadURL(ctx, t.Key+"/"+runs.OutName)
	b, err := u.b.Head(ctx, t.Key+"/"+runs.OutName, previewBytes+1)
	if err != nil {
		s.Preview = &preview{Kind: "none", Text: "The out cannot be read right now."}
		return s
	}
	s.Preview = makePreview(b, s.OutURL)
	return s
}

// artifacts sorts the selected task's artifacts into images, reports and other files, keeping
// those whose name holds filter.
func (u *UI) artifacts(ctx context.Context, s *selView, filter string) {
	arts := s.Task.Artifacts
	if len(arts) == 0 && s.Task.Cached { // made by an earlier run: the store lists them
		arts = u.b.Artifacts(ctx, s.Task.Key)
	}
	s.Filter, s.ArtifactCount = filter, len(arts)
	for _, a := range arts {
		if filter != "" && !strings.Contains(strings.ToLower(a.Name), strings.ToLower(filter)) {
			continue
		}
		v := artifactView{Artifact: a, URL: u.b.DownloadURL(ctx, s.Task.Key+"/"+runs.ArtifactsDir+"/"+a.Name)}
		switch ct, _, _ := strings.Cut(a.ContentType, ";"); {
		case ct == "image/png" || ct == "image/jpeg" || ct == "image/gif" || ct == "image/svg+xml":
			if len(s.Images) < maxGallery {
				s.Images = append(s.Images, v)
				continue
			}
			s.Files = append(s.Files, v)
		case ct == "text/html":
			s.Reports = append(s.Reports, v)
		default:
			s.Files = append(s.Files, v)
		}
	}
}

// makePreview picks how an out is shown: PNG and SVG as images (an <img> runs no script in an
// SVG), CSV as a table, other text as its beginning, anything else as "binary".
func makePreview(b []byte, url string) *preview {
	truncated := len(b) > previewBytes
	b = b[:min(len(b), previewBytes)]
	p := &preview{Truncated: truncated}
	trimmed := bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		p.Kind, p.Text = "none", "The out is empty."
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")), bytes.HasPrefix(b, []byte("\xff\xd8\xff")), bytes.HasPrefix(b, []byte("GIF8")):
		p.Kind, p.URL = "image", url
	case (bytes.HasPrefix(trimmed, []byte("<svg")) || bytes.HasPrefix(trimmed, []byte("<?xml"))) && bytes.Contains(b, []byte("<svg")):
		p.Kind, p.URL = "image", url
	case !utf8.Valid(b) && !truncated:
		p.Kind, p.Text = "none", fmt.Sprintf("A binary out (%d bytes): download it.", len(b))
	default:
		if rows := csvRows(b, 50); rows != nil {
			p.Kind, p.Rows = "csv", rows
			return p
		}
		p.Kind, p.Text = "text", validText(b)
	}
	return p
}

// csvRows reads the first n rows of b when b looks like CSV: several lines, every one with the
// same number (2 or more) of comma-separated fields.
func csvRows(b []byte, n int) [][]string {
	if bytes.Count(b, []byte("\n")) < 2 {
		return nil
	}
	r := csv.NewReader(bytes.NewReader(b))
	var rows [][]string
	for len(rows) < n {
		rec, err := r.Read()
		if err != nil {
			break
		}
		rows = append(rows, rec)
	}
	if len(rows) < 2 || len(rows[0]) < 2 {
		return nil
	}
	return rows
}

// validText makes b printable text (a cut may split the last UTF-8 sequence).
func validText(b []byte) string { return strings.ToValidUTF8(string(b), "�") }

func chart(m *runs.Metrics) *chartView {
	if m == nil || len(m.Samples) == 0 {
		return nil
	}
	const w, h = 900, 170
	samples := mergeSamples(m.Samples)
	start, end := samples[0].At, samples[len(samples)-1].At
	span := end.Sub(start).Seconds()
	if span <= 0 {
		span = 1
	}
	var maxCPU float64 = 100
	var maxRSS uint64 = 1
	for _, s := range samples {
		maxCPU = max(maxCPU, s.CPUPercent)
		maxRSS = max(maxRSS, s.RSSBytes)
	}
	var cpu, rss strings.Builder
	for _, s := range samples {
		x := float64(w) * s.At.Sub(start).Seconds() / span
		fmt.Fprintf(&cpu, "%.1f,%.1f ", x, float64(h)-float64(h-10)*s.CPUPercent/maxCPU)
		fmt.Fprintf(&rss, "%.1f,%.1f ", x, float64(h)-float64(h-10)*float64(s.RSSBytes)/float64(maxRSS))
	}
	peakCPU := 0.0
	for _, s := range samples {
		peakCPU = max(peakCPU, s.CPUPercent)
	}
	return &chartView{W: w, H: h, CPU: cpu.String(), RSS: rss.String(),
		MaxCPU: fmt.Sprintf("%.0f%%", peakCPU), MaxRSS: fmt.Sprintf("%.1f MiB", float64(maxRSS)/(1<<20)),
		Summary: fmt.Sprintf("%.2f CPU s, peak %.1f MiB, %.2f s wall, %s, %d samples", m.Summary.CPUSeconds,
			float64(m.Summary.PeakRSSBytes)/(1<<20), m.Summary.WallSeconds, costText(m.Summary.CostUSD), len(samples))}
}

// mergeSamples sums the readings of the run's processes taken at one tick (the monitor samples
// every process of a run at the same moment), so the chart shows the run, not a zigzag between
// a busy process and an idle one.
func mergeSamples(in []runs.Sample) []runs.Sample {
	s := append([]runs.Sample(nil), in...)
	slices.SortStableFunc(s, func(a, b runs.Sample) int { return a.At.Compare(b.At) })
	var out []runs.Sample
	for _, x := range s {
		if n := len(out); n > 0 && x.At.Sub(out[n-1].At) < 50*time.Millisecond {
			out[n-1].CPUPercent += x.CPUPercent
			out[n-1].RSSBytes += x.RSSBytes
			continue
		}
		out = append(out, x)
	}
	return out
}

func (u *UI) runPage(c echo.Context) error {
	v, err := u.runView(c, true)
	if err != nil {
		return u.pageErr(c, err)
	}
	return u.render(c, http.StatusOK, "run", v.Entry.Task+" "+v.Status, "runs", v)
}

func (u *UI) runLive(c echo.Context) error {
	v, err := u.runView(c, false)
	if err != nil {
		return u.pageErr(c, err)
	}
	return u.renderFragment(c, "run", "run-live", v)
}

func (u *UI) pageErr(c echo.Context, err error) error {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return u.renderError(c, he.Code, fmt.Sprint(he.Message))
	}
	u.log.Warn("ui: page", "path", c.Request().URL.Path, "err", err)
	return u.renderError(c, http.StatusServiceUnavailable, "The run history is unavailable right now; try again in a moment.")
}

func (u *UI) cancelRun(c echo.Context) error {
	id, key := c.Param("run_id"), c.FormValue("key")
	// The key's run now, not a later one a stale page does not know of (a rerun of the task).
	if g, err := u.b.Glance(c.Request().Context(), key); err == nil && g.Header.RunID != id {
		return u.renderError(c, http.StatusConflict, "This run is over: a later run of the same task holds its key now. Cancel that one from its own page.")
	}
	// A run another server executes is cancelled there: asked, as the API's answer says.
	if err := u.b.Cancel(c.Request().Context(), key, "cancelled from the web UI"); err != nil && !errors.Is(err, runs.ErrNotRunning) &&
		!errors.Is(err, runs.ErrCancelRequested) {
		return u.pageErr(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/runs/"+url.PathEscape(id)+"?key="+url.QueryEscape(key))
}

func (u *UI) rerun(c echo.Context) error {
	ctx := c.Request().Context()
	e, err := u.b.GetRun(ctx, c.Param("run_id"))
	if err != nil {
		g, gerr := u.b.Glance(ctx, c.FormValue("key"))
		if gerr != nil || g.Header.RunID != c.Param("run_id") {
			return u.renderError(c, http.StatusNotFound, "no such run")
		}
		r := &g.Header
		e = history.Entry{Type: r.Type, Chain: r.Chain, Task: r.Task, Params: string(r.Params)}
	}
	t, ok := u.b.Catalog().Task(e.Type, e.Chain, e.Task)
	if !ok {
		return u.renderError(c, http.StatusNotFound, "the task "+e.Task+" is no longer in the catalog")
	}
	rec, err := u.b.Submit(ctx, t, paramsQuery(e.Params), true)
	var pe *params.Error
	switch {
	case errors.As(err, &pe): // the task's parameters changed since: this run's are refused
		return u.renderError(c, http.StatusBadRequest, err.Error())
	case err != nil: // as the trigger form says it: no internals
		u.log.Warn("ui: rerun", "task", t.Name, "err", err)
		return u.renderError(c, http.StatusServiceUnavailable, "The run could not be started: "+publicReason(err))
	}
	return c.Redirect(http.StatusSeeOther, "/runs/"+url.PathEscape(rec.RunID)+"?key="+url.QueryEscape(rec.Key))
}

// ---- catalog ----

type chainView struct {
	Chain string
	Tasks []*catalog.Task
}

type typeView struct {
	Type   string
	Chains []chainView
}

func (u *UI) catalogPage(c echo.Context) error {
	cat := u.b.Catalog()
	var out []typeView
	for _, typ := range cat.Types() {
		tv := typeView{Type: typ}
		for _, ch := range cat.Chains(typ) {
			tv.Chains = append(tv.Chains, chainView{Chain: ch, Tasks: cat.ChainTasks(typ, ch)})
		}
		out = append(out, tv)
	}
	return u.render(c, http.StatusOK, "catalog", "Catalog", "catalog", out)
}

type option struct {
	Value    string
	Selected bool
}

type field struct {
	catalog.Param
	Value, InputType, Placeholder, Step, Error string
	Options                                    []option
}

type taskView struct {
	Task   *catalog.Task
	Fields []field
	Error  string
	Force  bool
	Curl   string
}

func (u *UI) findTask(c echo.Context) (*catalog.Task, error) {
	t, ok := u.b.Catalog().Task(c.Param("type"), c.Param("chain"), c.Param("task"))
	if !ok {
		return nil, u.renderError(c, http.StatusNotFound, "no task "+clipText(c.Param("type")+"/"+c.Param("chain")+"/"+c.Param("task"), 120)+" in the catalog")
	}
	return t, nil
}

// formFields turns a task's schema into typed inputs, filled with values (else the defaults).
func formFields(t *catalog.Task, values url.Values, errs map[string]string) []field {
	var out []field
	for _, p := range t.Params {
		f := field{Param: p, Value: p.Default, InputType: "text", Error: errs[p.Name]}
		if vs, ok := values[p.Name]; ok {
			f.Value = strings.Join(vs, ",")
		}
		switch p.Kind {
		case "int", "int64":
			f.InputType, f.Step = "number", "1"
		case "float64":
			f.InputType, f.Step = "number", "any"
		case "time":
			f.Placeholder = "2006-01-02 or 2006-01-02T15:04:05Z"
		case "duration":
			f.Placeholder = "such as 90s, 1m30s or 2h"
		case "[]string":
			f.Placeholder = "comma-separated"
		case "bool":
			for _, o := range []string{"false", "true"} {
				f.Options = append(f.Options, option{Value: o, Selected: o == f.Value})
			}
		case "enum":
			for _, o := range p.Enum {
				f.Options = append(f.Options, option{Value: o, Selected: o == f.Value})
			}
		}
		out = append(out, f)
	}
	return out
}

func (u *UI) taskForm(c echo.Context) error {
	t, err := u.findTask(c)
	if t == nil {
		return err
	}
	return u.render(c, http.StatusOK, "task", t.Name, "catalog", taskView{Task: t, Fields: formFields(t, nil, nil), Curl: u.curlOf(t, nil)})
}

func (u *UI) curlOf(t *catalog.Task, q url.Values) string {
	s := fmt.Sprintf("curl -X POST '%s/api/chains/%s/%s/%s", u.b.BaseURL(), t.Type, t.Chain, t.Name)
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s + "'"
}

// triggerRun validates the form with the API's own parser and starts the run, or shows the
// form again with the error beside its field (POST, then redirect to the run: reloading the run
// page never posts twice).
func (u *UI) triggerRun(c echo.Context) error {
	t, err := u.findTask(c)
	if t == nil {
		return err
	}
	form, err := c.FormParams()
	if err != nil {
		return u.renderError(c, http.StatusBadRequest, "the form could not be read")
	}
	q := url.Values{}
	for _, p := range t.Params {
		if v := strings.TrimSpace(form.Get(p.Name)); v != "" {
			q.Set(p.Name, v) // an empty field means the default
		}
	}
	force := form.Get("_force") == "true"
	rec, err := u.b.Submit(c.Request().Context(), t, q, force)
	if err != nil {
		view := taskView{Task: t, Force: force, Curl: u.curlOf(t, q)}
		var pe *params.Error
		errs := map[string]string{}
		code := http.StatusUnprocessableEntity
		switch {
		case errors.As(err, &pe) && t.HasParam(pe.Param):
			errs[pe.Param] = pe.Reason
			if pe.Value != "" {
				errs[pe.Param] = fmt.Sprintf("%q %s", clipText(pe.Value, 80), pe.Reason)
			}
		case errors.As(err, &pe):
			view.Error = err.Error()
		default:
			u.log.Warn("ui: starting a run", "task", t.Name, "err", err)
			view.Error = "The run could not be started: " + publicReason(err)
			code = http.StatusServiceUnavailable
		}
		view.Fields = formFields(t, q, errs)
		return u.render(c, code, "task", t.Name, "catalog", view)
	}
	return c.Redirect(http.StatusSeeOther, "/runs/"+url.PathEscape(rec.RunID)+"?key="+url.QueryEscape(rec.Key))
}

// publicReason says why a run could not start without internals (the API's error table has
// the same words for these conditions).
func publicReason(err error) string {
	switch {
	case errors.Is(err, runs.ErrQueueFull):
		return "the run queue is full; try again in a moment."
	case errors.Is(err, runs.ErrDraining):
		return "the server is shutting down."
	}
	return "the target store is unavailable; try again in a moment."
}

// ---- login ----

func (u *UI) loginPage(c echo.Context) error {
	if !u.b.TokensRequired() {
		return c.Redirect(http.StatusSeeOther, "/")
	}
	return u.render(c, http.StatusOK, "login", "Log in", "", map[string]string{"Next": safeNext(c.QueryParam("next"))})
}

func (u *UI) login(c echo.Context) error {
	next := safeNext(c.FormValue("next"))
	if !u.b.TokensRequired() {
		return c.Redirect(http.StatusSeeOther, next)
	}
	if !u.b.ValidToken(c.FormValue("token")) {
		return u.render(c, http.StatusUnauthorized, "login", "Log in", "", map[string]string{"Next": next, "Error": "That is not one of this server's tokens."})
	}
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: u.b.SignSession(sessionTTL), Path: "/", MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Scheme() == "https"})
	return c.Redirect(http.StatusSeeOther, next)
}

func (u *UI) logout(c echo.Context) error {
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return c.Redirect(http.StatusSeeOther, "/login")
}

// safeNext keeps a redirect on this site: a path, never //host or a scheme. Browsers drop tabs
// and newlines from a URL and read a backslash as a slash, so "/\t/evil.com" is //evil.com to
// them: a path with any of those, or one a URL parser reads with a host, goes home instead.
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\\t\r\n") {
		return "/"
	}
	if u, err := url.Parse(s); err != nil || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return s
}
