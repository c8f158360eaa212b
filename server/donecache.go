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
	keys map[string]time.Time // key -> when it was seen done
}

func newDoneCache(ttl time.Duration, max int) *doneCache {
	return &doneCache{ttl: ttl, max: max, keys: map[string]time.Time{}}
}

func (c *doneCache) hit(key string) bool {
	if c.ttl <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen, ok := c.keys[key]
	if ok && time.Since(seen) < c.ttl {
		return true
	}
	if ok {
		delete(c.keys, key)
	}
	return false
}

func (c *doneCache) add(key string) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= c.max { // bounded: start over rather than grow
		clear(c.keys)
	}
	c.keys[key] = time.Now()
}
