/*
 * mmio.elf: 64-bit. Writes the 32-bit MMIO_WRITE_VALUE to MMIO_WRITE_ADDR,
 * reads 32 bits from MMIO_READ_ADDR, prints MMIO_MSG followed by the value
 * read as eight hex digits and a newline, then powers off. Both addresses
 * lie in the PCI hole, where no RAM is, so each access is an MMIO exit.
 */
#include "wisp.h"

	.code64
	.text
	.globl _start
_start:
	cli
	cld
	lea stack_top(%rip), %rsp
	mov $MMIO_WRITE_ADDR, %eax      /* zero-extends into rax */
	movl $MMIO_WRITE_VALUE, (%rax)
	mov $MMIO_READ_ADDR, %eax
	mov (%rax), %ebx
	lea msg(%rip), %rsi
	call puts64
	mov %ebx, %edi
	call puthex32
	mov $'\n', %edi
	call putc64
	jmp poweroff64

	.section .rodata
msg:	.asciz MMIO_MSG

	.bss
	.balign 16
	.skip 4096
stack_top:
