//! Partitions at EL1: started from an overlay, talking through hypercalls,
//! and faults contained to the partition that made them.

use crate::qemu::{Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Ctx, Scenario};

/// The shipped two-partition example overlay.
const HELLO: &str = include_str!("../../../boards/qemu-virt/overlays/hello.dts");

fn hello_with(ctx: &Ctx, net_args: &str, storage_args: &str) -> Result<QemuConfig, String> {
    let mut dts = HELLO.to_string();
    let mut parts = dts.splitn(3, "bulkhead,bootargs = \"hello\";");
    let (a, b, c) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    dts = format!("{a}bulkhead,bootargs = \"{net_args}\";{b}bulkhead,bootargs = \"{storage_args}\";{c}");
    ctx.with_overlay(QemuConfig::default(), &dts)
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "partitions-hello", setup: |ctx| hello_with(ctx, "hello", "hello"), check: check_hello },
        Scenario {
            name: "partitions-fault-contained",
            setup: |ctx| hello_with(ctx, "touch=0x4c000000", "hello"),
            check: check_fault_contained,
        },
        Scenario {
            name: "partitions-refuse-boot-cpu",
            setup: |ctx| ctx.with_overlay(QemuConfig::default(), &HELLO.replace("&{/cpus/cpu@2}", "&{/cpus/cpu@0}")),
            check: |o, c| {
                c.exit(o, exit::CONFIG_REFUSED);
                c.log(o, "configuration refused: /cpus/cpu@0: property bulkhead,partition: CPU 0x0 is the boot CPU");
                c.no_log(o, "partition net: id");
                c.no_log(o, "[net]");
            },
        },
        Scenario {
            name: "partitions-refuse-kernel-overlap",
            setup: |ctx| ctx.with_overlay(QemuConfig::default(), &HELLO.replace("0x0 0x4c000000 0x0 0x02000000", "0x0 0x40200000 0x0 0x02000000")),
            check: |o, c| {
                c.exit(o, exit::CONFIG_REFUSED);
                c.log(o, "configuration refused: /partitions/storage: property memory: region [0x40200000..0x42200000) overlaps the kernel image");
                c.no_log(o, "[net]");
            },
        },
    ]
}

fn check_hello(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    c.log(o, "configuration: 2 partitions");
    c.log(o, "entry 0x48000000, DTB at 0x4bff0000");
    c.log(o, "entry 0x4c000000, DTB at 0x4dff0000");
    c.log(o, "[net] hello from net at EL1");
    c.log(o, "[net] memory 0x48000000 size 0x4000000");
    c.log(o, "[storage] hello from storage at EL1");
    c.log(o, "[storage] memory 0x4c000000 size 0x2000000");
    c.log(o, "[storage] whoami: partition 0x");
    c.log(o, "[net] whoami: partition 0x");
    c.log(o, "all 2 partitions stopped, 0 failed");
}

fn check_fault_contained(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::PARTITION_FAILED);
    c.log(o, "[net] touching 0x4c000000");
    c.log(o, "partition net: stage-2 translation fault on read of IPA 0x4c000000");
    c.no_log(o, "[net] read returned");
    c.log(o, "[storage] hello from storage at EL1");
    c.log(o, "partition storage: exited with status 0");
    c.log(o, "all 2 partitions stopped, 1 failed");
}
