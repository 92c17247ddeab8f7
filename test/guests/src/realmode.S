/*
 * realmode.bin: a flat binary the VMM loads at REALMODE_ADDR and enters in
 * real mode at CS:IP = 0:REALMODE_ADDR. It prints REALMODE_MSG to COM1 and
 * halts with interrupts off.
 */
#include "wisp.h"

	.code16
	.text
	.globl _start
_start:
	cli
	cld
	xor %ax, %ax
	mov %ax, %ds
	mov %ax, %ss
	mov $REALMODE_ADDR, %sp /* the stack grows down below the code */
	mov $msg, %si
next:
	lodsb
	test %al, %al
	jz done
	mov %al, %bl
	mov $SERIAL_POLLS, %ecx
1:	mov $COM1_LSR, %dx
	in %dx, %al
	test $LSR_THRE, %al
	jnz 2f
	dec %ecx
	jnz 1b
2:	mov $COM1_THR, %dx
	mov %bl, %al
	out %al, %dx
	jmp next
done:
	hlt
	jmp done

msg:	.asciz REALMODE_MSG
