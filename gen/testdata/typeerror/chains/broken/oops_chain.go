package broken

import "nectar/chains"

// OopsTask does not compile.
type OopsTask struct {
	N int `param:"n"`
}

func (OopsTask) Run(ctx *chains.Context) error {
	return undefinedThing
}
