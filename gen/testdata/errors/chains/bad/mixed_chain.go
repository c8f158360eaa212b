package bad

import (
	"context"
	"time"

	"nectar/chains"
)

type WrongRunTask struct{}

func (WrongRunTask) Run(ctx context.Context) error { return nil }

type NoRunTask struct{}

type NotStructTask string

type FieldsTask struct {
	Things    map[string]int `param:"things"`
	Untagged  string
	Enum      string        `param:"mode" enum:"a,b"`
	Bad       int           `param:"bad" default:"seven"`
	BadName   string        `param:"BadName"`
	Reserved  string        `param:"wait"`
	Both      string        `param:"both" required:"true" default:"x"`
	EnumInt   int           `param:"enum_int" enum:"1,2"`
	Duplicate string        `param:"bad"`
	Back      time.Duration `param:"back" default:"-5m"`
	SignedStr string        `param:"signed_str" signed:"true"`
}

func (FieldsTask) Run(*chains.Context) error { return nil }

// ValueRunTask runs as a value, so the plugin would never see its queue.
type ValueRunTask struct{}

func (ValueRunTask) Run(*chains.Context) error { return nil }
func (*ValueRunTask) Queue() string            { return "gpu" }

type BadRequiresTask struct{}

func (BadRequiresTask) Requires() []string        { return nil }
func (BadRequiresTask) Run(*chains.Context) error { return nil }
