/*
 * smp.elf: 64-bit. The VMM starts every vCPU at the ELF entry in long mode.
 * Each vCPU takes a ticket (lock xadd) that picks its stack, reads its APIC
 * ID from CPUID.1:EBX[31:24] and prints "cpu N\n" under a spinlock (lock
 * xchg). Ticket 0, whichever vCPU got there first, then waits (a bounded
 * polling loop) until the number of vCPUs that the test wrote at
 * SMP_EXPECTED_ADDR have reported, prints "wisp smp: N cpus\n" (or "wisp smp:
 * timeout, N cpus\n") and powers off. If nothing was written there (0) it
 * waits the shorter SMP_COUNT_SPINS and reports how many arrived. The other
 * vCPUs halt with interrupts off.
 */
#include "wisp.h"

#define STACK_SIZE 4096

	/* First in the image, so it lands at SMP_EXPECTED_ADDR. */
	.section .param, "aw"
	.globl smp_expected
smp_expected:
	.long 0

	.code64
	.text
	.globl _start
_start:
	cli
	cld
	mov $1, %eax
	lock xadd %eax, tickets(%rip)
	cmp $SMP_MAX_CPUS, %eax
	jae park                        /* no stack left for it */
	mov %eax, %r13d                 /* r13 = ticket */
	inc %eax
	shl $12, %rax                   /* (ticket + 1) * STACK_SIZE */
	lea stacks(%rip), %rsp
	add %rax, %rsp

	mov $1, %eax
	cpuid
	shr $24, %ebx
	mov %ebx, %r12d                 /* r12 = APIC ID */

	call lock_serial
	lea cpumsg(%rip), %rsi
	call puts64
	mov %r12d, %edi
	call putdec32
	mov $'\n', %edi
	call putc64
	lock incl arrived(%rip)
	call unlock_serial

	test %r13d, %r13d
	jnz park

	/* Ticket 0: wait for the others. */
	mov smp_expected(%rip), %r14d
	mov $SMP_WAIT_SPINS, %ecx
	test %r14d, %r14d
	jnz 1f
	mov $SMP_COUNT_SPINS, %ecx
1:	mov arrived(%rip), %eax
	test %r14d, %r14d
	jz 2f
	cmp %r14d, %eax
	jae done
2:	pause
	dec %ecx
	jnz 1b
	test %r14d, %r14d
	jz done                         /* counting mode: no timeout */
	lea timeoutmsg(%rip), %r15
	jmp report
done:
	lea donemsg(%rip), %r15
report:
	call lock_serial
	mov %r15, %rsi
	call puts64
	mov arrived(%rip), %edi
	call putdec32
	lea cpusmsg(%rip), %rsi
	call puts64
	jmp poweroff64

park:
	cli
	hlt
	jmp park

lock_serial:
1:	mov $1, %eax
	lock xchg %eax, serial_lock(%rip)
	test %eax, %eax
	jz 3f
2:	pause
	cmpl $0, serial_lock(%rip)
	jne 2b
	jmp 1b
3:	ret

unlock_serial:
	movl $0, serial_lock(%rip)
	ret

	.section .rodata
cpumsg:		.asciz "cpu "
donemsg:	.asciz SMP_DONE_MSG
timeoutmsg:	.asciz SMP_TIMEOUT_MSG
cpusmsg:	.asciz " cpus\n"

	/* In .data, not .bss: the counters must start at zero even if a
	 * loader does not clear .bss. */
	.data
	.balign 64
tickets:	.long 0
	.balign 64
arrived:	.long 0
	.balign 64
serial_lock:	.long 0

	.bss
	.balign STACK_SIZE
stacks:
	.skip STACK_SIZE * SMP_MAX_CPUS
