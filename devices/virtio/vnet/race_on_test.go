//go:build race

package vnet

// raceEnabled: see skipUnderRace.
const raceEnabled = true
