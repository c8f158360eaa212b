// Package testchains holds the example chains used by the tests, the benchmarks and the README.
package testchains

import (
	"bytes"
	"fmt"
	"time"

	"nectar/chains"
)

// HelloTask greets someone: its out is "hello <name>\n".
type HelloTask struct {
	// Who to greet.
	Name string `param:"name" default:"world"`
}

func (t HelloTask) Run(ctx *chains.Context) error {
	ctx.Log().Info("greeting", "name", t.Name)
	_, err := fmt.Fprintf(ctx.Out(), "hello %s\n", t.Name)
	return err
}

// UpperTask shouts HelloTask's greeting.
type UpperTask struct {
	// Who to greet.
	Name string `param:"name" default:"world"`
}

//lint:ignore S1016 spelled out: this is the example readers copy
func (t UpperTask) Requires() []chains.Task { return []chains.Task{HelloTask{Name: t.Name}} }

func (t UpperTask) Run(ctx *chains.Context) error {
	in, err := ctx.ReadInput(0)
	if err != nil {
		return err
	}
	_, err = ctx.Out().Write(bytes.ToUpper(in))
	return err
}

// DailyTask is the example of a scheduled task: every day at midnight in Paris it writes the
// day it was run for (the start of the interval, Airflow's logical date).
type DailyTask struct {
	// The start of the interval; the scheduler fills it in.
	Day time.Time `param:"day" required:"true"`
	// What to say about the day.
	Note string `param:"note" default:"done"`
}

func (DailyTask) Schedule() chains.Schedule {
	return chains.Schedule{Cron: "@daily", TimeZone: "Europe/Paris"}
}

func (t DailyTask) Run(ctx *chains.Context) error {
	_, err := fmt.Fprintf(ctx.Out(), "%s %s\n", t.Day.Format(time.RFC3339), t.Note)
	return err
}
