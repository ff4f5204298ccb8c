//! Boot: the banner's facts, faults reported and refused input.

use crate::dtb;
use crate::qemu::{Flavour, Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Ctx, Scenario, Witness};
use crate::trace::kind;
use crate::Image;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "boot-banner", setup: |_| Ok(QemuConfig::default()), check: check_banner },
        Scenario {
            name: "boot-data-abort",
            setup: |_| Ok(QemuConfig { append: Some("bulkhead.selftest=data-abort".into()), image: Image::Selftest, ..QemuConfig::default() }),
            check: check_data_abort,
        },
        Scenario {
            // The production image: what a loader's bootargs ask of
            // selftests is refused, nothing is done to the edu.
            name: "boot-selftests-refused",
            setup: |_| {
                Ok(QemuConfig {
                    append: Some(format!("{REFUSED_DATA_ABORT} {REFUSED_DMA}")),
                    extra: vec!["-device".into(), "edu,dma_mask=0xffffffffff".into()],
                    ..QemuConfig::default()
                })
            },
            check: check_selftests_refused,
        },
        Scenario { name: "boot-malformed-dtb", setup: malformed_dtb, check: check_malformed_dtb },
        Scenario {
            name: "boot-wrong-el",
            setup: |_| Ok(QemuConfig { flavour: Flavour::NoVirtualization, ..QemuConfig::default() }),
            check: |o, c| {
                c.exit(o, exit::WRONG_EL);
                c.log(o, "bulkhead must be entered at EL2");
                c.log(o, "was entered at EL1");
                c.that(o.trace.mmio_writes().is_empty(), "the SMMU was touched at the wrong EL");
            },
        },
    ]
}

fn check_banner(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    c.log(o, "bulkhead 0.1.0");
    c.log(o, "CurrentEL: EL2");
    c.log(o, "CPUs: 4");
    c.log(o, "memory: 2048 MiB");
    c.log(o, "RAM      [0x40000000..0xc0000000) 2048 MiB");
    c.log(o, "reserved [0x40000000..0x40100000) dtb");
    c.log(o, "SMMUs: 1");
    let m = c.machine(o);
    c.that(m.smmus.len() == 1, format!("the DT describes {} SMMUs, expected 1", m.smmus.len()));
    for s in &m.smmus {
        c.log(o, &format!("SMMUv3 {} at {:#x} size 0x20000, coherent", s.name, s.base));
    }
    // The board lists virt's SMMU: `_start` aborts it before relocating.
    c.log(o, "DMA aborted (GBPA.ABORT) since _start's first instructions (the board's early list)");
    c.log(o, "interrupt eventq: SPI 74 (INTID 106, edge)");
    c.log(o, "interrupt gerror: SPI 77 (INTID 109, edge)");
    c.that(o.log.iter().all(|l| l.micros.is_some()), "a log line has no timestamp");
    c.gbpa_abort_first(o);
}

fn check_data_abort(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::EXCEPTION);
    let announced = c.log(o, "selftest: reading the unmapped stack guard page at").map(str::to_string);
    c.log(o, "EXCEPTION: synchronous exception at EL2 from current EL, SP_ELx: EC=0x25 (data abort at the same EL)");
    c.log(o, "DFSC=0x07 (translation fault, level 3), WnR=0 (read)");
    if let Some(line) = announced {
        let addr = line.rsplit(' ').next().unwrap_or("").trim_start_matches("0x").to_string();
        c.log(o, &format!("FAR=0x{addr:0>16}"));
    }
    c.no_log(o, "read of the guard page returned");
}

const REFUSED_DATA_ABORT: &str = "bulkhead.selftest=data-abort";
const REFUSED_DMA: &str = "bulkhead.selftest=dma";

fn check_selftests_refused(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    for arg in [REFUSED_DATA_ABORT, REFUSED_DMA] {
        c.log(o, &format!("bootargs: {arg} ignored: this image was built without selftests (cargo feature `selftest`)"));
    }
    c.no_log(o, "selftest:");
    c.no_log(o, "dma-test:");
    c.log(o, &format!("pci 00:01.0 {}", edu::PCI_ID));
    // No DMA was started: nothing reached the SMMU from the edu, though
    // its trace points are there.
    for kind in [kind::TRANSLATE_SUCCESS, kind::TRANSLATE_ABORT] {
        c.none_of(o, kind, "DMA from the edu", |_| true, Witness::Catalogue);
    }
}

fn malformed_dtb(ctx: &Ctx) -> Result<QemuConfig, String> {
    let cfg = QemuConfig::default();
    let good = ctx.file("virt.dtb");
    cfg.dump_dtb(&good)?;
    let mut blob = std::fs::read(&good).map_err(|e| e.to_string())?;
    dtb::corrupt_property_name(&mut blob, "pl011@9000000")?;
    let bad = ctx.file("corrupt.dtb");
    std::fs::write(&bad, blob).map_err(|e| e.to_string())?;
    Ok(QemuConfig { dtb: Some(bad), ..cfg })
}

fn check_malformed_dtb(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::BAD_DEVICE_TREE);
    c.log(o, "cannot boot: device tree at 0x40000000: malformed device tree");
    c.no_log(o, "CurrentEL: EL2");
}
