package runs

// growStack grows the calling goroutine's stack to 8 KB in one step, while the goroutine is
// still shallow. A goroutine starts with a small stack that the runtime doubles, by copying it,
// each time a call runs out of room; a task's goroutine runs deep (the lane, the plugin call,
// the report to its driver and the run history), so it grew two or three times, each copy
// walking every frame on it: 5 % of the server's CPU in a fan-in of small tasks. Copying a
// stack of one or two frames costs next to nothing. (CockroachDB grows its request goroutines'
// stacks the same way, in pkg/util/growstack.)
//
//go:noinline
func growStack() {
	var frame [6 << 10]byte // + the stack guard: the next size that fits is 8 KB
	keepFrame(frame[:])
}

// keepFrame keeps growStack's frame from being optimised away.
//
//go:noinline
func keepFrame([]byte) {}
