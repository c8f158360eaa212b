package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// nectar dev: the edit-and-run loop. It serves (bin/nectar serve, as a child process), watches
// chains/ and, when a chain file is saved, regenerates and rebuilds what changed:
//
//   - a change inside a chain type's code rebuilds that type's plugin and swaps it in while the
//     server keeps serving: the next run starts the new binary, runs in flight finish on the old
//     one (their processes keep the old file);
//   - a change to the catalog (a task or parameter added, renamed or removed), or to the SDK
//     under chains/, rebuilds the server too and restarts it (runs in flight get
//     NECTAR_SHUTDOWN_GRACE to finish);
//   - a mistake (the generator's checks, a compile error) is printed with its position, and what
//     runs now stays in service.
//
// chains/ is polled (every devPoll) rather than watched with inotify: editors save by rename
// or by rewrite, folders come and go, and a poll of a few dozen files costs nothing.

const (
	devPoll  = 250 * time.Millisecond
	devQuiet = 200 * time.Millisecond // an editor's save can be several writes: wait for quiet
)

type devLoop struct {
	root, bin, pluginDir string
	getenv               func(string) string
	out, errw            io.Writer
	server               *exec.Cmd
	exited               chan struct{} // closed when server has exited; waitErr says how
	waitErr              error
	// pending is what a failed rebuild left to do: it is retried with the next save.
	pendingTypes  map[string]bool
	pendingServer bool
}

func devCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("usage: nectar dev (in the repository; NECTAR_* variables as for serve)")
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if mod, err := os.ReadFile(filepath.Join(root, "go.mod")); err != nil || !bytes.HasPrefix(mod, []byte("module nectar\n")) {
		return usageError("nectar dev rebuilds chains from source: run it at the root of the Nectar repository (where go.mod and chains/ are), or use make dev")
	}
	d := &devLoop{root: root, bin: filepath.Join(root, "bin"), getenv: getenv, out: stdout, errw: stderr, pendingTypes: map[string]bool{}}
	d.pluginDir = getenv("NECTAR_PLUGIN_DIR")
	if d.pluginDir == "" {
		d.pluginDir = filepath.Join(d.bin, "plugins")
	}
	if err := os.MkdirAll(d.pluginDir, 0o755); err != nil {
		return err
	}
	// The first build must succeed: there is nothing to keep serving yet.
	if err := d.goBuild(ctx, filepath.Join(d.bin, ".nectar-gen"), "./gen"); err != nil {
		return err
	}
	if _, err := d.generate(ctx); err != nil {
		return fmt.Errorf("the chains do not generate; fix them and start again:\n%w", err)
	}
	if err := d.buildServer(ctx); err != nil {
		return err
	}
	types, err := d.chainTypes()
	if err != nil {
		return err
	}
	for _, t := range types {
		if err := d.buildPlugin(ctx, t); err != nil {
			return err
		}
	}
	if err := d.startServer(); err != nil {
		return err
	}
	defer d.stopServer()
	d.say("watching chains/ for changes (Ctrl-C stops)")

	seen, err := d.scan()
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.exited:
			return fmt.Errorf("the server stopped (%v); nectar dev stops with it", d.waitErr)
		case <-time.After(devPoll):
		}
		now, err := d.scan()
		if err != nil {
			d.warn("reading chains/: %v", err)
			continue
		}
		if sameFiles(seen, now) {
			continue
		}
		for { // wait until the editor has finished saving
			time.Sleep(devQuiet)
			again, err := d.scan()
			if err != nil || sameFiles(now, again) {
				break
			}
			now = again
		}
		changed, sdk := changedTypes(seen, now)
		seen = now
		for _, t := range changed {
			d.pendingTypes[t] = true
		}
		d.pendingServer = d.pendingServer || sdk
		d.rebuild(ctx, sdk)
	}
}

func (d *devLoop) say(format string, args ...any) {
	fmt.Fprintf(d.out, "nectar dev: "+format+"\n", args...)
}

func (d *devLoop) warn(format string, args ...any) {
	fmt.Fprintf(d.errw, "nectar dev: "+format+"\n", args...)
}

// rebuild regenerates, then rebuilds the plugins of the chain types with pending changes, and
// the server when the catalog or the SDK changed (sdk: rebuild the generator first). Any failure
// leaves what serves now in service, and the work pending for the next save.
func (d *devLoop) rebuild(ctx context.Context, sdk bool) {
	start := time.Now()
	fail := func(err error, what string) {
		d.warn("%v", err)
		d.warn("not rebuilt; %s", what)
	}
	if sdk {
		if err := d.goBuild(ctx, filepath.Join(d.bin, ".nectar-gen"), "./gen"); err != nil {
			fail(err, "the running server and plugins keep serving")
			return
		}
	}
	written, err := d.generate(ctx)
	if err != nil {
		fail(err, "the running server and plugins keep serving")
		return
	}
	for _, w := range written {
		if strings.HasPrefix(w, "server/catalog/") {
			d.pendingServer = true
		}
		if t, ok := strings.CutPrefix(w, "plugins/mains/"); ok { // a type added, changed or removed
			t, _, _ = strings.Cut(t, "/")
			d.pendingTypes[t] = true
		}
	}
	types := make([]string, 0, len(d.pendingTypes))
	for t := range d.pendingTypes {
		types = append(types, t)
	}
	sort.Strings(types)
	var built []string
	for _, t := range types {
		if _, err := os.Stat(filepath.Join(d.root, "plugins", "mains", t)); err == nil {
			if err := d.buildPlugin(ctx, t); err != nil {
				fail(err, "the running server and plugins keep serving")
				return
			}
			built = append(built, t)
		} // else the type was removed: its old plugin is simply no longer asked for
		delete(d.pendingTypes, t)
	}
	if !d.pendingServer {
		d.say("rebuilt the plugin of %s in %s; the next run uses it", strings.Join(built, ", "), time.Since(start).Round(10*time.Millisecond))
		return
	}
	if err := d.buildServer(ctx); err != nil {
		fail(err, "the server serves the previous catalog until a save builds")
		return
	}
	d.pendingServer = false
	d.say("the catalog or the SDK changed: rebuilt the server and plugins in %s; restarting the server", time.Since(start).Round(10*time.Millisecond))
	d.stopServer()
	if err := d.startServer(); err != nil {
		d.warn("starting the server: %v", err)
	}
}

