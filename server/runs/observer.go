package runs

import "time"

// Observer receives the events operators count (the server feeds Prometheus with them); runs
// itself knows nothing of any metrics system.
type Observer interface {
	RunFinished(typ, chain, task string, status Status, elapsed time.Duration)
	PluginLaunched(typ string, latency time.Duration, err error)
	StoreError(op string)
}

type noObserver struct{}

func (noObserver) RunFinished(string, string, string, Status, time.Duration) {}
func (noObserver) PluginLaunched(string, time.Duration, error)               {}
func (noObserver) StoreError(string)                                         {}
