/*
 * virtioblk.elf, the part C cannot say: the entry point, an IDT with a
 * handler for the virtio-blk MSI (VIRTIO_MSI_VECTOR), which counts it in
 * virtio_irqs and acknowledges it at the LAPIC, and one stub per CPU
 * exception that hands the vector to guest_exception (in C). The driver
 * itself is virtioblk.c; output and power-off come from lib64.S.
 */
#include "wisp.h"

#define LAPIC_EOI       0xb0
#define SPURIOUS_VECTOR 0xff

	.code64
	.text
	.globl _start
_start:
	cli
	cld
	lea stack_top(%rip), %rsp
	call setup_idt
	call virtio_main                /* 0: every step passed */
	test %eax, %eax
	jnz 1f
	MARK(BOOT_MARKER)
1:	jmp poweroff64

/* setup_idt: exception stubs for vectors 0-31, the MSI handler and the
 * spurious vector; every other entry stays not-present. */
setup_idt:
	lea idt(%rip), %rdi
	lea exception_stubs(%rip), %rax
	xor %ecx, %ecx
1:	call set_gate
	add $16, %rax
	inc %ecx
	cmp $32, %ecx
	jb 1b
	mov $VIRTIO_MSI_VECTOR, %ecx
	lea msi_handler(%rip), %rax
	call set_gate
	mov $SPURIOUS_VECTOR, %ecx
	lea spurious_handler(%rip), %rax
	call set_gate
	lidt idtr(%rip)
	ret

/* set_gate: IDT entry ecx (IDT at rdi) becomes a present ring-0 64-bit
 * interrupt gate to rax in the current code segment. Clobbers rdx, r8. */
set_gate:
	mov %ecx, %edx
	shl $4, %edx
	add %rdi, %rdx
	mov %ax, (%rdx)
	mov %cs, %r8w
	mov %r8w, 2(%rdx)
	movw $0x8e00, 4(%rdx)
	mov %rax, %r8
	shr $16, %r8
	mov %r8w, 6(%rdx)
	shr $16, %r8
	mov %r8d, 8(%rdx)
	movl $0, 12(%rdx)
	ret

msi_handler:
	push %rax
	lock incl virtio_irqs(%rip)
	mov $LAPIC_ADDR, %eax
	movl $0, LAPIC_EOI(%rax)
	pop %rax
	iretq

spurious_handler:
	iretq

	.balign 16
exception_stubs:
	.set vector, 0
	.rept 32
	.balign 16
	push $vector
	jmp exception_common
	.set vector, vector + 1
	.endr
exception_common:
	pop %rdi
	and $-16, %rsp
	call guest_exception            /* reports, never returns */
	jmp poweroff64

	.section .rodata
	.balign 16
idtr:
	.word 256 * 16 - 1
	.quad idt

	.bss
	.balign 4096
idt:
	.skip 256 * 16
	.skip 16384
stack_top:
