package server

import (
	"strings"
	"sync"
	"sync/atomic"
)

// backfills is what this server's backfills have not started yet. A key counts the backfills
// waiting to start it: two that overlap may both wait for one, and the end of one (finished or
// stopped) must not make the other's interval look unknown.
type backfills struct {
	mu      sync.Mutex
	pending map[string]int
	// stops counts the stops this server wrote: a backfill here asks the store again at once
	// when it changes, rather than at its next periodic look.
	stops atomic.Int64
}

func (b *backfills) add(keys []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[string]int{}
	}
	for _, k := range keys {
		b.pending[k]++
	}
}

// done says one backfill no longer waits to start key (it started it, or it ended).
func (b *backfills) done(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending[key] > 1 {
		b.pending[key]--
	} else {
		delete(b.pending, key)
	}
}

// waiting reports whether a backfill of this server waits to start key.
func (b *backfills) waiting(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending[key] > 0
}

// count is how many keys under prefix wait to be started.
func (b *backfills) count(prefix string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for k := range b.pending {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}
