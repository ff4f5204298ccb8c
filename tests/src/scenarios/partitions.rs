//! Partitions at EL1: started from an overlay, talking through hypercalls,
//! and faults contained to the partition that made them.

use crate::dtb::{add_property, set_bootargs};
use crate::qemu::{Flavour, Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Ctx, Scenario, Witness};
use crate::trace::kind;
use crate::trace::TraceEvent;

/// The shipped two-partition example overlay.
const HELLO: &str = include_str!("../../../boards/qemu-virt/overlays/hello.dts");
/// The shipped demo: two partitions with an edu each (net: 00:01.0, StreamID
/// 0x8, BAR 0x10000000; storage: 00:02.0, StreamID 0x10, BAR 0x10100000).
const DEMO: &str = include_str!("../../../boards/qemu-virt/overlays/demo.dts");

/// `DEMO` with the two partitions' bootargs replaced.
fn demo_with(net_args: &str, storage_args: &str) -> Result<String, String> {
    set_bootargs(&set_bootargs(DEMO, "net", net_args)?, "storage", storage_args)
}

/// net's memory, and the canary storage watches in its own.
const NET_MEM: (u64, u64) = (0x4800_0000, 0x4c00_0000);
const CANARY: u64 = 0x4c00_0100;
const NET_SID: u64 = 0x8;

