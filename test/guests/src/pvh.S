/*
 * pvh.elf: an ELF64 image whose Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY)
 * names a 32-bit entry, as Linux's vmlinux has. The PVH boot ABI enters it
 * in flat 32-bit protected mode with paging off and EBX = the physical
 * address of struct hvm_start_info. It checks the start_info magic, prints
 * PVH_MSG (or PVH_BAD_MSG if the magic is wrong) and powers off.
 */
#include "wisp.h"

	.section .note.Xen, "a", @note
	.balign 4
	.long 4                         /* namesz: "Xen\0" */
	.long 8                         /* descsz: a 64-bit address, as Linux */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.balign 4
	.quad pvh_start
	.balign 4

	.code32
	.text
	.globl _start, pvh_start
_start:
pvh_start:
	cli
	cld
	mov $stack_top, %esp
	mov $msg, %esi
	cmpl $PVH_START_MAGIC, (%ebx)
	je 1f
	mov $badmsg, %esi
1:	call puts32
	mov $POWEROFF_PORT, %dx
	mov $POWEROFF_VALUE, %ax
	out %ax, %dx
2:	cli
	hlt
	jmp 2b

/* puts32: write the NUL-terminated string at esi to COM1. */
puts32:
1:	movzbl (%esi), %ebx
	test %ebx, %ebx
	jz 4f
	mov $SERIAL_POLLS, %ecx
2:	mov $COM1_LSR, %dx
	in %dx, %al
	test $LSR_THRE, %al
	jnz 3f
	pause
	dec %ecx
	jnz 2b
3:	mov $COM1_THR, %dx
	mov %bl, %al
	out %al, %dx
	inc %esi
	jmp 1b
4:	ret

	.section .rodata
msg:	.asciz PVH_MSG
badmsg:	.asciz PVH_BAD_MSG

	.bss
	.balign 16
	.skip 4096
stack_top:
