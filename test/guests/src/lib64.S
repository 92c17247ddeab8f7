/*
 * Serial output and power-off for the 64-bit guests. Called with a valid
 * stack; the routines clobber rax, rcx, rdx, rdi, rsi and r8-r10 and keep
 * every other register (in particular rbx and r12-r15).
 */
#include "wisp.h"

	.code64
	.text

/* putc64: write the byte in dil to COM1, after polling LSR (bounded). */
	.globl putc64
putc64:
	mov $SERIAL_POLLS, %ecx
1:	mov $COM1_LSR, %dx
	in %dx, %al
	test $LSR_THRE, %al
	jnz 2f
	pause
	dec %ecx
	jnz 1b
2:	mov $COM1_THR, %dx
	mov %dil, %al
	out %al, %dx
	ret

/* puts64: write the NUL-terminated string at rsi. */
	.globl puts64
puts64:
1:	movzbl (%rsi), %edi
	test %edi, %edi
	jz 2f
	call putc64
	inc %rsi
	jmp 1b
2:	ret

/* puthex32: write edi as eight lower-case hex digits. */
	.globl puthex32
puthex32:
	mov %edi, %r9d
	mov $8, %r10d
1:	rol $4, %r9d
	mov %r9d, %edi
	and $0xf, %edi
	cmp $10, %edi
	jb 2f
	add $('a' - 10 - '0'), %edi
2:	add $'0', %edi
	call putc64
	dec %r10d
	jnz 1b
	ret

/* putdec32: write edi as an unsigned decimal number. */
	.globl putdec32
putdec32:
	mov %edi, %eax
	xor %r9d, %r9d          /* digits pushed */
	mov $10, %r8d
1:	xor %edx, %edx
	div %r8d                /* eax = quotient, edx = digit */
	add $'0', %edx
	push %rdx
	inc %r9d
	test %eax, %eax
	jnz 1b
2:	pop %rdi
	call putc64
	dec %r9d
	jnz 2b
	ret

/* poweroff64: ACPI S5 through the PM1a control port; never returns. If
 * the VMM ignores the write the vCPU halts with interrupts off. */
	.globl poweroff64
poweroff64:
	mov $POWEROFF_PORT, %dx
	mov $POWEROFF_VALUE, %ax
	out %ax, %dx
1:	cli
	hlt
	jmp 1b
