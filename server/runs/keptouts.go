package runs

import (
	"os"
	"sync"
	"sync/atomic"
)

// keptOuts are the spool copies of the small outs a lane uploaded to a remote store, by key,
// until the lane ends. A later task of the run that reads one (a join of a thousand leaves)
// reads the copy instead of downloading what was just uploaded: a request per input less, on
// a store where requests are the cost. The copy is the file the upload read, and nothing
// writes it again: each execution of a task stages its files under a name of its own
// (lane.prepare), so a task executed again is uploaded, and kept, from another file. Outs
// over keepOutMax go as before, and so does any beyond keptBudget, which bounds what every
// lane of the process keeps (the spool is often in memory, on tmpfs).
type keptOuts struct {
	mu    sync.Mutex
	total *atomic.Int64     // the process's kept bytes (Manager.keptBytes)
	byKey map[string]string // the copy of each key's last committed out
	files []string          // every copy kept, superseded ones too: a reader may have one
	size  int64
}

const (
	keepOutMax = 1 << 20  // an out of 1 MiB or less is kept
	keptBudget = 64 << 20 // of the spool, for every lane of the process
)

// keep takes path, the spool file of key's out just committed, if it is small enough and the
// budget allows. false: the caller removes it, and key has no copy here any more (the one
// kept before, if any, is not what the store holds now).
func (k *keptOuts) keep(key, path string) bool {
	fi, err := os.Stat(path)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil || fi.Size() > keepOutMax || !k.reserve(fi.Size()) {
		delete(k.byKey, key)
		return false
	}
	if k.byKey == nil {
		k.byKey = map[string]string{}
	}
	k.byKey[key] = path
	k.files = append(k.files, path)
	k.size += fi.Size()
	return true
}

// reserve counts n more bytes kept, if the budget allows.
func (k *keptOuts) reserve(n int64) bool {
	if k.total == nil { // a lane of its own (tests): its budget alone
		return k.size+n <= keptBudget
	}
	if k.total.Add(n) > keptBudget {
		k.total.Add(-n)
		return false
	}
	return true
}

// lookup is the spool copy of key's out, if this lane kept one.
func (k *keptOuts) lookup(key string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.byKey[key]
	return p, ok
}

// removeAll removes every copy: the lane's tasks have all returned.
func (k *keptOuts) removeAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.files {
		os.Remove(p)
	}
	if k.total != nil {
		k.total.Add(-k.size)
	}
	k.byKey, k.files, k.size = nil, nil, 0
}
