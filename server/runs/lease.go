package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"nectar/targets"
)

// LeaseName is the object that says which server is executing a key. It is created with
// CreateIfAbsent (If-None-Match: *), so of several servers sharing a store exactly one runs a
// key; the others follow its run record. The holder rewrites it every LeaseTTL/3 and deletes
// it after the final record; a lease older than LeaseTTL belongs to a dead server.
const LeaseName = "lease"

type lease struct {
	Holder    string    `json:"holder"`
	RunID     string    `json:"run_id"`
	Heartbeat time.Time `json:"heartbeat"`
}

func (m *Manager) leaseBody(runID string) []byte {
	b, _ := json.Marshal(lease{Holder: m.id, RunID: runID, Heartbeat: time.Now().UTC()})
	return b
}

// acquireLease returns true when this server now holds key's lease, false when a live holder
// has it. A stale lease (its holder died) is taken over. It records in r the version of the
// lease it holds, which the heartbeat renews (Replacer stores).
func (m *Manager) acquireLease(ctx context.Context, r *Run, runID, key string) (bool, error) {
	store := m.cfg.Store
	name := key + "/" + LeaseName
	for attempt := 0; attempt < 3; attempt++ {
		var made targets.Info
		var err error
		if ic, ok := store.(targets.InfoCreator); ok { // the PUT's answer names the version
			made, err = ic.CreateIfAbsentInfo(ctx, name, bytes.NewReader(m.leaseBody(runID)))
		} else {
			err = store.CreateIfAbsent(ctx, name, bytes.NewReader(m.leaseBody(runID)))
		}
		if err == nil {
			if _, ok := store.(targets.Replacer); ok {
				r.lease = made
				if made.ETag == "" {
					// Fresh, so nobody replaces it before this Stat: it is our version.
					if r.lease, err = store.Stat(ctx, name); err != nil {
						return false, err
					}
				}
			}
			return true, nil
		}
		if !errors.Is(err, targets.ErrExist) {
			return false, err
		}
		// The version looked at, then what it says: a takeover replaces that version only.
		seen, err := store.Stat(ctx, name)
		if errors.Is(err, targets.ErrNotExist) {
			continue // released between our create and now: try again
		}
		if err != nil {
			return false, err
		}
		l, err := m.readLease(ctx, key)
		switch {
		case errors.Is(err, errEmpty):
			// A lease is linked into place whole: an empty one is what a power loss left of a
			// lease whose holder is gone with the machine.
			m.cfg.Logger.Warn("taking over an empty run lease", "key", key)
		case errors.Is(err, targets.ErrNotExist):
			continue
		case err != nil:
			return false, err
		case m.fresh(l):
			return false, nil
		default:
			m.cfg.Logger.Warn("taking over a stale run lease", "key", key, "holder", l.Holder, "heartbeat", l.Heartbeat)
		}
		if rep, ok := store.(targets.Replacer); ok {
			// Of several servers that saw this dead lease, one replaces it; the others find a
			// live one next time round.
			ver, err := rep.ReplaceIf(ctx, name, seen, m.leaseBody(runID))
			switch {
			case err == nil:
				r.lease = ver
				return true, nil
			case errors.Is(err, targets.ErrChanged):
				continue
			default:
				return false, err
			}
		}
		if err := store.Delete(ctx, name); err != nil {
			return false, err
		}
	}
	return false, fmt.Errorf("could not take the lease of %s after 3 attempts", key)
}

func (m *Manager) readLease(ctx context.Context, key string) (lease, error) {
	var l lease
	return l, m.readJSON(ctx, key+"/"+LeaseName, &l)
}

// readJSON decodes the JSON object at key; a corrupt one is a store error.
func (m *Manager) readJSON(ctx context.Context, key string, v any) error {
	return m.readObject(ctx, key, func(dec *json.Decoder) error { return dec.Decode(v) })
}

// readObject is readJSON with the decoding done by decode.
func (m *Manager) readObject(ctx context.Context, key string, decode func(*json.Decoder) error) error {
	rc, err := m.cfg.Store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := decode(json.NewDecoder(rc)); err != nil {
		if errors.Is(err, io.EOF) {
			// Empty: what a power loss may leave of an object written without waiting for the
			// disk (targets.Volatile). It holds nothing, so it counts as absent.
			return fmt.Errorf("%s: %w: %w", key, errEmpty, targets.ErrNotExist)
		}
		// Unreadable is as good as unreachable to every caller; the JSON error stays for the log.
		return fmt.Errorf("%w: %w: %s: %w", targets.ErrUnavailable, errCorrupt, key, err)
	}
	return nil
}

// errEmpty marks a stored object with no bytes at all (see readJSON).
var errEmpty = errors.New("empty object")

// errCorrupt marks a stored JSON object that does not decode.
var errCorrupt = errors.New("corrupt object")

// fresh reports whether a lease's holder still counts as alive: its heartbeat is recent and,
// when it ran on this machine, its process still exists (so a restart after kill -9 resumes at
// once instead of waiting LeaseTTL).
func (m *Manager) fresh(l lease) bool {
	if time.Since(l.Heartbeat) >= m.cfg.LeaseTTL {
		return false
	}
	host, pid, ok := parseHolder(l.Holder)
	if ok && host == m.host && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	return true
}

// parseHolder splits a holder id, "<host>/<pid>/<random>".
func parseHolder(h string) (host string, pid int, ok bool) {
	parts := strings.Split(h, "/")
	if len(parts) != 3 {
		return "", 0, false
	}
	pid, err := strconv.Atoi(parts[1])
	return parts[0], pid, err == nil
}

