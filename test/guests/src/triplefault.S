/*
 * triplefault.elf: 64-bit. Prints TRIPLEFAULT_MSG, loads an IDT with limit
 * 0 and executes int3: vector 3 lies past the limit (#GP), so does 13 (#DF)
 * and 8, and the CPU shuts down. The VMM must report a reset/shutdown. If
 * the guest survives it says so and powers off, which a test must treat
 * as a failure.
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
	lidt empty_idt(%rip)
	int3
	lea survived(%rip), %rsi
	call puts64
	jmp poweroff64

	.section .rodata
	.balign 16
empty_idt:
	.word 0                         /* limit */
	.quad 0                         /* base */
msg:	.asciz TRIPLEFAULT_MSG
survived:
	.asciz TRIPLEFAULT_SURVIVED_MSG

	.bss
	.balign 16
	.skip 4096
stack_top:
