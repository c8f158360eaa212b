package ui

import (
	"container/list"
	"context"
	"strconv"
	"sync"

	"nectar/server/runs"
)

// shapeCache keeps the laid-out graphs of the runs being viewed, by run ID: a run page polled
// every second lays its run out once, and sixteen pages opened at once lay it out once between
// them (the first lays out, the others wait for it). It is bounded by the tasks of the shapes it
// holds, least recently used first out; a shape bigger than the whole budget is made for its
// view and not kept.
type shapeCache struct {
	mu     sync.Mutex
	budget int // tasks
	used   int
	lru    *list.List // of *shapeEntry, most recently used at the front
	byRun  map[string]*list.Element
}

type shapeEntry struct {
	id    string
	cost  int
	ready chan struct{} // closed once s is set
	s     *shape
}

// shapeCacheTasks bounds the tasks of the cached shapes: a task drawn in a group costs a byte
// and a place in its group's list (some 10 bytes), one drawn alone a node and an edge (some
// 250 bytes): 3 to 60 MB at most. Two of the biggest graphs a run may have by default
// (NECTAR_MAX_TASKS), with room to spare.
const shapeCacheTasks = 250_000

func newShapeCache(budget int) *shapeCache {
	return &shapeCache{budget: budget, lru: list.New(), byRun: map[string]*list.Element{}}
}

// get returns the shape of g's run, laid out from g if no one has yet. It fails with
// runs.ErrRunChanged if the run's tasks are no longer g's (glance again).
func (c *shapeCache) get(ctx context.Context, g *runs.Glance) (*shape, error) {
	n := len(g.Briefs)
	if n+1 > c.budget {
		return layout(g)
	}
	// The key and the task count are part of the name: a record without a run ID (an out made
	// as another run's dependency) has one task, and a run's tasks are set once, but a record
	// that disagrees with the one laid out must not borrow its shape.
	id := g.Header.Key + " " + g.Header.RunID + " " + strconv.Itoa(n)
	c.mu.Lock()
	if el, ok := c.byRun[id]; ok {
		c.lru.MoveToFront(el)
		e := el.Value.(*shapeEntry)
		c.mu.Unlock()
		select {
		case <-e.ready:
			if e.s == nil {
				return nil, runs.ErrRunChanged // its maker could not lay it out: glance again
			}
			return e.s, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for c.used+n+1 > c.budget {
		c.remove(c.lru.Back())
	}
	e := &shapeEntry{id: id, cost: n + 1, ready: make(chan struct{})}
	el := c.lru.PushFront(e)
	c.byRun[id] = el
	c.used += n + 1
	c.mu.Unlock()
	// Whatever happens, the waiters are released, and an entry without a shape is dropped (a
	// panic goes on up to the server's recovery).
	defer func() {
		if e.s == nil {
			c.mu.Lock()
			if c.byRun[id] == el {
				c.remove(el)
			}
			c.mu.Unlock()
		}
		close(e.ready)
	}()
	s, err := layout(g)
	e.s = s
	return s, err
}

// layout lays out g's run, if its tasks are still g's.
func layout(g *runs.Glance) (*shape, error) {
	shapes, ok := g.Shapes()
	if !ok {
		return nil, runs.ErrRunChanged
	}
	return layoutShape(shapes), nil
}

func (c *shapeCache) remove(el *list.Element) {
	e := el.Value.(*shapeEntry)
	c.lru.Remove(el)
	delete(c.byRun, e.id)
	c.used -= e.cost
}
