package runs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"nectar/chains"
	"nectar/targets"
)

// How a task's files reach the store. The plugin writes out, log and artifacts to staging
// paths the host chose; the host then commits them, artifacts and log first and out last, so
// an out under its key always means a finished task with all its files.
//
// On the local store (targets.Folders) the staging paths are in the task's own key folder,
// so a commit is one rename within that folder: no shared staging folder whose lock every task
// takes, no copy, no cleanup after success. The exception is the out of a task whose plugin
// fsyncs it (a run of fewer than batchSyncFrom tasks): it is staged in the store's own folder,
// an old one (prepare says why). Elsewhere (S3, MinIO) they are in the spool and a commit is a
// PUT.

// taskFiles are where the plugin writes one task's files.
type taskFiles struct {
	out, log string
	artBase  string // + "-<attempt>": a folder per attempt
	beside   bool   // log and artifacts in the key's folder (the local store); out there or in its spool
}

func (f taskFiles) artDir(attempt int) string { return fmt.Sprintf("%s-%d", f.artBase, attempt) }

// maxCommitBatch bounds the commits one sync covers, so the first task of a batch does not
// wait on the renames of thousands.
const maxCommitBatch = 256

// batchSyncFrom is the number of tasks a run must execute for the host to make their files
// durable in batches (one syncfs for all the tasks finished meanwhile) rather than each plugin
// fsyncing its own out. Below it, a single task's own fdatasync is cheaper than a syncfs,
// and it does not wait for whatever else the machine is writing.
const batchSyncFrom = 8

// prepare makes the task's folder and returns where the plugin writes. A dependency's
// params are not written to its folder: the run record lists them with the task (one file
// less per task, on a disk where creating a file is most of a trivial task's cost); the
// root's were written when the run started.
func (l *lane) prepare(job *taskJob) (taskFiles, error) {
	if l.folders == nil {
		// As beside the key: each execution its own names (a copy of an out may be kept,
		// and read, after the task; keptOuts).
		base := fmt.Sprintf("%s-%d-s%d-d%d-", l.spoolPrefix, job.Index, job.Send, job.Delivery)
		return taskFiles{out: base + OutName, log: base + LogName, artBase: base + ArtifactsDir}, nil
	}
	var dir string
	var err error
	if lp, ok := l.m.cfg.Store.(targets.LocalPather); ok && job.FolderMade && job.DeadRun == "" {
		dir, err = lp.LocalPath(job.Key)
	} else {
		dir, err = l.folders.MakeFolder(job.Key, job.DeadRun)
	}
	if err != nil {
		return taskFiles{}, err
	}
	// The run id keeps two runs that share a task (two roots needing one leaf) apart.
	stage := dir + "/" + targets.StagePrefix + job.Run + "-"
	if job.Send > 1 {
		stage += fmt.Sprintf("s%d-", job.Send)
	}
	if job.Delivery > 1 {
		stage += fmt.Sprintf("d%d-", job.Delivery)
	}
	f := taskFiles{out: stage + OutName, log: stage + LogName, artBase: stage + ArtifactsDir, beside: true}
	if l.stagesOutInSpool(job, dir) {
		f.out = fmt.Sprintf("%s-%d-s%d-d%d-%s", l.spoolPrefix, job.Index, job.Send, job.Delivery, OutName)
	}
	return f, nil
}

// sameDevice reports whether a and b are on one file system.
func sameDevice(a, b os.FileInfo) bool {
	sa, ok := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok && ok2 && sa.Dev == sb.Dev
}

// spoolStageMax is the longest a task may run (its timeout) for its out to be staged in the
// spool: well within the age at which a starting store sweeps its temporary folder
// (local.StaleTmpAge, a day), so that no staged out of a live task is swept. Each attempt
// opens its out anew (O_TRUNC): an out swept while its task waits to retry is made again.
const spoolStageMax = 6 * time.Hour

// stagesOutInSpool reports whether the out of job, whose key's folder is dir, is staged in the
// spool (the store's own temporary folder, as old as the store) rather than beside the key:
// when its plugin fsyncs it (a run of fewer than batchSyncFrom tasks). On ext4 without a
// journal, fsync of a file in a new folder also writes that folder's blocks, and its parent's,
// one after the other (ext4_sync_parent): 1.0-1.1 ms here, 0.65 ms in an old folder. The
// commit is then a rename from there; nothing needs the staged name to last. Only where that
// rename works: the spool on the keys' file system (checked once per lane).
func (l *lane) stagesOutInSpool(job *taskJob, dir string) bool {
	if job.NoSync {
		return false
	}
	if cmp.Or(job.Timeout, l.m.cfg.TaskTimeout) > spoolStageMax {
		return false
	}
	near := l.spoolNear.Load()
	if near == 0 {
		near = 2
		keys, kerr := os.Stat(dir)
		spool, serr := os.Stat(filepath.Dir(l.spoolPrefix))
		if kerr == nil && serr == nil && sameDevice(keys, spool) {
			near = 1
		}
		l.spoolNear.Store(near)
	}
	return near == 1
}

