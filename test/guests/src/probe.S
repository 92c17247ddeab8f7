/*
 * probe.elf: the KVM usability probe. 64-bit, entered like longmode.elf.
 * It does, in order, what an unmodified Linux kernel needs early, and
 * writes each step's code to the marker port before it tries the step, so
 * when the VMM sees an emulation failure (or the vCPU dies otherwise) the
 * last code names what failed:
 *   PROBE_CPUID        cpuid
 *   PROBE_XSAVE        CR4.OSXSAVE, xgetbv, xsetbv, xsave, xrstor
 *                      (only if CPUID.1:ECX.XSAVE)
 *   PROBE_INT3         int3 through an IDT built here, handler iretq
 *   PROBE_POPCNT       popcnt (only if CPUID.1:ECX.POPCNT)
 *   PROBE_CMPXCHG16B   lock cmpxchg16b (only if CPUID.1:ECX.CX16)
 *   PROBE_APIC_TIMER   one xAPIC timer interrupt (one-shot, vector
 *                      PROBE_TIMER_VECTOR), polled for with IF=1, then EOI
 * then PROBE_ALL_PASSED, and powers off. Failures it sees itself are coded
 * too, each followed by power-off: PROBE_EXCEPTION_BASE|vector for a CPU
 * exception, PROBE_WRONG_RESULT when an instruction computed the wrong
 * value, PROBE_TIMER_TIMEOUT when the timer never fired. The Go package
 * github.com/wisp-vmm/wisp/test/guests/probe holds the same table.
 */
#include "wisp.h"

#define CPUID1_ECX_CX16    13
#define CPUID1_ECX_POPCNT  23
#define CPUID1_ECX_XSAVE   26

#define CR0_MP     (1 << 1)
#define CR0_EM     (1 << 2)
#define CR0_TS     (1 << 3)
#define CR4_OSFXSR (1 << 9)
#define CR4_OSXMMEXCPT (1 << 10)
#define CR4_OSXSAVE (1 << 18)

#define APIC_EOI      0xb0
#define APIC_SVR      0xf0
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INIT 0x380
#define APIC_TIMER_DIV 0x3e0
#define SPURIOUS_VECTOR 0xff

	.code64
	.text
	.globl _start
_start:
	cli
	cld
	lea stack_top(%rip), %rsp
	call setup_idt

	/* 1: cpuid */
	MARK(PROBE_CPUID)
	mov $1, %eax
	cpuid
	mov %ecx, %r12d                 /* r12 = CPUID.1:ECX */

	/* 2: xsave/xrstor */
	bt $CPUID1_ECX_XSAVE, %r12d
	jnc 1f
	MARK(PROBE_XSAVE)
	mov %cr0, %rax
	and $~(CR0_TS | CR0_EM), %rax
	or $CR0_MP, %rax
	mov %rax, %cr0
	mov %cr4, %rax
	or $(CR4_OSXSAVE | CR4_OSFXSR | CR4_OSXMMEXCPT), %rax
	mov %rax, %cr4
	xor %ecx, %ecx
	xgetbv                          /* read XCR0, as Linux does */
	mov $3, %eax                    /* x87 | SSE: a 576-byte area */
	xor %edx, %edx
	xor %ecx, %ecx
	xsetbv
	lea xsave_area(%rip), %rdi
	mov $-1, %eax
	mov $-1, %edx
	xsave (%rdi)
	xrstor (%rdi)
1:
	/* 3: int3 */
	MARK(PROBE_INT3)
	movl $0, int3_seen(%rip)
	int3
	cmpl $1, int3_seen(%rip)
	jne wrong_result

	/* 4: popcnt */
	bt $CPUID1_ECX_POPCNT, %r12d
	jnc 1f
	MARK(PROBE_POPCNT)
	mov $0xf00f, %eax
	popcnt %rax, %rbx
	cmp $8, %rbx
	jne wrong_result
