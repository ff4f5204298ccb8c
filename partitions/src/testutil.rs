//! Helpers for the host tests of this crate.
extern crate std;
use std::vec::Vec;

/// Compiles DTS with the system `dtc` (a prerequisite of the project) and
/// `flags` (`-@` for an overlay's symbols), through pipes: no temporary
/// files, nothing shared between parallel tests.
pub(crate) fn dtc(flags: &[&str], dts: &str) -> Vec<u8> {
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
    let out = child.wait_with_output().expect("dtc runs");
    assert!(out.status.success(), "{}", std::string::String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// [`dtc`] without flags: a whole tree.
pub(crate) fn dtb(dts: &str) -> Vec<u8> {
    dtc(&[], dts)
}
