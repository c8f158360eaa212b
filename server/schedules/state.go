package schedules

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"nectar/targets"
)

// State is what the servers remember of a schedule, in the store at
// schedules/<type>/<chain>/<Task>/state.json.
type State struct {
	// Last is the start of the latest interval fired, LastKey its run's key.
	Last    time.Time `json:"last_interval,omitzero"`
	LastKey string    `json:"last_key,omitempty"`
	FiredAt time.Time `json:"fired_at,omitzero"`
	// FirstSeen is when a server first ran a schedule that declares no Start: its intervals
	// count from then.
	FirstSeen time.Time `json:"first_seen,omitzero"`
}

// Pause is the object whose presence pauses a schedule (schedules/.../paused). Pause and the
// firing state are separate objects, so a server recording a fire can never undo a pause that
// another server wrote a moment before.
type Pause struct {
	At time.Time `json:"paused_at"`
	By string    `json:"paused_by,omitempty"`
}

// BackfillStop is the object that stops a schedule's backfills (schedules/.../backfill-stop).
// A backfill notes the ID it finds when it is accepted ("" for none), and stops once the ID
// differs: on any server sharing the store, whatever their clocks say. A backfill accepted after
// a stop notes that stop's ID and runs, so the object is never deleted.
type BackfillStop struct {
	ID string    `json:"id"`
	At time.Time `json:"stopped_at"`
	By string    `json:"stopped_by,omitempty"`
}

const (
	statePrefix  = "schedules/"
	stateName    = "state.json"
	pauseName    = "paused"
	stopFillName = "backfill-stop"
)

func stateKey(p *Plan) string    { return statePrefix + p.Path() + "/" + stateName }
func pauseKey(p *Plan) string    { return statePrefix + p.Path() + "/" + pauseName }
func stopFillKey(p *Plan) string { return statePrefix + p.Path() + "/" + stopFillName }

// readJSON reads key into v; found is false when there is no object.
func readJSON(ctx context.Context, store targets.Store, key string, v any) (found bool, err error) {
	rc, err := store.Get(ctx, key)
	if errors.Is(err, targets.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, targets.Unavailable(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return false, targets.Unavailable(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s is not valid JSON: %w", key, err)
	}
	return true, nil
}

func writeJSON(ctx context.Context, store targets.Store, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return targets.Unavailable(store.Put(ctx, key, bytes.NewReader(b)))
}

// ReadState reads a schedule's state (the zero State when it never fired).
func ReadState(ctx context.Context, store targets.Store, p *Plan) (State, error) {
	var st State
	_, err := readJSON(ctx, store, stateKey(p), &st)
	return st, err
}

// ReadPause reports whether a schedule is paused, and since when and by whom.
func ReadPause(ctx context.Context, store targets.Store, p *Plan) (*Pause, error) {
	var ps Pause
	found, err := readJSON(ctx, store, pauseKey(p), &ps)
	if err != nil || !found {
		return nil, err
	}
	return &ps, nil
}

// ReadBackfillStop reads when p's backfills were last stopped (nil: never).
func ReadBackfillStop(ctx context.Context, store targets.Store, p *Plan) (*BackfillStop, error) {
	var st BackfillStop
	found, err := readJSON(ctx, store, stopFillKey(p), &st)
	if err != nil || !found {
		return nil, err
	}
	return &st, nil
}
