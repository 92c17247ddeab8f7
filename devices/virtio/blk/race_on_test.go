//go:build race

package blk

// raceEnabled: see skipUnderRace.
const raceEnabled = true