// discardOut removes the staged out and log that remain after a task: the out of a task that
// failed, and both in the spool once they were PUT to a remote store.
func (l *lane) discardOut(f taskFiles) {
	os.Remove(f.out)
	if !f.beside {
		os.Remove(f.log)
	}
}

// commitLog stores the log of a task that failed, with the values of its connections replaced
// by their names. When the plugin never made one, an empty log is stored, unless committed:
// then the log went in with a commit that failed later (at the out), and is the real one.
func (l *lane) commitLog(job *taskJob, f taskFiles, committed bool) error {
	if _, err := os.Stat(f.log); err != nil {
		if committed {
			return nil
		}
		if err := os.WriteFile(f.log, nil, 0o600); err != nil {
			return fmt.Errorf("%w: %w", errStaging, err)
		}
	}
	if err := l.scrubLog(f.log); err != nil {
		return err
	}
	return l.commitFile(context.Background(), f.log, job.Key+"/"+LogName)
}

// scrubLog rewrites a log that shows a connection's value: the plugin scrubs what it writes
// line by line; this catches what it could not (prints of user code, a secret split across
// writes).
func (l *lane) scrubLog(path string) error {
	if !l.secrets {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %w", errStaging, err)
	}
	if clean := l.scrub.Replace(string(b)); clean != string(b) {
		if err := os.WriteFile(path, []byte(clean), 0o600); err != nil {
			return fmt.Errorf("%w: %w", errStaging, err)
		}
	}
	return nil
}

// commitDone commits a finished task: its artifacts (and their published copies), its log,
// then its out. synced says the plugin already made the out durable. It reports whether a log
// was stored (or, on error, may have been): a task that wrote none has none (one file less per
// task of a big graph, one PUT less on S3), except the run's root, whose answer always links
// its log. On the local folder, a key that holds a log already (an earlier failed run's) gets
// an empty one in its place before the out appears, so that the log beside the out is not
// another run's failure; on S3 and MinIO the out says that no log goes with it (outlog.go).
func (l *lane) commitDone(ctx context.Context, job *taskJob, f taskFiles, artDir string, hasArts bool, publish map[string]string, synced bool) (arts []Artifact, logged bool, err error) {
	if job.beforeCommit != nil {
		if err := job.beforeCommit(); err != nil {
			return nil, false, err
		}
	}
	_, lerr := os.Lstat(f.log)
	logged = lerr == nil
	// Where the store keeps metadata, the out says whether a log goes with it (outlog.go): a
	// log the key holds already is another run's, and stays as it is.
	mc, marks := l.m.cfg.Store.(targets.MetaCommitter)
	marks = marks && !f.beside
	if !logged && job.Index != 0 && !marks {
		// The key may hold a log already (a failed run's, even in a folder this task made:
		// another run of the same task may have failed meanwhile): an empty one replaces it,
		// as the task's log. Removing it could take it from under a URL already handed out. (A
		// stat. A log committed after this look, before the out, is not seen.)
		var err error
		if logged, err = targets.Exists(ctx, l.m.cfg.Store, job.Key+"/"+LogName); err != nil {
			return nil, false, err
		}
	}
	if logged || job.Index == 0 { // the root always has a log: its answer links it
		if lerr != nil {
			if err := os.WriteFile(f.log, nil, 0o600); err != nil {
				return nil, false, fmt.Errorf("%w: %w", errStaging, err)
			}
		}
		logged = true
		if err := l.scrubLog(f.log); err != nil {
			return nil, logged, err
		}
	}
	var staged []stagedFile
	if hasArts {
		if arts, staged, err = l.commitArtifacts(ctx, job, artDir, publish, f.beside); err != nil {
			return nil, logged, err
		}
	}
	if logged {
		staged = append(staged, stagedFile{f.log, job.Key + "/" + LogName})
	}
	staged = append(staged, stagedFile{f.out, job.Key + "/" + OutName})
	if !f.beside {
		for k, st := range staged {
			var err error
			if k == len(staged)-1 && marks { // the out, last
				err = mc.CommitFileMeta(ctx, st.key, st.file, outMeta(logged))
			} else {
				err = l.commitFile(ctx, st.file, st.key)
			}
			if err != nil {
				return nil, logged, err
			}
		}
		return arts, logged, nil
	}
	// Artifacts are not synced by the plugin: they always go through a sync.
	if synced && !hasArts { // nothing to wait for: rename here, in order
		for _, st := range staged {
			if err := l.folders.Commit(st.file, st.key); err != nil {
				return nil, logged, err
			}
		}
		return arts, logged, nil
	}
	cj := &commitJob{files: staged, done: make(chan error, 1)}
	l.commits <- cj
	return arts, logged, <-cj.done
}

// stagedFile is a file waiting to be renamed to its key.
type stagedFile struct{ file, key string }

