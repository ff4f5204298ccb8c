// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * vfio_claim GROUP: makes its caller a VFIO user of /dev/vfio/GROUP for a
 * moment, so that Linux moves the group to its blocking domain and back.
 *
 * Binding vfio-pci alone leaves a device in its DMA domain: Linux claims
 * the group's DMA ownership (and attaches the blocking domain) only when
 * a VFIO user sets the group's container, and gives it back (the DMA
 * domain again) when the user lets go. This opens the container and the
 * group, sets the container (VFIO_GROUP_SET_CONTAINER), prints "claimed
 * RESULT", sleeps 50 ms so the console line is out before the release,
 * and exits (closing both: the release). No C library: open, ioctl,
 * write, nanosleep, exit.
 */

#define SYS_OPENAT 56
#define SYS_IOCTL 29
#define SYS_WRITE 64
#define SYS_NANOSLEEP 101
#define SYS_EXIT 93
#define AT_FDCWD (-100)
#define O_RDWR 2
/* _IO(VFIO_TYPE ';', VFIO_BASE 100 + 4), include/uapi/linux/vfio.h */
#define VFIO_GROUP_SET_CONTAINER 0x3b68

static long syscall4(long nr, long a0, long a1, long a2, long a3)
{
	register long x8 __asm__("x8") = nr;
	register long x0 __asm__("x0") = a0;
	register long x1 __asm__("x1") = a1;
	register long x2 __asm__("x2") = a2;
	register long x3 __asm__("x3") = a3;

	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
	return x0;
}

static void say(const char *what, long v)
{
	char buf[48];
	int n = 0;
	unsigned long u = v < 0 ? -v : v;
	char digits[24];
	int d = 0;

	while (*what && n < 20)
		buf[n++] = *what++;
	buf[n++] = ' ';
	if (v < 0)
		buf[n++] = '-';
	do {
		digits[d++] = (char)('0' + u % 10);
		u /= 10;
	} while (u && d < 20);
	while (d)
		buf[n++] = digits[--d];
	buf[n++] = '\n';
	syscall4(SYS_WRITE, 1, (long)buf, n, 0);
}

void __attribute__((used)) start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	static const char dir[] = "/dev/vfio/";
	char path[32];
	int at = 0;
	const char *g = argc > 1 ? argv[1] : "0";
	long container, group, r;
	long ts[2] = { 0, 50000000 };

	while (dir[at]) {
		path[at] = dir[at];
		at++;
	}
	while (*g && at < 30)
		path[at++] = *g++;
	path[at] = 0;
	container = syscall4(SYS_OPENAT, AT_FDCWD, (long)"/dev/vfio/vfio", O_RDWR, 0);
	group = syscall4(SYS_OPENAT, AT_FDCWD, (long)path, O_RDWR, 0);
	if (container < 0 || group < 0) {
		say("open-failed", container < 0 ? container : group);
		syscall4(SYS_EXIT, 1, 0, 0, 0);
	}
	int fd = (int)container;
	r = syscall4(SYS_IOCTL, group, VFIO_GROUP_SET_CONTAINER, (long)&fd, 0);
	say("claimed", r);
	syscall4(SYS_NANOSLEEP, (long)ts, 0, 0, 0);
	syscall4(SYS_EXIT, r < 0 ? 1 : 0, 0, 0, 0);
	for (;;)
		;
}

/* The entry: hand the initial stack (argc, argv) to C. */
__asm__(".globl _start\n_start:\n\tmov x0, sp\n\tb start_c\n");
