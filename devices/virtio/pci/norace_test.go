//go:build !race

package pci

const raceEnabled = false
