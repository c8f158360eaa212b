//go:build race

package signing

// raceEnabled: the race detector's sync.Pool drops some of what is put back, so a pooled
// state is made again now and then and allocation counts are not those of a normal build.
const raceEnabled = true
