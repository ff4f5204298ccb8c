//! Helpers for the host tests of this crate.
extern crate std;
use std::vec::Vec;

/// Compiles DTS with the system `dtc` (a prerequisite of the project),
/// through pipes: no temporary files, nothing shared between parallel tests.
pub(crate) fn dtb(dts: &str) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dtc installed");
    child.stdin.take().expect("stdin").write_all(dts.as_bytes()).expect("write to dtc");
    let out = child.wait_with_output().expect("dtc runs");
    assert!(out.status.success(), "{}", std::string::String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `count` copies of `blob`, each with 1 to 4 random bytes overwritten
/// (xorshift64 from `seed`: the same corruptions every run).
pub(crate) fn byte_corruptions(blob: &[u8], mut seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
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
