// Package catalog is the list of tasks the generator found, with their parameter schemas and
// their typed query parsers. catalog_gen.go is written by `make generate`; this file holds the
// types and lookups, so the server needs no reflection and never imports user code.
package catalog

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	"nectar/chains/params"
)

// Param describes one parameter, as shown by the catalog endpoints.
type Param struct {
	Name     string   `json:"name"`
	Kind     string   `json:"type"`
	Default  string   `json:"default,omitempty"`
	Required bool     `json:"required"`
	Enum     []string `json:"enum,omitempty"`
	Doc      string   `json:"doc,omitempty"`
}

// Schedule is a task's chains.Schedule, as declared.
type Schedule struct {
	Cron     string `json:"cron"`
	TimeZone string `json:"time_zone,omitempty"`
	Start    string `json:"start,omitempty"`
	CatchUp  bool   `json:"catch_up"`
	// Param is the time.Time parameter that receives the start of each interval.
	Param string `json:"param"`
}

// Task is one route: POST /api/chains/<Type>/<Chain>/<Name>.
type Task struct {
	Type   string  `json:"type"`
	Chain  string  `json:"chain"`
	Name   string  `json:"task"`
	Doc    string  `json:"doc,omitempty"`
	Params []Param `json:"params"`
	// Connections are the connection names the task declares (chains.Connector): the server
	// gives it NECTAR_CONN_<NAME> of each.
	Connections []string `json:"connections,omitempty"`
	// Queue is the queue the task names (chains.Queuer); empty: its chain type's.
	Queue string `json:"queue,omitempty"`
	// Plain says the task declares none of Requires, Timeout, Retry, Isolate and DefineMetrics:
	// its task graph is itself alone, with the connections and queue above, so the server
	// builds it without a call to the plugin (the plugin refuses a task that is no longer
	// plain, should it be newer than this catalog).
	Plain bool `json:"-"`
	// Schedule is the task's declared schedule (nil: none), checked by the generator.
	Schedule *Schedule `json:"schedule,omitempty"`
	// Parse validates a query and returns the canonical parameter JSON (the run key's source).
	Parse func(url.Values) ([]byte, error) `json:"-"`
}

// HasParam reports whether name is one of the task's parameters.
func (t *Task) HasParam(name string) bool {
	for i := range t.Params {
		if t.Params[i].Name == name {
			return true
		}
	}
	return false
}

// ParseQuery checks every name in q against the task's parameters and the callers' own (extra,
// such as wait and force, which the caller reads itself), then parses the task's parameters
// into canonical JSON. The one validator of a request's parameters: the API and the CLI both use
// it, so both refuse the same input with the same words.
func (t *Task) ParseQuery(q url.Values, extra ...string) ([]byte, error) {
	for name := range q {
		if !t.HasParam(name) && !slices.Contains(extra, name) {
			takes := strings.Join(append(t.ParamNames(), extra...), ", ")
			if takes == "" {
				takes = "nothing"
			}
			return nil, &params.Error{Param: name, Reason: fmt.Sprintf("is not a parameter of %s (it takes: %s)", t.Name, takes)}
		}
	}
	return t.Parse(q)
}

// ParamNames lists the parameter names, for error messages.
func (t *Task) ParamNames() []string {
	names := make([]string, len(t.Params))
	for i, p := range t.Params {
		names[i] = p.Name
	}
	return names
}

// Catalog indexes tasks by type, chain and name.
type Catalog struct {
	tasks  []*Task
	byPath map[string]*Task
}

// Generated is the catalog of this build.
func Generated() *Catalog { return New(generated) }

// New indexes tasks (tests build small catalogs of their own).
func New(tasks []*Task) *Catalog {
	c := &Catalog{tasks: tasks, byPath: make(map[string]*Task, len(tasks))}
	for _, t := range tasks {
		c.byPath[t.Type+"/"+t.Chain+"/"+t.Name] = t
	}
	return c
}

// Tasks returns every task, sorted by type, chain and name.
func (c *Catalog) Tasks() []*Task { return c.tasks }

// Task finds one task.
func (c *Catalog) Task(typ, chain, name string) (*Task, bool) {
	t, ok := c.byPath[typ+"/"+chain+"/"+name]
	return t, ok
}

// Types lists the chain types.
func (c *Catalog) Types() []string {
	return c.distinct(func(t *Task) (string, bool) { return t.Type, true })
}

// Queues lists the queues a worker serving every chain type takes tasks from: each type's own
// and each queue a task names.
func (c *Catalog) Queues() []string {
	qs := c.Types()
	for _, q := range c.distinct(func(t *Task) (string, bool) { return t.Queue, t.Queue != "" }) {
		if !slices.Contains(qs, q) {
			qs = append(qs, q)
		}
	}
	sort.Strings(qs)
	return qs
}

// TypesServed lists the chain types a worker taking tasks from queues builds graphs for: those
// whose own queue, or a queue one of their tasks names, it serves. A worker asked for the graph
// of another type would start runs whose tasks no worker takes; unanswered, the request waits
// for a worker that does, and the run fails after NECTAR_WORKER_WAIT saying so.
func (c *Catalog) TypesServed(queues []string) []string {
	var out []string
	for _, typ := range c.Types() {
		serves := slices.Contains(queues, typ)
		for _, t := range c.tasks {
			serves = serves || (t.Type == typ && t.Queue != "" && slices.Contains(queues, t.Queue))
		}
		if serves {
			out = append(out, typ)
		}
	}
	return out
}

// Chains lists the chains of one type.
func (c *Catalog) Chains(typ string) []string {
	return c.distinct(func(t *Task) (string, bool) { return t.Chain, t.Type == typ })
}

// ChainTasks lists the tasks of one chain.
func (c *Catalog) ChainTasks(typ, chain string) []*Task {
	var out []*Task
	for _, t := range c.tasks {
		if t.Type == typ && t.Chain == chain {
			out = append(out, t)
		}
	}
	return out
}

func (c *Catalog) distinct(pick func(*Task) (string, bool)) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, t := range c.tasks {
		if v, ok := pick(t); ok && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}