/// Boots once to learn where the kernel put the SMMU's stream table and
/// queues (from QEMU's trace of the base registers): allocation is
/// deterministic for a given image and machine, and these are targets.
fn smmu_structures(ctx: &Ctx, cfg: &QemuConfig) -> Result<[(&'static str, u64); 3], String> {
    let elf = std::fs::read(&ctx.artifacts.kernel).map_err(|e| e.to_string())?;
    let decoder = crate::log::Decoder::from_elf(&elf)?;
    let probe = QemuConfig { trace: Some(ctx.file("probe-trace.txt")), ..cfg.clone() };
    let out = crate::qemu::run(&ctx.artifacts.kernel, &decoder, &probe, &mut |_| {})?;
    let base = |off: u64, mask: u64| {
        out.trace.mmio_writes().iter().find(|(o, _)| *o == off).map(|(_, v)| v & mask).ok_or(format!("probe boot wrote no register {off:#x}"))
    };
    Ok([("stream-table", base(0x80, 0x000f_ffff_ffff_ffc0)?), ("cmdq", base(0x90, 0x000f_ffff_ffff_ffe0)?), ("evtq", base(0xa0, 0x000f_ffff_ffff_ffe0)?)])
}

/// net's fault limit in the attack matrix: above its 11 attacks' faults.
const MATRIX_FAULT_LIMIT: u32 = 4096;

fn attack_matrix(ctx: &Ctx, flavour: Flavour) -> Result<QemuConfig, String> {
    let base = QemuConfig { flavour, timeout: std::time::Duration::from_secs(90), ..QemuConfig::default() };
    let probe = ctx.with_overlay(base.clone(), &demo_with("exit=0", "exit=0")?)?;
    let structures = smmu_structures(ctx, &probe)?;
    let mut targets = vec![
        ("peer-ram", CANARY),
        ("kernel-image", 0x4020_0000),
        ("kernel-heap", 0x4040_0000),
        ("peer-bar", 0x1010_0000),
        ("gic-distributor", 0x0800_0000),
        ("its-doorbell", 0x0809_0040),
        ("unmapped-ipa", 0x7000_0000),
        ("beyond-input-size", 1 << 45),
    ];
    targets.extend(structures);
    let attacks: Vec<String> = targets.iter().map(|(n, a)| format!("attack={n}:{a:#x}")).collect();
    let net = format!("dma-own {} exit=0", attacks.join(" "));
    let storage = format!("canary={CANARY:#x} watch={CANARY:#x}:9000 dma-own exit=0");
    let _ = std::fs::write(ctx.file("targets.txt"), format!("{targets:#x?}"));
    // Each attack is a 64-byte write and read: 32 faults, about two attacks
    // a second, right at the default limit (64 per 1000 ms). The matrix
    // tests containment, not the fault policy (ownership-fault-storm does):
    // a limit it cannot reach keeps net's group in place for every attack.
    let dts = add_property(&demo_with(&net, &storage)?, "net", &format!("bulkhead,fault-limit = <{MATRIX_FAULT_LIMIT} 1000>;"))?;
    ctx.with_overlay(base, &dts)
}

fn check_attack_matrix(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.log(o, "[net] dma own 0x48100000: ok, 64 bytes verified");
    c.log(o, "[storage] dma own 0x4c100000: ok, 64 bytes verified");
    c.log(o, "[storage] canary at 0x4c000100 intact after");
    let names = [
        "peer-ram",
        "kernel-image",
        "kernel-heap",
        "peer-bar",
        "gic-distributor",
        "its-doorbell",
        "unmapped-ipa",
        "beyond-input-size",
        "stream-table",
        "cmdq",
        "evtq",
    ];
    for n in names {
        if let Some(line) = c.log(o, &format!("[net] attack {n} ")) {
            c.that(line.contains(": read blocked (device got 0x"), format!("attack {n}: {line}"));
        }
    }
    c.no_log(o, "LEAKED");
    c.no_log(o, "CHANGED");
    c.no_log(o, "quarantined");
    // Every blocked DMA shows up as an SMMU event attributed to net's group.
    c.log(o, "StreamID 0x8, group 1, partition net, device 00:01.0, write at 0x4c000100");
    c.log(o, "StreamID 0x8, group 1, partition net, device 00:01.0, read at 0x40200000");
    // QEMU's own record: net's device never reached anything outside net's
    // memory, nothing was translated in bypass, and faults were recorded.
    let sid = |e: &&TraceEvent| e.field("sid") == Some(NET_SID);
    for e in o.trace.of(kind::TRANSLATE_SUCCESS).filter(sid) {
        let pa = e.field("translated").unwrap_or(0);
        c.that((NET_MEM.0..NET_MEM.1).contains(&pa), format!("QEMU translated net's DMA outside its memory: {}", e.args));
    }
    c.that(o.trace.of(kind::TRANSLATE_SUCCESS).filter(sid).count() > 0, "QEMU translated none of net's DMA");
    let faults = o.trace.of(kind::EVENT).filter(sid).count();
    c.that(faults >= names.len(), format!("QEMU recorded only {faults} events for net's device"));
    c.no_bypass(o);
}

fn hello_with(ctx: &Ctx, net_args: &str, storage_args: &str) -> Result<QemuConfig, String> {
    let dts = set_bootargs(&set_bootargs(HELLO, "net", net_args)?, "storage", storage_args)?;
    ctx.with_overlay(QemuConfig::default(), &dts)
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "partitions-attack-virt", setup: |ctx| attack_matrix(ctx, Flavour::Virt), check: check_attack_matrix },
        Scenario { name: "partitions-attack-stage1", setup: |ctx| attack_matrix(ctx, Flavour::Stage1), check: check_attack_matrix },
        Scenario { name: "partitions-attack-stage2", setup: |ctx| attack_matrix(ctx, Flavour::Stage2), check: check_attack_matrix },
        Scenario { name: "partitions-hello", setup: |ctx| hello_with(ctx, "hello", "hello"), check: check_hello },
        Scenario { name: "partitions-fault-contained", setup: |ctx| hello_with(ctx, "touch=0x4c000000", "hello"), check: check_fault_contained },
        Scenario {
            name: "partitions-sysreg-trap",
            // The PMU traps (MDCR_EL2.TPM) and reads as zero: QEMU's real
            // PMCR_EL0 is not zero (its N field counts the counters), and
            // the kernel logs the emulation once.
            setup: |ctx| hello_with(ctx, "sysreg exit=0", "hello"),
            check: |o, c| {
                c.exit(o, exit::SUCCESS);
                c.log(o, "[net] reading PMCR_EL0");
                c.log(o, "[net] PMCR_EL0 read returned 0x0");
                c.log(o, "partition net: PMU register reads as zero, writes ignored (RAZ/WI; logged once)");
                c.log(o, "[storage] hello from storage at EL1");
                c.log(o, "all 2 partitions stopped, 0 failed");
            },
        },
        Scenario {
            name: "partitions-bad-hypercalls",
            setup: |ctx| hello_with(ctx, "badcalls hello", "hello"),
            check: |o, c| {
                c.exit(o, exit::SUCCESS);
                // -4 bad address, -2 invalid argument, -1 not supported.
                c.log(o, "[net] console-write of kernel memory: 0xfffffffffffffffc");
                c.log(o, "[net] console-write of 100000 bytes: 0xfffffffffffffffe");
                c.log(o, "[net] console-write across my end: 0xfffffffffffffffc");
                c.log(o, "[net] unknown call 0x77: 0xffffffffffffffff");
                c.log(o, "[net] hello from net at EL1");
                c.log(o, "all 2 partitions stopped, 0 failed");
            },
        },
        Scenario {
            // A misspelt scenario cannot pass by doing nothing: the payload
            // reads every word first and refuses one it does not know.
            name: "partitions-bootargs-refused",
            setup: |ctx| hello_with(ctx, "hello probe own", "hello"),
            check: |o, c| {
                c.exit(o, exit::PARTITION_FAILED);
                c.log(o, "[net] payload: bootargs word \"probe\" not understood: refusing to run");
                c.log(o, &format!("partition net: exited with status {}", crate::payload_bootargs::REFUSED));
                c.no_log(o, "[net] hello from net");
                c.log(o, "[storage] hello from storage at EL1");
                c.log(o, "partition storage: exited with status 0");
                c.log(o, "all 2 partitions stopped, 1 failed");
            },
        },
        Scenario {
            name: "partitions-refuse-split-group",
            setup: |ctx| {
                let dts = DEMO
                    .replace("addr=1.0", "addr=1.0 -device pcie-root-port,id=rp1,chassis=1,addr=3.0 -device pcie-pci-bridge,id=br1,bus=rp1,addr=0.0")
                    .replace("-device edu,dma_mask=0xffffffffffffffff,addr=2.0", "-device edu,dma_mask=0xffffffffffffffff,bus=br1,addr=1.0 -device edu,dma_mask=0xffffffffffffffff,bus=br1,addr=2.0")
                    .replace(
                        "    edu@1,0 {                           /* 00:01.0 */\n        reg = <0x0800 0x0 0x0 0x0 0x0>;\n        bulkhead,partition = <&net>;\n    };\n\n    edu@2,0 {                           /* 00:02.0 */\n        reg = <0x1000 0x0 0x0 0x0 0x0>;\n        bulkhead,partition = <&storage>;\n    };",
                        "    port@3,0 { reg = <0x1800 0 0 0 0>; #address-cells = <3>; #size-cells = <2>;\n        bridge@0,0 { reg = <0x10000 0 0 0 0>; #address-cells = <3>; #size-cells = <2>;\n            edu@1,0 { reg = <0x20800 0 0 0 0>; bulkhead,partition = <&net>; };\n            edu@2,0 { reg = <0x21000 0 0 0 0>; bulkhead,partition = <&storage>; }; }; };",
                    );
                ctx.with_overlay(QemuConfig::default(), &dts)
            },
            check: |o, c| {
                c.exit(o, exit::CONFIG_REFUSED);
                let host = c.machine(o).first_host().to_string();
                c.log(o, &format!("configuration refused: {host}/port@3,0/bridge@0,0/edu@"));
                c.log(o, "a group goes to one partition");
                c.no_log(o, "[net]");
                c.no_log(o, "[storage]");
                c.none_of(o, kind::TRANSLATE_SUCCESS, "DMA translated although nothing was assigned", |_| true, Witness::Catalogue);
            },
        },
        Scenario {
            // storage's edu at 00:05.0: QEMU virt's interrupt-map sends its
            // INTA to SPI 4, as net's at 00:01.0 (the map masks the device
            // number to two bits).
            name: "partitions-refuse-shared-intx",
            setup: |ctx| {
                let dts = DEMO.replace("addr=2.0", "addr=5.0").replace(
                    "edu@2,0 {                           /* 00:02.0 */\n        reg = <0x1000",
                    "edu@5,0 {                           /* 00:05.0 */\n        reg = <0x2800",
                );
                ctx.with_overlay(QemuConfig::default(), &dts)
            },
            check: |o, c| {
                c.exit(o, exit::CONFIG_REFUSED);
                c.log(o, "pci 00:01.0 1234:11e8 class 00ff00 PCI device, INTA");
                c.log(o, "pci 00:05.0 1234:11e8 class 00ff00 PCI device, INTA");
                // Whichever assignment comes second is refused, naming the other.
                let line = c.log(o, "(1234:11e8) raises INTA on SPI 4, the line of PCI 00:0").unwrap_or_default().to_string();
                c.that(
                    line.contains("edu@1,0: property bulkhead,partition: PCI 00:01.0 (1234:11e8) raises INTA on SPI 4, the line of PCI 00:05.0 (1234:11e8) (assigned to storage by")
                        || line.contains("edu@5,0: property bulkhead,partition: PCI 00:05.0 (1234:11e8) raises INTA on SPI 4, the line of PCI 00:01.0 (1234:11e8) (assigned to net by"),
                    format!("the refusal names the other function: {line}"),
                );
                c.log(o, "an interrupt line goes to one partition");
                c.no_log(o, "[net]");
                c.no_log(o, "[storage]");
                c.none_of(o, kind::TRANSLATE_SUCCESS, "DMA translated although nothing was assigned", |_| true, Witness::Catalogue);
            },
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
