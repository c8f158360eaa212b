package runs

import (
	"context"
	"errors"

	"nectar/targets"
)

// A task that writes no log stores none (commitDone), so whoever finds a task done must learn
// whether a log goes with its out before an answer links one. On a store that keeps metadata
// with an object (targets.MetaCommitter: S3, MinIO) the out says so itself, and finding the out
// (a HEAD) answers both: a 1,000-leaf fan-in asks 1,000 questions fewer. Elsewhere (the local
// folder, where a stat costs microseconds) the log is looked for.
//
// On such a store, a log the key holds beside an out marked logNone is another run's (one
// that failed there, whose own record links it): it is left as it is, the failure's to read,
// and never shown as the log of the task that passed. The local folder has no metadata: there
// commitDone puts an empty log in its place instead.
const (
	logMeta   = "nectar-log" // the name of the out's metadata
	logStored = "stored"     // the task's log was committed before its out
	logNone   = "none"       // the task wrote none: no log goes with this out
)

// outMeta is the metadata a task's out is committed with on a targets.MetaCommitter store.
func outMeta(logged bool) map[string]string {
	if logged {
		return map[string]string{logMeta: logStored}
	}
	return map[string]string{logMeta: logNone}
}

// logOfOut says what an out's metadata tells of its log; known is false where the store keeps
// no metadata, or for an out committed before outs carried it.
func logOfOut(info targets.Info) (logged, known bool) {
	switch info.Meta[logMeta] {
	case logStored:
		return true, true
	case logNone:
		return false, true
	}
	return false, false
}

// hasLog reports whether a log goes with the out of key, described by info (from Stat).
func hasLog(ctx context.Context, store targets.Store, key string, info targets.Info) (bool, error) {
	if logged, known := logOfOut(info); known {
		return logged, nil
	}
	return targets.Exists(ctx, store, key+"/"+LogName)
}

// DoneLog reports whether task key's out is stored and, if it is, whether a log goes with it.
func DoneLog(ctx context.Context, store targets.Store, key string) (done, logged bool, err error) {
	info, err := store.Stat(ctx, key+"/"+OutName)
	switch {
	case errors.Is(err, targets.ErrNotExist):
		return false, false, nil
	case err != nil:
		return false, false, err
	}
	logged, err = hasLog(ctx, store, key, info)
	return true, logged, err
}

// LogToShow reports whether the log stored at task key is the one to show for the task (its
// live log once it ended): any log of a task not done (a failure's), the log that goes with a
// done task's out, and a log committed after an out that says it has none (a forced rerun
// that failed: the out is the earlier run's). A log committed before such an out is a
// failure's that the passing run must not show as its own. (S3 keeps whole seconds: a log of
// the same second as the out is taken for the earlier.)
func LogToShow(ctx context.Context, store targets.Store, key string) (bool, error) {
	out, err := store.Stat(ctx, key+"/"+OutName)
	switch {
	case errors.Is(err, targets.ErrNotExist):
		return true, nil
	case err != nil:
		return false, err
	}
	if logged, known := logOfOut(out); !known || logged {
		return true, nil
	}
	log, err := store.Stat(ctx, key+"/"+LogName)
	switch {
	case errors.Is(err, targets.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	}
	return log.ModTime.After(out.ModTime), nil
}
