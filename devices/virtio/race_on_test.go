//go:build race

package virtio

// raceEnabled: see skipUnderRace.
const raceEnabled = true
