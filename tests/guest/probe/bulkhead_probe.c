// SPDX-License-Identifier: GPL-2.0
/*
 * bulkhead_probe: the EL1 half of bulkhead's hostile-guest tests.
 *
 * HVC and SMC are undefined at EL0, so a Linux guest that wants to issue
 * them with chosen function IDs needs kernel code: this module. Its
 * parameters choose what it does when loaded; it prints one line per call
 * or access on the console, before and after, so a call that never returns
 * shows which one it was:
 *
 *   call=smc:0x84000000,hvc:0xc4000003:0x1:0x40080000:0x0
 *       SMCCC calls, CONDUIT:FUNCTION-ID[:X1[:X2[:X3]]], numbers in hex
 *   mmio=r32:0x8000004,w32:0x8000100:0xffffffff
 *       device accesses at physical addresses (r32, w32, r64, w64),
 *       through ioremap: no /dev/mem policy applies
 *   random=16 conduit=hvc seed=1
 *       calls with pseudo-random function IDs and arguments (xorshift32
 *       from the seed), never in the Arm architecture or standard secure
 *       service ranges (SMCCC_VERSION, PSCI: CPU_OFF, SYSTEM_OFF...)
 *
 * An HVC at EL2 would trap to this kernel itself: when Linux runs at EL2
 * (VHE), HVCs are reported and not issued.
 */

#include <linux/arm-smccc.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/string.h>
#include <asm/virt.h>

#define PREFIX "bulkhead-probe: "
#define MAX_ITEMS 32

static char *call[MAX_ITEMS];
static int ncall;
module_param_array(call, charp, &ncall, 0444);
MODULE_PARM_DESC(call, "SMCCC calls: CONDUIT:FID[:X1[:X2[:X3]]], CONDUIT smc or hvc, numbers in hex");

static char *mmio[MAX_ITEMS];
static int nmmio;
module_param_array(mmio, charp, &nmmio, 0444);
MODULE_PARM_DESC(mmio, "device accesses: r32:ADDR, w32:ADDR:VALUE, r64:ADDR, w64:ADDR:VALUE (physical, hex)");

static unsigned int random;
module_param(random, uint, 0444);
MODULE_PARM_DESC(random, "how many calls with random function IDs to issue");

static char *conduit = "smc";
module_param(conduit, charp, 0444);
MODULE_PARM_DESC(conduit, "conduit of the random calls: smc or hvc");

static unsigned int seed = 1;
module_param(seed, uint, 0444);
MODULE_PARM_DESC(seed, "seed of the random calls (non-zero)");

/* SMCCC function ID fields (Arm DEN 0028, section 2.5). */
#define FID_OWNER(fid) (((fid) >> 24) & 0x3f)
#define OWNER_ARCH 0
#define OWNER_STANDARD 4

static unsigned int issued;
static unsigned int failed;

static int parse_hex(const char *s, u64 *out)
{
	return kstrtou64(s, 16, out);
}

/* Issues one SMCCC call; false when it was not issued. */
static bool smccc(const char *how, u64 fid, u64 x1, u64 x2, u64 x3)
{
	struct arm_smccc_res res = {};

	if (!strcmp(how, "hvc")) {
		if (is_kernel_in_hyp_mode()) {
			pr_info(PREFIX "hvc %#llx %#llx %#llx %#llx: not issued, this kernel runs at EL2\n",
				fid, x1, x2, x3);
			return false;
		}
		pr_info(PREFIX "hvc %#llx %#llx %#llx %#llx ...\n", fid, x1, x2, x3);
		arm_smccc_hvc(fid, x1, x2, x3, 0, 0, 0, 0, &res);
	} else if (!strcmp(how, "smc")) {
		pr_info(PREFIX "smc %#llx %#llx %#llx %#llx ...\n", fid, x1, x2, x3);
		arm_smccc_smc(fid, x1, x2, x3, 0, 0, 0, 0, &res);
	} else {
		pr_err(PREFIX "unknown conduit \"%s\" (smc or hvc)\n", how);
		return false;
	}
	pr_info(PREFIX "%s %#llx %#llx %#llx %#llx -> %#lx %#lx %#lx %#lx (%ld)\n", how, fid, x1, x2, x3,
		res.a0, res.a1, res.a2, res.a3, (long)res.a0);
	return true;
}