1:
	/* 5: cmpxchg16b */
	bt $CPUID1_ECX_CX16, %r12d
	jnc 1f
	MARK(PROBE_CMPXCHG16B)
	lea cx16_area(%rip), %rdi
	mov $1, %eax                    /* expected: rdx:rax = 2:1 */
	mov $2, %edx
	mov $3, %ebx                    /* new: rcx:rbx = 4:3 */
	mov $4, %ecx
	lock cmpxchg16b (%rdi)
	jnz wrong_result
	cmpq $3, (%rdi)
	jne wrong_result
	cmpq $4, 8(%rdi)
	jne wrong_result
1:
	/* 6: one LAPIC timer interrupt */
	MARK(PROBE_APIC_TIMER)
	mov $LAPIC_ADDR, %edi
	movl $(0x100 | SPURIOUS_VECTOR), APIC_SVR(%rdi)  /* software enable */
	movl $0xb, APIC_TIMER_DIV(%rdi)                  /* divide by 1 */
	movl $PROBE_TIMER_VECTOR, APIC_LVT_TIMER(%rdi)   /* one-shot */
	movl $0, timer_seen(%rip)
	movl $PROBE_TIMER_COUNT, APIC_TIMER_INIT(%rdi)   /* starts it */
	sti
	mov $PROBE_TIMER_SPINS, %ecx
2:	cmpl $0, timer_seen(%rip)
	jne 3f
	pause
	dec %ecx
	jnz 2b
	cli
	MARK(PROBE_TIMER_TIMEOUT)
	jmp poweroff64
3:	cli

	MARK(PROBE_ALL_PASSED)
	jmp poweroff64

wrong_result:
	MARK(PROBE_WRONG_RESULT)
	jmp poweroff64

/* setup_idt: 32 exception stubs, int3, the timer and the spurious vector. */
setup_idt:
	lea idt(%rip), %rdi
	lea exception_stubs(%rip), %rsi
	xor %ecx, %ecx
1:	mov %rsi, %rax
	call set_gate
	add $16, %rsi
	inc %ecx
	cmp $32, %ecx
	jb 1b
	mov $3, %ecx
	lea int3_handler(%rip), %rax
	call set_gate
	mov $PROBE_TIMER_VECTOR, %ecx
	lea timer_handler(%rip), %rax
	call set_gate
	mov $SPURIOUS_VECTOR, %ecx
	lea spurious_handler(%rip), %rax
	call set_gate
	lidt idtr(%rip)
	ret

/* set_gate: IDT entry ecx -> handler rax, a present DPL-0 64-bit interrupt
 * gate in the current code segment. rdi = IDT base. Clobbers rdx, r8. */
set_gate:
	mov %ecx, %edx
	shl $4, %edx
	add %rdi, %rdx
	mov %ax, (%rdx)                 /* offset 15:0 */
	mov %cs, %r8w
	mov %r8w, 2(%rdx)               /* selector */
	movw $0x8e00, 4(%rdx)           /* P, DPL 0, type 0xe, IST 0 */
	mov %rax, %r8
	shr $16, %r8
	mov %r8w, 6(%rdx)               /* offset 31:16 */
	shr $16, %r8
	mov %r8d, 8(%rdx)               /* offset 63:32 */
	movl $0, 12(%rdx)
	ret

int3_handler:
	movl $1, int3_seen(%rip)
	iretq

timer_handler:
	push %rax
	movl $1, timer_seen(%rip)
	mov $LAPIC_ADDR, %eax
	movl $0, APIC_EOI(%rax)
	pop %rax
	iretq

spurious_handler:
	iretq

/* One 16-byte stub per exception vector: report it, power off. */
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
	pop %rax
	or $PROBE_EXCEPTION_BASE, %al
	mov $MARKER_PORT, %dx
	out %al, %dx
	jmp poweroff64

	.section .rodata
	.balign 16
idtr:
	.word 256 * 16 - 1
	.quad idt

	.data
	.balign 16
cx16_area:
	.quad 1, 2
int3_seen:	.long 0
timer_seen:	.long 0

	.bss
	.balign 4096
idt:
	.skip 256 * 16
xsave_area:
	.skip 4096
	.skip 4096
stack_top:
