package testchains

import (
	"encoding/json"
	"fmt"
	"runtime"
	"syscall"
	"time"

	"nectar/chains"
)

// BurnTask uses `for` of CPU time (not wall time: on a busy machine it takes longer), in a
// process of its own, so its CPU seconds are its own; with shared, in the run's process.
type BurnTask struct {
	For    time.Duration `param:"for" default:"1s"`
	Shared bool          `param:"shared" default:"false"`
}

func (t BurnTask) Isolate() bool { return !t.Shared }

func (t BurnTask) Run(ctx *chains.Context) error {
	runtime.LockOSThread() // RUSAGE_THREAD then counts this loop's CPU exactly
	defer runtime.UnlockOSThread()
	x := 0
	start := threadCPU() // the thread may have served an earlier task of a reused process
	for threadCPU()-start < t.For {
		for i := 0; i < 100_000; i++ {
			x += i * i
		}
	}
	_, err := fmt.Fprintf(ctx.Out(), "burned %s (%d)\n", t.For, x%7)
	return err
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// AllocTask holds `mb` MiB of touched memory for `hold`, in a process of its own.
type AllocTask struct {
	MB   int           `param:"mb" default:"200"`
	Hold time.Duration `param:"hold" default:"300ms"`
}

func (t AllocTask) Isolate() bool { return true }

func (t AllocTask) Run(ctx *chains.Context) error {
	buf := make([]byte, t.MB<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = byte(i) // touch every page so it is resident
	}
	time.Sleep(t.Hold)
	_, err := fmt.Fprintf(ctx.Out(), "held %d MiB (%d)\n", t.MB, buf[len(buf)-4096])
	return err
}

// CountedTask sleeps for `for` and defines its own metric: how many times it was sampled and
// the highest CPU percent seen, carried from one call to the next.
type CountedTask struct {
	For time.Duration `param:"for" default:"600ms"`
}

type countedMetrics struct {
	Calls   int     `json:"calls"`
	MaxCPU  float64 `json:"max_cpu_percent"`
	LastRAM uint64  `json:"last_ram_bytes"`
	Elapsed string  `json:"elapsed"`
}

func (t CountedTask) DefineMetrics(cpu float64, ram uint64, elapsed time.Duration, previous json.RawMessage) (any, error) {
	var m countedMetrics
	if previous != nil {
		if err := json.Unmarshal(previous, &m); err != nil {
			return nil, err
		}
	}
	m.Calls++
	m.MaxCPU = max(m.MaxCPU, cpu)
	m.LastRAM = ram
	m.Elapsed = elapsed.Round(time.Millisecond).String()
	return m, nil
}

func (t CountedTask) Run(ctx *chains.Context) error {
	time.Sleep(t.For)
	_, err := fmt.Fprintln(ctx.Out(), "counted")
	return err
}
