// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * ticks: prints the generic timer's virtual count (CNTVCT_EL0) in decimal.
 *
 * Under QEMU's -icount shift=0 with -cpu max the counter runs at 1 GHz and
 * virtual time advances one nanosecond per guest instruction, so the count
 * an init script prints is the guest's instructions since reset (plus any
 * idle time QEMU skipped). Linux lets EL0 read the virtual counter (its
 * vDSO does). No C library: two system calls, write and exit.
 */

#define SYS_WRITE 64
#define SYS_EXIT 93

static long syscall3(long nr, long a0, long a1, long a2)
{
	register long x8 __asm__("x8") = nr;
	register long x0 __asm__("x0") = a0;
	register long x1 __asm__("x1") = a1;
	register long x2 __asm__("x2") = a2;

	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
	return x0;
}

void _start(void)
{
	unsigned long count;
	char buf[24];
	int at = sizeof(buf);

	/* The ISB keeps the read from being taken early (Arm ARM D12.1.2). */
	__asm__ volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(count));
	buf[--at] = '\n';
	do {
		buf[--at] = (char)('0' + count % 10);
		count /= 10;
	} while (count && at > 0);
	syscall3(SYS_WRITE, 1, (long)(buf + at), (long)(sizeof(buf) - at));
	syscall3(SYS_EXIT, 0, 0, 0);
	for (;;)
		;
}