// heartbeat rewrites the lease until stop is closed, and between renewals looks for a cancel
// request another server left for this run. Where the store can, a renewal replaces only the
// version this server wrote last: if it finds another, a server took the key over (this one
// was silent past LeaseTTL), and the run is cancelled without writing anything more.
func (m *Manager) heartbeat(r *Run, key string, stop <-chan struct{}) {
	runID := r.ID()
	renew := time.NewTicker(m.cfg.LeaseTTL / 3)
	defer renew.Stop()
	poll := time.NewTicker(m.cfg.CancelPoll)
	defer poll.Stop()
	for {
		select {
		case <-stop:
			return
		case <-renew.C:
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.LeaseTTL/3)
			err := m.renewLease(ctx, r, key, runID)
			cancel()
			if errors.Is(err, targets.ErrChanged) {
				m.cfg.Logger.Error("lost the run lease: another server took the key over; this run stops", "key", key)
				r.leaseLost.Store(true)
				r.cancel(errors.New("lost the run lease: another server took this key over"))
				return
			}
			if err != nil {
				m.cfg.Logger.Warn("renewing run lease", "key", key, "err", err)
			}
		case <-poll.C:
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CancelPoll)
			var req cancelRequest
			err := m.readJSON(ctx, key+"/"+CancelName, &req)
			cancel()
			if err != nil {
				continue
			}
			// Ours or stale (we hold the lease): either way it is used up now.
			dctx, dcancel := context.WithTimeout(context.Background(), m.cfg.LeaseTTL/3)
			m.cfg.Store.Delete(dctx, key+"/"+CancelName)
			dcancel()
			if req.RunID == runID {
				r.cancel(errors.New(req.Reason))
			}
		}
	}
}

// CancelName is the object a server leaves to ask the server executing a key to cancel it.
const CancelName = "cancel"

type cancelRequest struct {
	RunID  string `json:"run_id"`
	Reason string `json:"reason"`
}

// requestCancel asks the holder of key's lease to cancel its run.
func (m *Manager) requestCancel(ctx context.Context, key, reason string) error {
	l, err := m.readLease(ctx, key)
	if err != nil {
		return fmt.Errorf("no server holds %s: %w", key, err)
	}
	b, _ := json.Marshal(cancelRequest{RunID: l.RunID, Reason: reason + " (via " + m.id + ")"})
	return m.putMeta(ctx, key+"/"+CancelName, b)
}

// renewLease rewrites r's lease: over the version it holds where the store can tell.
func (m *Manager) renewLease(ctx context.Context, r *Run, key, runID string) error {
	rep, ok := m.cfg.Store.(targets.Replacer)
	if !ok || r.lease.ETag == "" {
		return m.putMeta(ctx, key+"/"+LeaseName, m.leaseBody(runID))
	}
	ver, err := rep.ReplaceIf(ctx, key+"/"+LeaseName, r.lease, m.leaseBody(runID))
	if err == nil {
		r.lease = ver
	}
	return err
}

// releaseLease deletes r's lease, unless it is no longer the version r wrote (another server
// took the key over): that one is not ours to delete. (Between the check and the delete a
// takeover cannot happen: this lease was renewed within LeaseTTL.)
func (m *Manager) releaseLease(r *Run) {
	key := r.Key()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := key + "/" + LeaseName
	if r.lease.ETag != "" {
		if now, err := m.cfg.Store.Stat(ctx, name); err == nil && now.ETag != r.lease.ETag {
			m.cfg.Logger.Error("not releasing the run lease: another server holds it now", "key", key)
			return
		}
	}
	if err := m.cfg.Store.Delete(ctx, name); err != nil {
		m.cfg.Logger.Warn("releasing run lease", "key", key, "err", err)
	}
}

// follow mirrors the run another server executes into r until that run's record is final. It
// returns false if the holder died or let go first (then the caller tries to take the lease).
// Only the record of the run the lease names counts: an older final record is not the answer.
func (m *Manager) follow(ctx context.Context, r *Run) (finished bool) {
	key := r.Key()
	l, err := m.readLease(ctx, key)
	if err != nil {
		return false
	}
	t := time.NewTicker(m.cfg.FollowInterval)
	defer t.Stop()
	mirror := func(rec Record) {
		r.update(func(mine *Record) {
			submitted := mine.SubmittedAt
			*mine = rec
			mine.SubmittedAt = submitted
		})
	}
	for {
		if rec, err := m.storedRecord(ctx, key); err == nil && rec.RunID == l.RunID {
			mirror(rec)
			if rec.Status.Final() {
				return true
			}
		}
		cur, err := m.readLease(ctx, key)
		if err != nil || cur.RunID != l.RunID || !m.fresh(cur) {
			// Released (maybe just now, after its final record) or its holder died.
			if rec, err := m.storedRecord(ctx, key); err == nil && rec.RunID == l.RunID && rec.Status.Final() {
				mirror(rec)
				return true
			}
			return false
		}
		select {
		case <-ctx.Done():
			return true
		case <-t.C:
		}
	}
}

func (m *Manager) storedRecord(ctx context.Context, key string) (Record, error) {
	var rec Record
	return rec, m.readObject(ctx, key+"/"+RecordName, func(dec *json.Decoder) error { return decodeRecord(dec, &rec) })
}