// generate runs the generator and returns the files it wrote or removed.
func (d *devLoop) generate(ctx context.Context) ([]string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, ".nectar-gen"), "-root", ".", "-v")
	cmd.Dir = d.root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, errors.New(msg)
	}
	return strings.Fields(out.String()), nil
}

// goBuild builds pkg into target through a temporary file renamed into place, so target is
// always a whole binary: the one before or the new one.
func (d *devLoop) goBuild(ctx context.Context, target, pkg string) error {
	tmp := target + ".new"
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, pkg)
	cmd.Dir = d.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build makes them
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &errb, &errb
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("go build %s:\n%s", pkg, strings.TrimSpace(errb.String()))
	}
	return os.Rename(tmp, target)
}

func (d *devLoop) buildServer(ctx context.Context) error {
	return d.goBuild(ctx, filepath.Join(d.bin, "nectar"), "./tools/nectar")
}

// buildPlugin builds a chain type's plugin and installs it with its hash: the binary first,
// then the hash (the launcher waits a moment for a hash that lags its binary).
func (d *devLoop) buildPlugin(ctx context.Context, typ string) error {
	target := filepath.Join(d.pluginDir, typ)
	if err := d.goBuild(ctx, target, "./plugins/mains/"+typ); err != nil {
		return err
	}
	f, err := os.Open(target)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	sum := []byte(hex.EncodeToString(h.Sum(nil)) + "  " + typ + "\n")
	if err := os.WriteFile(target+".sha256.new", sum, 0o644); err != nil {
		return err
	}
	return os.Rename(target+".sha256.new", target+".sha256")
}

func (d *devLoop) chainTypes() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(d.root, "plugins", "mains"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// startServer runs bin/nectar serve with this environment; its output is ours.
func (d *devLoop) startServer() error {
	cmd := exec.Command(filepath.Join(d.bin, "nectar"), "serve")
	cmd.Dir = d.root
	cmd.Env = append(os.Environ(), "NECTAR_PLUGIN_DIR="+d.pluginDir)
	cmd.Stdout, cmd.Stderr = d.out, d.errw
	// Killed with us if we die without stopping it (as plugins are with their server).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting bin/nectar serve: %w", err)
	}
	exited := make(chan struct{})
	d.server, d.exited = cmd, exited
	go func() {
		d.waitErr = cmd.Wait() // read only after exited is closed
		close(exited)
	}()
	return nil
}

// stopServer asks the server to shut down (SIGTERM: runs get their grace period) and waits; a
// server that has exited already (a crash, or Ctrl-C reached it too) is just forgotten.
func (d *devLoop) stopServer() {
	if d.server == nil {
		return
	}
	select {
	case <-d.exited:
	default:
		d.server.Process.Signal(syscall.SIGTERM)
		<-d.exited
	}
	d.server = nil
}

// fileState is what a poll compares: a change of either is a save.
type fileState struct {
	size    int64
	modTime time.Time
}

// scan lists the Go files under chains/ (tests excluded: they are not in the plugin).
func (d *devLoop) scan() (map[string]fileState, error) {
	out := map[string]fileState{}
	err := filepath.WalkDir(filepath.Join(d.root, "chains"), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		rel, _ := filepath.Rel(d.root, p)
		out[filepath.ToSlash(rel)] = fileState{fi.Size(), fi.ModTime()}
		return nil
	})
	return out, err
}

func sameFiles(a, b map[string]fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// changedTypes lists the chain types (folders chains/<type> with a _chain.go file) with a file
// added, changed or removed; sdk reports a change elsewhere under chains/ (the SDK itself, which
// every plugin, the generator and the server build on): then every type is listed.
func changedTypes(before, after map[string]fileState) (types []string, sdk bool) {
	isType := map[string]bool{}
	for _, files := range []map[string]fileState{before, after} {
		for p := range files {
			if parts := strings.Split(p, "/"); len(parts) == 3 && strings.HasSuffix(parts[2], "_chain.go") {
				isType[parts[1]] = true
			}
		}
	}
	set := map[string]bool{}
	mark := func(p string) {
		if parts := strings.Split(p, "/"); len(parts) == 3 && isType[parts[1]] {
			set[parts[1]] = true
			return
		}
		sdk = true
	}
	for p, v := range after {
		if w, ok := before[p]; !ok || w != v {
			mark(p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			mark(p)
		}
	}
	if sdk {
		set = isType
	}
	for t := range set {
		types = append(types, t)
	}
	sort.Strings(types)
	return types, sdk
}
