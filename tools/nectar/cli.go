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
	"nectar/server/history"
	"nectar/server/runs"
)

// runTask runs one task through the same run manager, store and plugins as the server, and
// prints its out: the quickest way to try a chain while writing it.
func runTask(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("usage: nectar run <type>/<chain>/<Task> [param=value ...]")
	}
	parts := strings.Split(args[0], "/")
	if len(parts) != 3 {
		return usageError("%q: want <type>/<chain>/<Task>, such as testchains/hello_chain/HelloTask", args[0])
	}
	cat := catalog.Generated()
	task, ok := cat.Task(parts[0], parts[1], parts[2])
	if !ok {
		return usageError("no task %s (see GET /api/chains, or make generate)", args[0])
	}
	q := url.Values{}
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usageError("%q: want param=value", kv)
		}
		q.Add(k, v)
	}
	params, err := task.ParseQuery(q)
	if err != nil {
		return &exitError{2, err} // a bad parameter is a usage error
	}
	cfg, err := server.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	cfg.WarmPlugins = false // one run: nothing to warm up for
	cfg.Schedules = false   // one run: the serving servers fire the schedules
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(cfg, cat, logger)
	if err != nil {
		return err
	}
	defer srv.Close(context.Background())
	r, _, err := srv.Runs().Submit(runs.Spec{Type: task.Type, Chain: task.Chain, Task: task.Name, Params: params, Trigger: history.TriggerCLI})
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
		return fmt.Errorf("%s: %s", rec.Status, rec.Error) // as trigger --wait says it
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

const testTemplate = `package %[1]s

import (
	"testing"

	"nectar/chains/chainstest"
)

// A task runs in the test's own process: no server, no plugin. chainstest.Inputs gives the outs
// of the tasks it requires, in Requires order.
func Test%[2]sTask(t *testing.T) {
	res := chainstest.Run(t, %[2]sTask{Name: "ada"})
	if res.Err != nil {
		t.Fatalf("%[2]sTask failed: %%v\nlog:\n%%s", res.Err, res.Log)
	}
	if got, want := string(res.Out), "%[3]s for ada\n"; got != want {
		t.Errorf("out = %%q, want %%q", got, want)
	}
}
`

// newChain writes chains/<type>/<name>_chain.go and its test, refusing to overwrite anything and
// any name the generator would refuse.
func newChain(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: nectar new <type> <name>   (writes chains/<type>/<name>_chain.go and <name>_chain_test.go)")
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
	task := names.Camel(name)
	base := filepath.Join("chains", typ, name+names.ChainSuffix)
	files := []struct{ path, text string }{
		{base + ".go", fmt.Sprintf(chainTemplate, typ, task, name)},
		{base + "_test.go", fmt.Sprintf(testTemplate, typ, task, name)},
	}
	for _, f := range files {
		if _, err := os.Stat(f.path); err == nil {
			return fmt.Errorf("%s exists already", f.path)
		}
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := writeNew(f.path, f.text); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "wrote %s.go and %s_test.go\nnext: go test ./chains/%s/ ; make run, then\n  curl -X POST 'localhost:5000/api/chains/%s/%s_chain/%sTask?name=ada&wait=10s'\n",
		base, base, typ, typ, name, task)
	return nil
}

// writeNew creates path with text, failing if it exists (O_EXCL: no race with another writer).
func writeNew(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists already", path)
	}
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	return errors.Join(err, f.Close())
}
