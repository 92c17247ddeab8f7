//go:build race

package rng

// raceEnabled: see skipUnderRace.
const raceEnabled = true
