package etl

import "nectar/chains"

// PingTask takes no parameters.
type PingTask struct{}

func (PingTask) Run(*chains.Context) error { return nil }
