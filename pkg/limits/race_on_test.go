//go:build race

package limits

// raceEnabled: the race detector changes escape analysis, so allocation
// counts are meaningful only without it.
const raceEnabled = true
