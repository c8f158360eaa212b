package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/server/queue"
	"nectar/server/runs"
	"nectar/server/signing"
	"nectar/server/ui"
)

// uiBackend gives the web UI the same code paths the API uses.
type uiBackend struct{ s *Server }

var _ ui.Backend = uiBackend{}

func (b uiBackend) Catalog() *catalog.Catalog { return b.s.catalog }

func (b uiBackend) ListRuns(ctx context.Context, p history.ListParams, counts bool) (history.Page, map[string]int64, error) {
	return b.s.pageOfRuns(ctx, p, counts, true)
}

func (b uiBackend) GetRun(ctx context.Context, runID string) (history.Entry, error) {
	if b.s.history == nil || len(runID) > 64 || !history.Text(runID) {
		return history.Entry{}, history.ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	return b.s.history.Driver().Get(ctx, runID)
}

func (b uiBackend) Glance(ctx context.Context, key string) (runs.Glance, error) {
	return b.s.runs.Glance(ctx, key)
}

func (b uiBackend) Submit(ctx context.Context, t *catalog.Task, q url.Values, force bool) (runs.Record, error) {
	canon, err := t.ParseQuery(q)
	if err != nil {
		return runs.Record{}, err
	}
	r, joined, err := b.s.runs.Submit(runs.Spec{Type: t.Type, Chain: t.Chain, Task: t.Name, Params: canon, Force: force,
		Trigger: history.TriggerUI})
	if err != nil {
		return runs.Record{}, err
	}
	if joined {
		b.s.countHit(runs.Key(t.Type, t.Chain, t.Name, canon))
	}
	// What the form's redirect names, not a copy of a run joined with 50,000 tasks.
	return runs.Record{RunID: r.ID(), Key: r.Key()}, nil
}

func (b uiBackend) Cancel(_ context.Context, key, reason string) error {
	_, err := b.s.runs.Cancel(key, reason)
	return err
}

func (b uiBackend) StatusURL(key string) string { return b.s.statusURL(key) }

func (b uiBackend) DownloadURL(ctx context.Context, key string) string { return b.s.presign(ctx, key) }

func (b uiBackend) LiveLogURL(taskKey, worker string) string { return b.s.liveLogURL(taskKey, worker) }

func (b uiBackend) Head(ctx context.Context, key string, n int) ([]byte, error) {
	rc, err := b.s.store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, int64(n)))
}

func (b uiBackend) Metrics(ctx context.Context, key string) *runs.Metrics {
	rc, err := b.s.store.Get(ctx, key+"/"+runs.MetricsName)
	if err != nil {
		return nil
	}
	defer rc.Close()
	var m runs.Metrics
	if json.NewDecoder(rc).Decode(&m) != nil {
		return nil
	}
	return &m
}

func (b uiBackend) TokensRequired() bool { return len(b.s.cfg.APITokens) > 0 }

func (b uiBackend) ValidToken(token string) bool { return validToken(b.s.cfg.APITokens, token) }

// sessionPath is what a session cookie signs: the session is a capability like a status URL,
// with a purpose of its own so that no other signature can pass for it.
const sessionPath = "ui-session"

func (b uiBackend) SignSession(ttl time.Duration) string {
	exp, sig := b.s.signer.Sign(signing.PurposeSession, sessionPath, ttl)
	return exp + "." + sig
}

func (b uiBackend) VerifySession(v string) bool {
	exp, sig, ok := strings.Cut(v, ".")
	return ok && b.s.signer.Verify(signing.PurposeSession, sessionPath, exp, sig) == nil
}

func (b uiBackend) BaseURL() string { return b.s.base() }

func (b uiBackend) Schedules(ctx context.Context) ([]ui.ScheduleRow, bool, error) {
	list, err := b.s.Schedules(ctx)
	if err != nil {
		return nil, false, err
	}
	rows := make([]ui.ScheduleRow, len(list))
	for i, in := range list {
		rows[i] = ui.ScheduleRow{Info: in.Info, LastRunID: in.LastRunID}
		if p, ok := b.s.sched.Plan(in.Type, in.Chain, in.Task); ok {
			rows[i].BackfillPending = b.s.backfillPending(p)
		}
		if in.LastStatus != nil {
			rows[i].LastStatus = string(*in.LastStatus)
		}
	}
	return rows, b.s.sched.Firing(), nil
}

func (b uiBackend) PauseSchedule(ctx context.Context, typ, chain, task string, pause bool, by string) error {
	p, ok := b.s.sched.Plan(typ, chain, task)
	if !ok {
		return fmt.Errorf("%w: %s/%s/%s declares none", ui.ErrNoSchedule, typ, chain, task)
	}
	if pause {
		return b.s.sched.Pause(ctx, p, by)
	}
	return b.s.sched.Resume(ctx, p)
}

func (b uiBackend) Backfill(ctx context.Context, typ, chain, task string, q url.Values) (int, error) {
	p, ok := b.s.sched.Plan(typ, chain, task)
	if !ok {
		return 0, fmt.Errorf("%w: %s/%s/%s declares none", ui.ErrNoSchedule, typ, chain, task)
	}
	list, _, err := b.s.startBackfill(ctx, p, q)
	return len(list), err
}

func (b uiBackend) StopBackfills(ctx context.Context, typ, chain, task, by string) error {
	p, ok := b.s.sched.Plan(typ, chain, task)
	if !ok {
		return fmt.Errorf("%w: %s/%s/%s declares none", ui.ErrNoSchedule, typ, chain, task)
	}
	_, err := b.s.stopBackfillsOf(ctx, p, by)
	return err
}

func (b uiBackend) Artifacts(ctx context.Context, taskKey string) []runs.Artifact {
	prefix := taskKey + "/" + runs.ArtifactsDir + "/"
	keys, err := b.s.store.List(ctx, prefix)
	if err != nil {
		return nil
	}
	out := make([]runs.Artifact, 0, len(keys))
	for _, k := range keys {
		name := strings.TrimPrefix(k, prefix)
		out = append(out, runs.Artifact{Name: name, ContentType: runs.ContentType(name)})
	}
	return out
}

func (b uiBackend) Workers(ctx context.Context) ([]runs.WorkerInfo, []queue.Depth, error) {
	if b.s.queue == nil {
		return nil, nil, ui.ErrNoQueue
	}
	ws, err := b.s.runs.Workers(ctx)
	if err != nil {
		return nil, nil, err
	}
	depths, err := b.s.queue.Depths(ctx)
	return ws, depths, err
}

func (b uiBackend) DrainWorker(ctx context.Context, id string) (runs.WorkerInfo, error) {
	if b.s.queue == nil {
		return runs.WorkerInfo{}, ui.ErrNoQueue
	}
	return b.s.runs.DrainWorker(ctx, id)
}
