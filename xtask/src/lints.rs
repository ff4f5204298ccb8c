//! The lints `cargo xtask test` runs: clippy with warnings as errors on the
//! host crates and on the kernel target's crates (both kernel images, and
//! the payload), so the workspace's `undocumented_unsafe_blocks = "deny"`
//! holds everywhere; and `cargo fmt --check` (the style in `rustfmt.toml`).

use crate::{cargo, prereq, BOARDS, HOST_CRATES, PAYLOAD_CRATE};

/// One lint run: what it is called in the report and cargo's arguments.
fn runs() -> Vec<(String, Vec<String>)> {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut host = own(&["clippy", "--all-targets"]);
    for k in HOST_CRATES.iter().chain(&["edu"]) {
        host.extend(own(&["-p", k]));
    }
    let mut target = own(&["clippy", "--release", "--target", prereq::TARGET, "-p", PAYLOAD_CRATE]);
    for (_, krate) in BOARDS {
        target.extend(own(&["-p", krate]));
    }
    let mut selftest = own(&["clippy", "--release", "--target", prereq::TARGET, "--features", "selftest"]);
    for (_, krate) in BOARDS {
        selftest.extend(own(&["-p", krate]));
    }
    let deny = own(&["--", "-D", "warnings"]);
    vec![
        ("clippy host crates".into(), [host, deny.clone()].concat()),
        (format!("clippy {} (production)", prereq::TARGET), [target, deny.clone()].concat()),
        (format!("clippy {} (selftest)", prereq::TARGET), [selftest, deny].concat()),
        ("rustfmt".into(), own(&["fmt", "--all", "--check"])),
    ]
}

/// Runs every lint, printing cargo's output and one line per lint; returns
/// (passed, failed).
pub fn run() -> Result<(usize, usize), String> {
    prereq::ensure_target()?;
    let (mut passed, mut failed) = (0, 0);
    for (name, args) in runs() {
        let st = cargo().args(&args).status().map_err(|e| format!("cannot run cargo {}: {e}", args[0]))?;
        if st.success() {
            println!("lint {name} ... ok");
            passed += 1;
        } else {
            println!("lint {name} ... FAILED (cargo {})", args.join(" "));
            failed += 1;
        }
    }
    println!("lints: {passed} passed, {failed} failed");
    Ok((passed, failed))
}
