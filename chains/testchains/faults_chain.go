package testchains

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"nectar/chains"
)

// FailTask always fails, with the message given.
type FailTask struct {
	Message string `param:"message" default:"failed on purpose"`
}

func (t FailTask) Run(ctx *chains.Context) error {
	fmt.Fprintln(ctx.Out(), "partial output that must never be visible")
	fmt.Println("FailTask: a plain print reaches the log too")
	ctx.Log().Error("about to fail", "message", t.Message)
	return errors.New(t.Message)
}

// PanicTask panics; the run fails with the panic and the stack is in the log.
type PanicTask struct {
	Message string `param:"message" default:"panicked on purpose"`
}

func (t PanicTask) Run(ctx *chains.Context) error {
	fmt.Fprintln(ctx.Out(), "partial output that must never be visible")
	panic(t.Message)
}

// ExitTask calls os.Exit in the middle of its run, killing its plugin process.
type ExitTask struct {
	Code int `param:"code" default:"3"`
}

func (t ExitTask) Run(ctx *chains.Context) error {
	fmt.Fprintln(ctx.Out(), "partial output that must never be visible")
	fmt.Fprintln(os.Stderr, "ExitTask: exiting with code", t.Code)
	os.Exit(t.Code)
	return nil
}

// SleepTask sleeps for duration (or until cancelled), then writes "slept <duration>".
type SleepTask struct {
	Duration time.Duration `param:"duration" default:"1s"`
}

func (t SleepTask) Run(ctx *chains.Context) error {
	select {
	case <-time.After(t.Duration):
	case <-ctx.Context().Done():
		return ctx.Context().Err()
	}
	_, err := fmt.Fprintf(ctx.Out(), "slept %s\n", t.Duration)
	return err
}

// The five steps form one chain: StepFiveTask requires StepFourTask ... requires StepOneTask.
// StepThreeTask fails while the file named by gate exists, so a POST of StepFiveTask fails at
// step 3; remove the file and the same POST resumes at step 3, reusing steps 1 and 2.

// StepOneTask is the first step: it writes "1".
type StepOneTask struct {
	Gate string `param:"gate"`
}

func (t StepOneTask) Run(ctx *chains.Context) error { return step(ctx, "1") }

// StepTwoTask appends "2".
type StepTwoTask struct {
	Gate string `param:"gate"`
}

func (t StepTwoTask) Requires() []chains.Task       { return []chains.Task{StepOneTask(t)} }
func (t StepTwoTask) Run(ctx *chains.Context) error { return step(ctx, "2") }

// StepThreeTask appends "3", but fails while the file named by gate exists.
type StepThreeTask struct {
	// A file whose existence makes this step fail.
	Gate string `param:"gate"`
}

func (t StepThreeTask) Requires() []chains.Task { return []chains.Task{StepTwoTask(t)} }
func (t StepThreeTask) Run(ctx *chains.Context) error {
	if t.Gate != "" {
		if _, err := os.Stat(t.Gate); err == nil {
			return fmt.Errorf("gate %s is closed (remove the file to let step 3 pass)", t.Gate)
		}
	}
	return step(ctx, "3")
}

// StepFourTask appends "4".
type StepFourTask struct {
	Gate string `param:"gate"`
}

func (t StepFourTask) Requires() []chains.Task       { return []chains.Task{StepThreeTask(t)} }
func (t StepFourTask) Run(ctx *chains.Context) error { return step(ctx, "4") }

// StepFiveTask appends "5": its out is "12345".
type StepFiveTask struct {
	Gate string `param:"gate"`
}

func (t StepFiveTask) Requires() []chains.Task       { return []chains.Task{StepFourTask(t)} }
func (t StepFiveTask) Run(ctx *chains.Context) error { return step(ctx, "5") }

func step(ctx *chains.Context, n string) error {
	var prev string
	if ctx.NumInputs() > 0 {
		b, err := ctx.ReadInput(0)
		if err != nil {
			return err
		}
		prev = strings.TrimSpace(string(b))
	}
	ctx.Log().Info("step", "n", n, "after", prev)
	_, err := fmt.Fprintln(ctx.Out(), prev+n)
	return err
}

// WaitFileTask waits while the file named by path exists, then writes "released": a task that
// stays RUNNING for as long as a test needs.
type WaitFileTask struct {
	Path string `param:"path" required:"true"`
}

