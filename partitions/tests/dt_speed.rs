//! How long the boot's device-tree reads take on the host, on QEMU `virt`'s
//! DTB (`tests/checker/qemu-virt.dtb`) with the demo overlay merged in, as
//! the kernel reads it. A measurement, not a test: it asserts nothing about
//! time and is ignored by default. Run it with
//!
//! ```text
//! cargo test --release -p partitions --features machine --test dt_speed -- --ignored --nocapture
//! ```
//!
//! Each figure is the best per-call time of several batches (the least
//! disturbed by other work on the machine).

use partitions::binding;
use platform::discovery::discover;
use platform::dt::DeviceTree;
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compiles an overlay source with `dtc -@` (symbols, for its phandles).
fn overlay_dtb(src: &str) -> Vec<u8> {
    let mut child = Command::new("dtc")
        .args(["-q", "-@", "-I", "dts", "-O", "dtb", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dtc installed");
    child.stdin.take().expect("stdin").write_all(src.as_bytes()).expect("write to dtc");
    let out = child.wait_with_output().expect("dtc runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// QEMU virt's DTB and the same with the demo overlay merged.
fn blobs() -> (Vec<u8>, Vec<u8>) {
    let base = std::fs::read(repo().join("tests/checker/qemu-virt.dtb")).expect("tests/checker/qemu-virt.dtb");
    let demo = std::fs::read_to_string(repo().join("boards/qemu-virt/overlays/demo.dts")).expect("demo.dts");
    let merged = platform::overlay::apply(&base, &[&overlay_dtb(&demo)]).expect("the demo overlay applies");
    (base, merged)
}

/// Keeps the optimiser from dropping a result.
fn consume<T>(v: T) {
    drop(black_box(v));
}

/// Best per-call time of `f` over batches of about 20 ms, for about 0.3 s.
/// With `DT_SPEED_CALLS=N` in the environment, calls `f` exactly N times
/// instead (for an instruction count under `valgrind --tool=callgrind`).
fn time(f: &mut dyn FnMut()) -> Duration {
    if let Some(n) = std::env::var("DT_SPEED_CALLS").ok().and_then(|v| v.parse::<u32>().ok()) {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        return t.elapsed() / n.max(1);
    }
    f();
    let start = Instant::now();
    let mut n = 1u32;
    while start.elapsed() < Duration::from_millis(20) {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        if t.elapsed() > Duration::from_millis(5) {
            break;
        }
        n *= 2;
    }
    let mut best = Duration::MAX;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        best = best.min(t.elapsed() / n);
    }
    best
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture (and --release)"]
fn device_tree_reads() {
    let (base, merged) = blobs();
    let dt = DeviceTree::parse(&merged).unwrap();
    let smmus = dt.smmus().unwrap();
    let struct_size = u32::from_be_bytes(merged[36..40].try_into().unwrap());
    println!("demo-merged QEMU virt DTB: {} bytes, structure block {struct_size} bytes", merged.len());
    let rows: Vec<(&str, Duration)> = vec![
        ("DeviceTree::parse (base)", time(&mut || consume(DeviceTree::parse(black_box(&base)).is_ok()))),
        ("DeviceTree::parse (merged)", time(&mut || consume(DeviceTree::parse(black_box(&merged)).is_ok()))),
        ("smmus", time(&mut || consume(dt.smmus().unwrap()))),
        ("memory", time(&mut || consume(dt.memory().unwrap()))),
        ("mmio_regions", time(&mut || consume(dt.mmio_regions().unwrap()))),
        ("cpus", time(&mut || consume(dt.cpus().unwrap()))),
        ("reserved_memory", time(&mut || consume(dt.reserved_memory().unwrap()))),
        ("stdout_uart", time(&mut || consume(dt.stdout_uart().unwrap()))),
        ("psci + bootargs", time(&mut || consume((dt.psci().unwrap(), dt.bootargs().unwrap())))),
        ("discovery::discover", time(&mut || consume(discover(&dt, &smmus).unwrap()))),
        ("binding::parse", time(&mut || consume(binding::parse(black_box(&merged)).unwrap()))),
    ];
    for (what, t) in rows {
        println!("{what:<28} {:>10.2} µs", t.as_secs_f64() * 1e6);
    }
}
