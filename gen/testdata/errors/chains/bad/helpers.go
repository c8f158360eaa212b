package bad

import "nectar/chains"

// StrayTask is declared outside a _chain.go file.
type StrayTask struct{}

func (StrayTask) Run(*chains.Context) error { return nil }
