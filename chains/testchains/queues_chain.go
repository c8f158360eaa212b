package testchains

import (
	"bytes"

	"nectar/chains"
)

// GPUTask stands for work that needs a kind of machine: with queue dispatch it goes to the gpu
// queue, so only workers serving that queue run it. Its out is "gpu <name>\n".
type GPUTask struct {
	// What to compute.
	Name string `param:"name" default:"world"`
}

func (GPUTask) Queue() string { return "gpu" }

func (t GPUTask) Run(ctx *chains.Context) error {
	_, err := ctx.Out().Write([]byte("gpu " + t.Name + "\n"))
	return err
}

// ReportTask joins GPUTask's out and HelloTask's on the chain type's own queue.
type ReportTask struct {
	// Who the report is for.
	Name string `param:"name" default:"world"`
}

func (t ReportTask) Requires() []chains.Task {
	return []chains.Task{GPUTask(t), HelloTask(t)}
}

func (t ReportTask) Run(ctx *chains.Context) error {
	var all bytes.Buffer
	for i := range 2 {
		in, err := ctx.ReadInput(i)
		if err != nil {
			return err
		}
		all.Write(in)
	}
	_, err := ctx.Out().Write(all.Bytes())
	return err
}