/* "CONDUIT:FID[:X1[:X2[:X3]]]" */
static void do_call(char *spec)
{
	char *how = strsep(&spec, ":");
	u64 v[4] = {};
	int n = 0;
	char *tok;

	while ((tok = strsep(&spec, ":")) && n < 4) {
		if (parse_hex(tok, &v[n])) {
			pr_err(PREFIX "call: \"%s\" is not a hex number\n", tok);
			failed++;
			return;
		}
		n++;
	}
	if (!how || n == 0) {
		pr_err(PREFIX "call: expected CONDUIT:FID[:X1[:X2[:X3]]]\n");
		failed++;
		return;
	}
	if (smccc(how, v[0], v[1], v[2], v[3]))
		issued++;
	else
		failed++;
}

/* "r32:ADDR", "w32:ADDR:VALUE", "r64:ADDR", "w64:ADDR:VALUE" */
static void do_mmio(char *spec)
{
	char *op = strsep(&spec, ":");
	char *addr_s = strsep(&spec, ":");
	char *val_s = strsep(&spec, ":");
	bool write, wide;
	u64 addr, val = 0, got;
	void __iomem *page;
	void __iomem *p;

	if (!op || strlen(op) != 3 || (op[0] != 'r' && op[0] != 'w') ||
	    (strcmp(op + 1, "32") && strcmp(op + 1, "64"))) {
		pr_err(PREFIX "mmio: \"%s\" is not r32, w32, r64 or w64\n", op ? op : "");
		failed++;
		return;
	}
	write = op[0] == 'w';
	wide = !strcmp(op + 1, "64");
	if (!addr_s || parse_hex(addr_s, &addr) || (write && (!val_s || parse_hex(val_s, &val)))) {
		pr_err(PREFIX "mmio: expected %s:ADDR%s in hex\n", op, write ? ":VALUE" : "");
		failed++;
		return;
	}
	if (addr & (wide ? 7 : 3)) {
		pr_err(PREFIX "mmio: %#llx is not aligned for %s\n", addr, op);
		failed++;
		return;
	}
	page = ioremap(addr & PAGE_MASK, PAGE_SIZE);
	if (!page) {
		pr_err(PREFIX "mmio: cannot map %#llx\n", addr);
		failed++;
		return;
	}
	p = page + (addr & ~PAGE_MASK);
	if (write) {
		pr_info(PREFIX "%s %#llx <- %#llx ...\n", op, addr, val);
		if (wide)
			writeq(val, p);
		else
			writel((u32)val, p);
	} else {
		pr_info(PREFIX "%s %#llx ...\n", op, addr);
	}
	got = wide ? readq(p) : readl(p);
	pr_info(PREFIX "%s %#llx: reads %#llx\n", op, addr, got);
	iounmap(page);
	issued++;
}

static u32 xorshift32(u32 *s)
{
	u32 x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

static void do_random(void)
{
	u32 s = seed ? seed : 1;
	unsigned int i;

	for (i = 0; i < random; i++) {
		u32 fid;
		u64 x1, x2, x3;

		do {
			fid = xorshift32(&s);
		} while (FID_OWNER(fid) == OWNER_ARCH || FID_OWNER(fid) == OWNER_STANDARD);
		x1 = xorshift32(&s);
		x2 = xorshift32(&s);
		x3 = xorshift32(&s);
		if (smccc(conduit, fid, x1, x2, x3))
			issued++;
		else
			failed++;
	}
}

static int __init bulkhead_probe_init(void)
{
	int i;

	pr_info(PREFIX "loaded at EL%d, %d calls, %d accesses, %u random %s calls\n",
		is_kernel_in_hyp_mode() ? 2 : 1, ncall, nmmio, random, conduit);
	for (i = 0; i < ncall; i++)
		do_call(call[i]);
	for (i = 0; i < nmmio; i++)
		do_mmio(mmio[i]);
	do_random();
	pr_info(PREFIX "done: %u issued, %u not\n", issued, failed);
	return 0;
}

static void __exit bulkhead_probe_exit(void)
{
}

module_init(bulkhead_probe_init);
module_exit(bulkhead_probe_exit);
MODULE_DESCRIPTION("SMCCC calls and device accesses from EL1 for bulkhead's tests");
MODULE_LICENSE("GPL");
