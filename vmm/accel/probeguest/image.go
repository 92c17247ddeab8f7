package probeguest

//go:generate go run ../../../test/guests/genprobe image_data.go

// Image returns the probe guest (probe.elf) that wisp runs to decide
// whether KVM can run unmodified guests. It is built from
// test/guests/src/probe.S by `go generate ./vmm/accel/probeguest` and kept as
// Go source (image_data.go), so wisp needs no toolchain where it runs; the
// test/guests tests fail when it is out of date.
func Image() []byte { return []byte(image) }
