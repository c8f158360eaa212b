package bad

import (
	"time"

	"nectar/chains"
)

const daily = "@daily"

type BadCronTask struct {
	Day time.Time `param:"day"`
}

func (BadCronTask) Schedule() chains.Schedule { return chains.Schedule{Cron: "0 25 * * *"} }
func (BadCronTask) Run(*chains.Context) error { return nil }

type BadZoneTask struct {
	Day time.Time `param:"day"`
}

func (BadZoneTask) Schedule() chains.Schedule {
	return chains.Schedule{Cron: daily, TimeZone: "Mars/Olympus"}
}
func (BadZoneTask) Run(*chains.Context) error { return nil }

type BadStartTask struct {
	Day time.Time `param:"day"`
}

func (BadStartTask) Schedule() chains.Schedule {
	return chains.Schedule{Cron: daily, Start: "yesterday"}
}
func (BadStartTask) Run(*chains.Context) error { return nil }

type NoTimeTask struct{}

func (NoTimeTask) Schedule() chains.Schedule { return chains.Schedule{Cron: "@every 1h"} }
func (NoTimeTask) Run(*chains.Context) error { return nil }

type TwoTimesTask struct {
	From time.Time `param:"from"`
	To   time.Time `param:"to"`
}

func (TwoTimesTask) Schedule() chains.Schedule { return chains.Schedule{Cron: daily} }
func (TwoTimesTask) Run(*chains.Context) error { return nil }

type RequiredTask struct {
	Day  time.Time `param:"day"`
	Name string    `param:"name" required:"true"`
}

func (RequiredTask) Schedule() chains.Schedule { return chains.Schedule{Cron: daily} }
func (RequiredTask) Run(*chains.Context) error { return nil }

type DynamicTask struct {
	Day time.Time `param:"day"`
}

func (DynamicTask) Schedule() chains.Schedule {
	expr := daily
	return chains.Schedule{Cron: expr}
}
func (DynamicTask) Run(*chains.Context) error { return nil }

type VariableTask struct {
	Day time.Time `param:"day"`
}

var zone = "UTC"

func (VariableTask) Schedule() chains.Schedule { return chains.Schedule{Cron: daily, TimeZone: zone} }
func (VariableTask) Run(*chains.Context) error { return nil }

type WrongParamTask struct {
	Day  time.Time `param:"day"`
	Name string    `param:"name"`
}

func (WrongParamTask) Schedule() chains.Schedule { return chains.Schedule{Cron: daily, Param: "name"} }
func (WrongParamTask) Run(*chains.Context) error { return nil }

type WrongSignatureTask struct {
	Day time.Time `param:"day"`
}

func (WrongSignatureTask) Schedule() string          { return daily }
func (WrongSignatureTask) Run(*chains.Context) error { return nil }

// FieldNamedScheduleTask has a parameter called Schedule and no schedule: that is fine.
type FieldNamedScheduleTask struct {
	Schedule string `param:"schedule"`
}

func (FieldNamedScheduleTask) Run(*chains.Context) error { return nil }

type BadConnectionsTask struct{}

func (BadConnectionsTask) Connections() []string     { return []string{"warehouse", "Bad-Name"} }
func (BadConnectionsTask) Run(*chains.Context) error { return nil }

type DynamicConnectionsTask struct{}

func (DynamicConnectionsTask) Connections() []string     { return nil }
func (DynamicConnectionsTask) Run(*chains.Context) error { return nil }

type BadQueueTask struct{}

func (BadQueueTask) Queue() string             { return "gpu.large" }
func (BadQueueTask) Run(*chains.Context) error { return nil }

type DynamicQueueTask struct {
	Which string `param:"which"`
}

func (t DynamicQueueTask) Queue() string           { return t.Which }
func (DynamicQueueTask) Run(*chains.Context) error { return nil }

type WrongQueueTask struct{}

func (WrongQueueTask) Queue() []string           { return nil }
func (WrongQueueTask) Run(*chains.Context) error { return nil }