func (t WaitFileTask) Run(ctx *chains.Context) error {
	for {
		if _, err := os.Stat(t.Path); err != nil {
			break
		}
		select {
		case <-ctx.Context().Done():
			return ctx.Context().Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	_, err := fmt.Fprintln(ctx.Out(), "released")
	return err
}

// ResumeTask requires a quick HelloTask and a WaitFileTask: kill the server while the second
// waits, and a new POST reuses the first.
type ResumeTask struct {
	Name string `param:"name" default:"world"`
	Path string `param:"path" required:"true"`
}

func (t ResumeTask) Requires() []chains.Task {
	return []chains.Task{HelloTask{Name: t.Name}, WaitFileTask{Path: t.Path}}
}

func (t ResumeTask) Run(ctx *chains.Context) error {
	_, err := fmt.Fprintln(ctx.Out(), "resumed")
	return err
}

// TickTask logs "tick <i>" count times, every interval: a log to read while it is written.
type TickTask struct {
	Count int           `param:"count" default:"10"`
	Every time.Duration `param:"every" default:"100ms"`
}

func (t TickTask) Run(ctx *chains.Context) error {
	for i := 0; i < t.Count; i++ {
		ctx.Log().Info("tick", "i", i)
		select {
		case <-ctx.Context().Done():
			return ctx.Context().Err()
		case <-time.After(t.Every):
		}
	}
	_, err := fmt.Fprintf(ctx.Out(), "%d ticks\n", t.Count)
	return err
}

// FlakyTask fails until it has been tried `succeed_on` times (counted in the file named by
// counter), and declares 3 attempts with a short backoff: a retry that works.
type FlakyTask struct {
	Counter   string        `param:"counter" required:"true"`
	SucceedOn int           `param:"succeed_on" default:"3"`
	Backoff   time.Duration `param:"backoff" default:"50ms"`
}

func (t FlakyTask) Retry() chains.RetryPolicy {
	return chains.RetryPolicy{Attempts: 3, Backoff: t.Backoff}
}

func (t FlakyTask) Run(ctx *chains.Context) error {
	b, _ := os.ReadFile(t.Counter)
	n := len(b) + 1
	if err := os.WriteFile(t.Counter, append(b, '.'), 0o644); err != nil {
		return err
	}
	if n < t.SucceedOn {
		return fmt.Errorf("attempt %d: not yet", n)
	}
	_, err := fmt.Fprintf(ctx.Out(), "succeeded on attempt %d\n", n)
	return err
}

// HangTask ignores its context and never returns; it declares a timeout and two attempts, so
// the host must kill its process, twice.
type HangTask struct {
	Limit time.Duration `param:"limit" default:"300ms"`
}

func (t HangTask) Timeout() time.Duration { return t.Limit }

func (t HangTask) Retry() chains.RetryPolicy {
	return chains.RetryPolicy{Attempts: 2, Backoff: 10 * time.Millisecond}
}

func (t HangTask) Run(ctx *chains.Context) error {
	fmt.Println("HangTask: hanging")
	time.Sleep(time.Hour)
	return nil
}

// ProgressTask counts to `count`, one step every `every`, reporting its progress and a status
// line at each step: the task the UI's progress is tested with.
type ProgressTask struct {
	Count int           `param:"count" default:"20"`
	Every time.Duration `param:"every" default:"100ms"`
}

func (t ProgressTask) Run(ctx *chains.Context) error {
	for i := 1; i <= t.Count; i++ {
		select {
		case <-ctx.Context().Done():
			return ctx.Context().Err()
		case <-time.After(t.Every):
		}
		ctx.Progress(int64(i), int64(t.Count))
		ctx.Status(fmt.Sprintf("step %d of %d", i, t.Count))
	}
	_, err := fmt.Fprintf(ctx.Out(), "%d steps\n", t.Count)
	return err
}

// QuietGateTask writes "open" and logs nothing, but fails while the file named by gate exists:
// a task whose failed run stored a log, and whose later success writes none.
type QuietGateTask struct {
	Gate string `param:"gate"`
}

func (t QuietGateTask) Run(ctx *chains.Context) error {
	if _, err := os.Stat(t.Gate); err == nil {
		return fmt.Errorf("gate %s is closed (remove the file to let it pass)", t.Gate)
	}
	_, err := fmt.Fprintln(ctx.Out(), "open")
	return err
}

// BehindQuietGateTask requires QuietGateTask and copies its out: a run in which QuietGateTask
// is a dependency, which stores no log when it writes none.
type BehindQuietGateTask struct {
	Gate string `param:"gate"`
}

func (t BehindQuietGateTask) Requires() []chains.Task { return []chains.Task{QuietGateTask(t)} }

func (t BehindQuietGateTask) Run(ctx *chains.Context) error {
	b, err := ctx.ReadInput(0)
	if err != nil {
		return err
	}
	_, err = ctx.Out().Write(b)
	return err
}
