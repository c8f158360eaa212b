package runs

import (
	"container/list"
	"context"
	"sync"

	"nectar/targets"
)

// recordCache keeps decoded run records, so that reading the status of a stored run costs one
// metadata read of its record (a stat here, a HEAD on S3) rather than a download and a decode:
// a record of 50,000 tasks is 15 MB of JSON, and sixteen readers each decoding their own copy
// took a server past 2 GB. Every use checks the entry against the object's version
// (targets.SameVersion), so a record another server rewrote is read again. Concurrent misses of one key share one
// read. It is bounded by the tasks it holds, least recently used first out.
type recordCache struct {
	mu      sync.Mutex
	budget  int // tasks held at most
	used    int
	lru     *list.List // of *cacheEntry, most recently used at the front
	byKey   map[string]*list.Element
	loading map[string]*recordLoad
}

type cacheEntry struct {
	key  string
	info targets.Info
	rec  Record // shared by every reader: never modified
}

type recordLoad struct {
	done chan struct{}
	info targets.Info
	rec  Record
	err  error
}

// recordCacheTasks bounds the tasks the cache holds (about 400 bytes each in memory).
const recordCacheTasks = 200_000

func newRecordCache(budget int) *recordCache {
	return &recordCache{budget: budget, lru: list.New(), byKey: map[string]*list.Element{}, loading: map[string]*recordLoad{}}
}

func entryCost(rec *Record) int { return len(rec.Tasks) + 1 }

// get returns key's record if the cache holds the version described by info.
func (c *recordCache) get(key string, info targets.Info) (Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return Record{}, false
	}
	e := el.Value.(*cacheEntry)
	if !targets.SameVersion(e.info, info) {
		c.remove(el)
		return Record{}, false
	}
	c.lru.MoveToFront(el)
	return e.rec, true
}

// put keeps rec as the version info of key's record.
func (c *recordCache) put(key string, info targets.Info, rec Record) {
	cost := entryCost(&rec)
	if cost > c.budget {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.remove(el)
	}
	for c.used+cost > c.budget {
		c.remove(c.lru.Back())
	}
	c.byKey[key] = c.lru.PushFront(&cacheEntry{key: key, info: info, rec: rec})
	c.used += cost
}

func (c *recordCache) remove(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	delete(c.byKey, e.key)
	c.used -= entryCost(&e.rec)
}

// load reads key's record, once for all the callers that ask for the same version meanwhile.
func (c *recordCache) load(ctx context.Context, key string, info targets.Info, read func(context.Context) (Record, error)) (Record, error) {
	c.mu.Lock()
	if l, ok := c.loading[key]; ok && targets.SameVersion(l.info, info) {
		c.mu.Unlock()
		select {
		case <-l.done:
			return l.rec, l.err
		case <-ctx.Done():
			return Record{}, ctx.Err()
		}
	}
	l := &recordLoad{done: make(chan struct{}), info: info}
	c.loading[key] = l
	c.mu.Unlock()

	l.rec, l.err = read(context.WithoutCancel(ctx)) // others wait on it: one leaving ends nothing
	c.mu.Lock()
	if c.loading[key] == l {
		delete(c.loading, key)
	}
	c.mu.Unlock()
	if l.err == nil {
		c.put(key, info, l.rec)
	}
	close(l.done)
	return l.rec, l.err
}
