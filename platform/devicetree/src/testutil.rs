//! Helpers for host tests of this crate and of the crates that read trees
//! with it (`partitions`): compiling DTS with the system `dtc`, and the
//! deterministic corruptions the fuzz tests feed. Built for this crate's
//! tests and with the `testutil` feature (a dev-dependency's), never for
//! the kernel.
extern crate std;
use std::vec::Vec;

/// Compiles DTS with the system `dtc` (a prerequisite of the project) and
/// `flags` (`-@` for an overlay's symbols), through pipes: no temporary
/// files, nothing shared between parallel tests.
pub fn dtc(flags: &[&str], dts: &str) -> Vec<u8> {
    let out = run_dtc(flags, dts);
    assert!(out.status.success(), "{}", std::string::String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// [`dtc`] without flags: a whole tree.
pub fn dtb(dts: &str) -> Vec<u8> {
    dtc(&[], dts)
}

/// DTS that `dtc` only writes when forced (repeated property names).
pub fn forced_dtb(dts: &str) -> Vec<u8> {
    let out = run_dtc(&["-f"], dts);
    assert!(!out.stdout.is_empty(), "dtc wrote nothing");
    out.stdout
}

fn run_dtc(flags: &[&str], dts: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dtc")
        .args(["-q"])
        .args(flags)
        .args(["-I", "dts", "-O", "dtb", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dtc installed");
    child.stdin.take().expect("stdin").write_all(dts.as_bytes()).expect("write to dtc");
    child.wait_with_output().expect("dtc runs")
}

/// xorshift64: deterministic, no dependency.
pub fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// `count` copies of `blob`, each with 1 to 4 random bytes overwritten
/// (xorshift64 from `seed`: the same corruptions every run).
pub fn byte_corruptions(blob: &[u8], mut seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..count).map(move |_| {
        let mut b = blob.to_vec();
        for _ in 0..1 + (seed % 4) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % b.len();
            b[i] = (seed >> 32) as u8;
        }
        b
    })
}

/// (offset, length) of every non-empty property value in the structure
/// block of a valid blob.
pub fn property_values(b: &[u8]) -> Vec<(usize, usize)> {
    use crate::fdt::{align4, header, FDT_BEGIN_NODE, FDT_END, FDT_PROP, FDT_TOKEN};
    let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let start = be(header::OFF_DT_STRUCT * 4);
    let (mut off, end) = (start, start + be(header::SIZE_DT_STRUCT * 4));
    while off + FDT_TOKEN <= end {
        let tag = be(off) as u32;
        off += FDT_TOKEN;
        match tag {
            FDT_BEGIN_NODE => {
                let n = b[off..].iter().position(|&c| c == 0).unwrap();
                off = align4(off + n + 1);
            }
            FDT_PROP => {
                let len = be(off);
                if len > 0 {
                    out.push((off + 8, len));
                }
                off = align4(off + 8 + len);
            }
            FDT_END => break,
            _ => {}
        }
    }
    out
}

/// The seed of `tests/discovery_fuzz.rs`'s [`value_corruptions`] of QEMU's
/// DTB, which `dt::equivalence` replays.
pub const VALUE_FUZZ_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// How many of them.
pub const VALUE_FUZZ_CASES: usize = 12_000;

/// `count` copies of `blob`, each with 1 to 4 byte, bit or cell
/// corruptions, seven in eight inside a property value — which the
/// structure check cannot catch — and the rest anywhere (xorshift64 from
/// `seed`: the same corruptions every run).
pub fn value_corruptions(blob: &[u8], mut seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let values = property_values(blob);
    assert!(values.len() > 100, "a blob with few property values");
    (0..count).map(move |_| {
        let mut b = blob.to_vec();
        for _ in 0..1 + next(&mut seed) % 4 {
            let r = next(&mut seed);
            let at = if !r.is_multiple_of(8) {
                let (o, len) = values[(r >> 8) as usize % values.len()];
                o + (r >> 24) as usize % len
            } else {
                (r >> 8) as usize % b.len()
            };
            let at = at.min(b.len() - 4);
            match (r >> 4) % 4 {
                0 => b[at] = (r >> 32) as u8,
                1 => b[at] ^= 1 << ((r >> 40) % 8),
                // Cell-sized values that stress arithmetic: 0, all-ones, high bit.
                2 => b[at & !3..(at & !3) + 4].copy_from_slice(&[0u32, u32::MAX, 0x8000_0000, 0xffff][(r >> 48) as usize % 4].to_be_bytes()),
                _ => b[at & !3..(at & !3) + 4].copy_from_slice(&((r >> 32) as u32).to_be_bytes()),
            }
        }
        b
    })
}
