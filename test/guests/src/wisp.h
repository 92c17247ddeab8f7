/*
 * Shared definitions for wisp's test guests.
 *
 * The numbers themselves (ports, addresses, probe step codes) are not
 * written here: the Go package passes them as -D flags when it builds a
 * guest, so the Go constants that tests compare against are the only
 * source of truth. This header only derives names from them.
 */
#ifndef WISP_GUESTS_H
#define WISP_GUESTS_H

#define COM1_THR (COM1_PORT + 0)
#define COM1_LSR (COM1_PORT + 5)
#define LSR_THRE 0x20

/* How often a guest polls LSR for "transmit holding register empty"
 * before it writes anyway: a VMM whose UART never reports empty must not
 * hang the guest. */
#define SERIAL_POLLS 0x10000

/* Write an 8-bit code to the marker/probe port. Clobbers al, dx. */
#define MARK(code)              \
	mov $(code), %al;       \
	mov $MARKER_PORT, %dx;  \
	out %al, %dx

#endif
