/*
 * longmode.elf: entered by the VMM in 64-bit mode (its own page tables and
 * GDT, RSI = zero page). Prints LONGMODE_MSG to COM1, writes BOOT_MARKER to
 * the marker port, and powers off through ACPI PM1a.
 */
#include "wisp.h"

	.code64
	.text
	.globl _start
_start:
	cli
	cld
	lea stack_top(%rip), %rsp
	lea msg(%rip), %rsi
	call puts64
	MARK(BOOT_MARKER)
	jmp poweroff64

	.section .rodata
msg:	.asciz LONGMODE_MSG

	.bss
	.balign 16
	.skip 4096
stack_top:
