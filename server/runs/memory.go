package runs

import (
	"runtime/debug"
	"sync/atomic"
	"time"
)

// bigRunTasks is the size of a run whose end gives the memory it used back to the operating
// system at once.
//
// Why: a big run's graph, task states and buffers turn into garbage when it ends, but the
// collector's goal stays at twice the run's peak live heap until its next cycle, which an idle
// server may not start for two minutes, and the background scavenger returns pages slowly. A
// server that ran one 50,000-task graph sat at 200+ MB long after it ended. One forced
// collection and release costs milliseconds; for a run this size that is nothing.
var bigRunTasks = 10_000

// releasing is set while a release runs: runs ending together share it.
var releasing atomic.Bool

// releaseMemory gives memory back to the system if the run that just ended had tasks tasks:
// once now, before its waiters are answered (the answer waits a few milliseconds; a reader
// arriving at once then finds the server small), and once more by the returned function's
// goroutine a moment after they were, since until then they hold the run's record (tens of
// MB at this size), which the first collection had to keep.
func releaseMemory(tasks int) (again func()) {
	if tasks < bigRunTasks || !releasing.CompareAndSwap(false, true) {
		return func() {}
	}
	debug.FreeOSMemory()
	wait := releaseAgainAfter
	return func() {
		go func() {
			defer releasing.Store(false)
			time.Sleep(wait)
			debug.FreeOSMemory()
		}()
	}
}

// releaseAgainAfter is how long after a big run's waiters were answered the second release
// comes.
var releaseAgainAfter = time.Second