// commitJob is one finished task's files, in the order they are committed.
type commitJob struct {
	files []stagedFile
	done  chan error
}

// batcher commits finished tasks' staged files on the local store: it takes every job
// waiting, makes their files durable with one sync, then renames each job's files into place,
// its out last. The order is what makes this safe: a file reaches its name only after its
// data is on disk, so a crash (of the server, the plugin or the machine) can lose a rename,
// never leave a partial out; a task whose rename was lost runs again, and the next run of its
// key sweeps the staged files (MakeFolder; sweepSpoolOf for an out staged in the spool). The
// renames themselves reach the disk with the next sync or the file system's own journal
// commit: a task reported DONE just before a power loss may have to run again, which keys
// make harmless.
//
// Batches form by themselves: while one sync runs, the tasks finishing meanwhile queue for
// the next, so the number of syncs follows the disk, not the number of tasks.
func (l *lane) batcher(jobs <-chan *commitJob) {
	batch := make([]*commitJob, 0, maxCommitBatch)
	for job := range jobs {
		batch = append(batch[:0], job)
	more:
		for len(batch) < maxCommitBatch {
			select {
			case j, ok := <-jobs:
				if !ok {
					break more
				}
				batch = append(batch, j)
			default:
				break more
			}
		}
		err := l.folders.SyncAll()
		for _, j := range batch {
			jerr := err
			for _, st := range j.files {
				if jerr != nil {
					break
				}
				jerr = l.folders.Commit(st.file, st.key)
			}
			j.done <- jerr
		}
	}
}

// commitFile moves a finished file to key: a rename beside it, or an upload from the spool
// (in parts read from the file, where the store offers it: a big out is never buffered).
func (l *lane) commitFile(ctx context.Context, file, key string) error {
	if l.folders != nil {
		return l.folders.Commit(file, key)
	}
	if fc, ok := l.m.cfg.Store.(targets.FileCommitter); ok {
		return fc.CommitFile(ctx, key, file)
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("%w: %w", errStaging, err)
	}
	defer f.Close()
	return l.m.cfg.Store.Put(ctx, key, f)
}

// commitArtifacts lists every file the task wrote in artDir, to be stored at
// <key>/artifacts/<name>, and stores each published one at its stable path (a copy: the
// artifact under the key stays the record of this run). Beside the key, the artifacts are
// returned to be renamed with the task's other files; otherwise they are PUT here.
func (l *lane) commitArtifacts(ctx context.Context, job *taskJob, artDir string, publish map[string]string, beside bool) ([]Artifact, []stagedFile, error) {
	// Listed first, whole: a task over the bound, or with a publish path it may not have,
	// fails with nothing of it stored.
	var arts []Artifact
	var paths []string
	err := filepath.WalkDir(artDir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == artDir {
			return fs.SkipAll // the task made no artifact
		}
		if err != nil || d.IsDir() {
			return err
		}
		if len(arts) == chains.MaxArtifacts { // its plugin let it write more (chains.Artifact does not)
			return fmt.Errorf("%w: it made more than %d artifacts: put more files in one archive", errTaskArtifacts, chains.MaxArtifacts)
		}
		rel, _ := filepath.Rel(artDir, p)
		name := filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		a := Artifact{Name: name, Size: fi.Size(), ContentType: ContentType(name), Published: publish[name]}
		if a.Published != "" {
			// The plugin checked the path; the host does not take its word for it.
			if err := checkPublishPath(a.Published); err != nil {
				return fmt.Errorf("%w: artifact %s: publish path %q: %w", errTaskArtifacts, name, a.Published, err)
			}
		}
		arts = append(arts, a)
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	var staged []stagedFile
	for i, a := range arts {
		if a.Published != "" {
			f, err := os.Open(paths[i])
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %w", errStaging, err)
			}
			err = l.m.cfg.Store.Put(ctx, a.Published, f)
			f.Close()
			if err != nil {
				return nil, nil, err
			}
		}
		key := job.Key + "/" + ArtifactsDir + "/" + a.Name
		if beside {
			staged = append(staged, stagedFile{paths[i], key})
		} else if err := l.commitFile(ctx, paths[i], key); err != nil {
			return nil, nil, err
		}
	}
	return arts, staged, nil
}

// errTaskArtifacts is a task's artifacts refused: its own fault, not the store's (no retry
// helps, and its record says what was wrong).
var errTaskArtifacts = errors.New("artifacts refused")

// checkPublishPath refuses paths outside what a task may publish to: the server's own areas
// and its files (a segment starting with ".").
func checkPublishPath(p string) error {
	if err := targets.CheckKey(p); err != nil {
		return err
	}
	for _, seg := range strings.Split(p, "/") {
		if strings.HasPrefix(seg, ".") {
			return errors.New("segments may not start with '.'")
		}
	}
	if strings.HasPrefix(p, "chains/") || strings.HasPrefix(p, "schedules/") {
		return errors.New("chains/ and schedules/ are the server's own")
	}
	return nil
}
