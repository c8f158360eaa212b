// Package etl is a golden-test chain type that uses every parameter kind.
package etl

import (
	"time"

	"nectar/chains"
)

// ResizeTask resizes images.
// It takes every kind of parameter.
type ResizeTask struct {
	// Where the images are.
	Source  string        `param:"source" required:"true"`
	Width   int           `param:"width" default:"640"`
	Height  int64         `param:"height" default:"480"`
	Scale   float64       `param:"scale" default:"1.0"`
	Sharpen bool          `param:"sharpen"`
	Day     time.Time     `param:"day" default:"2024-01-02"`
	Timeout time.Duration `param:"timeout" default:"90s"`
	Shift   time.Duration `param:"shift" default:"-1h" signed:"true"` // May be negative.
	Tags    []string      `param:"tags" default:"a,b"`
	Format  string        `param:"format" enum:"png,jpeg" default:"png"` // Output format.
}

func (t ResizeTask) Run(ctx *chains.Context) error { return nil }

// PublishTask has a pointer receiver and requires ResizeTask.
type PublishTask struct {
	Source string `param:"source"`
}

func (t *PublishTask) Requires() []chains.Task       { return []chains.Task{ResizeTask{Source: t.Source}} }
func (t *PublishTask) Run(ctx *chains.Context) error { return nil }

// helperTask is unexported, so it is not a task.
type helperTask struct{}

// NightlyTask resizes the day's uploads, every night at two in New York.
type NightlyTask struct {
	Day   time.Time `param:"day" required:"true"`
	Width int       `param:"width" default:"640"`
}

func (NightlyTask) Schedule() chains.Schedule {
	return chains.Schedule{Cron: "0 2 * * *", TimeZone: "America/New_York", Start: "2026-01-01", CatchUp: true}
}

func (NightlyTask) Run(*chains.Context) error { return nil }

// LoadTask loads into the warehouse.
type LoadTask struct{}

func (LoadTask) Connections() []string { return []string{"warehouse", "warehouse"} }

func (LoadTask) Run(*chains.Context) error { return nil }
