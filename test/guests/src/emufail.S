/*
 * emufail.elf: 64-bit. Prints EMUFAIL_MSG and jumps into the PCI hole,
 * where no RAM is: the CPU must fetch instructions from MMIO, which KVM
 * cannot emulate. The VMM must report an emulation failure (KVM internal
 * error) in one line with the RIP, instead of hanging. This is the same
 * exit KVM-PVM gives an unmodified Linux, reproduced on any KVM.
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
	mov $EMUFAIL_TARGET, %eax
	jmp *%rax

	.section .rodata
msg:	.asciz EMUFAIL_MSG

	.bss
	.balign 16
	.skip 4096
stack_top:
