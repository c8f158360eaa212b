package server

import (
	"sync"
	"time"
)

// doneCache remembers for a short while which keys have an out, so repeated POSTs of a done
// task (the cache-hit path) do not ask a remote store every time. An out is never removed by
// Nectar, so a stale entry can only come from a hand deletion in the bucket, and lives at most
// ttl. ttl 0 turns it off.
type doneCache struct {
	ttl time.Duration
	max int

	mu   sync.Mutex
	keys map[string]doneEntry
}

// doneEntry is when a key was seen done, and whether its log was missing then (a task made
// as another run's dependency that wrote no log stores none).
type doneEntry struct {
	seen     time.Time
	logEmpty bool
}

func newDoneCache(ttl time.Duration, max int) *doneCache {
	return &doneCache{ttl: ttl, max: max, keys: map[string]doneEntry{}}
}

// hit reports whether key was seen done within ttl, and whether its log was missing.
func (c *doneCache) hit(key string) (done, logEmpty bool) {
	if c.ttl <= 0 {
		return false, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.keys[key]
	if ok && time.Since(e.seen) < c.ttl {
		return true, e.logEmpty
	}
	if ok {
		delete(c.keys, key)
	}
	return false, false
}

func (c *doneCache) add(key string, logEmpty bool) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= c.max { // bounded: start over rather than grow
		clear(c.keys)
	}
	c.keys[key] = doneEntry{seen: time.Now(), logEmpty: logEmpty}
}

// forget drops key: what was seen of it may change (a forced rerun).
func (c *doneCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.keys, key)
}
