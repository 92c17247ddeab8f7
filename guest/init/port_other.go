//go:build !amd64

package main

import "errors"

// writePort is only implemented for x86-64, the only guest wisp runs.
func writePort(port uint16, value uint8) error {
	return errors.New("I/O ports exist only on x86")
}
