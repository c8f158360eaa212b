package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"nectar/gen/names"
	"nectar/server"
	"nectar/server/catalog"
	"nectar/server/runs"
)

// runTask runs one task through the same run manager, store and plugins as the server, and
// prints its out: the quickest way to try a chain while writing it.
func runTask(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: nectar run <type>/<chain>/<Task> [param=value ...]")
	}
	parts := strings.Split(args[0], "/")
	if len(parts) != 3 {
		return fmt.Errorf("%q: want <type>/<chain>/<Task>, such as testchains/hello_chain/HelloTask", args[0])
	}
	cat := catalog.Generated()
	task, ok := cat.Task(parts[0], parts[1], parts[2])
	if !ok {
		return fmt.Errorf("no task %s (see GET /api/chains, or make generate)", args[0])
	}
	q := url.Values{}
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q: want param=value", kv)
		}
		q.Add(k, v)
	}
	params, err := task.ParseQuery(q)
	if err != nil {
		return err
	}
	cfg, err := server.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	cfg.WarmPlugins = false // one run: nothing to warm up for
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(cfg, cat, logger)
	if err != nil {
		return err
	}
	defer srv.Close(context.Background())
	r, _, err := srv.Runs().Submit(runs.Spec{Type: task.Type, Chain: task.Chain, Task: task.Name, Params: params})
	if err != nil {
		return err
	}
	select {
	case <-r.Done():
	case <-ctx.Done():
		srv.Runs().Cancel(r.Snapshot().Key, "interrupted")
		<-r.Done()
	}
	rec := r.Snapshot()
	for _, t := range rec.Tasks {
		note := ""
		if t.Cached {
			note = " (cached)"
		}
		if t.Error != "" {
			note += ": " + t.Error
		}
		fmt.Fprintf(stderr, "%-15s %s/%s %s%s\n", t.Status, t.Chain, t.Task, t.Key, note)
	}
	if rec.Status != runs.Done {
		return fmt.Errorf("%s %s: %s", rec.Task, strings.ToLower(string(rec.Status)), rec.Error)
	}
	rc, err := srv.Store().Get(ctx, rec.Key+"/"+runs.OutName)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(stdout, rc)
	return err
}

const chainTemplate = `package %[1]s

import (
	"fmt"

	"nectar/chains"
)

// %[2]sTask is where %[3]s starts: rename it, give it parameters, write its out.
// Every exported type ending in Task becomes POST /api/chains/%[1]s/%[3]s_chain/<Task>.
type %[2]sTask struct {
	// Who the output is for (a parameter: every field needs a param tag).
	Name string ` + "`param:\"name\" default:\"world\"`" + `
}

// Run writes the task's out; it becomes visible only if Run returns nil.
func (t %[2]sTask) Run(ctx *chains.Context) error {
	ctx.Log().Info("running", "name", t.Name)
	_, err := fmt.Fprintf(ctx.Out(), "%[3]s for %%s\n", t.Name)
	return err
}
`

// newChain writes chains/<type>/<name>_chain.go, refusing to overwrite anything.
func newChain(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: nectar new <type> <name>   (writes chains/<type>/<name>_chain.go)")
	}
	typ, name := args[0], strings.TrimSuffix(args[1], names.ChainSuffix)
	if err := names.CheckType(typ); err != nil {
		return err
	}
	if err := names.CheckChain(name); err != nil {
		return err
	}
	if _, err := os.Stat("chains"); err != nil {
		return errors.New("no chains/ folder here: run nectar new from the repository's root")
	}
	path := filepath.Join("chains", typ, name+"_chain.go")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists already", path)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, chainTemplate, typ, names.Camel(name), name)
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\nnext: make run, then\n  curl -X POST 'localhost:5000/api/chains/%s/%s_chain/%sTask?name=ada&wait=10s'\n",
		path, typ, name, names.Camel(name))
	return nil
}
