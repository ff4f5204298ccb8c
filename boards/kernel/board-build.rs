//! The build script of every board crate (`build = "../kernel/board-build.rs"`):
//! links the kernel with the board's link.ld (its load address), the shared
//! layout in kernel.ld and defmt's table, as a static position-independent
//! executable: `_start` relocates the image to wherever the loader placed it.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-search={dir}");
        println!("cargo:rustc-link-search={dir}/../kernel");
        println!("cargo:rustc-link-arg=-Tlink.ld");
        println!("cargo:rustc-link-arg=-Tdefmt.x");
        // A PIE without a dynamic linker: the relocations stay in .rela.dyn
        // for `_start`. notext: some of them patch the read-only segment
        // (.data.rel.ro, .got), which is writable while the MMU is off.
        println!("cargo:rustc-link-arg=-pie");
        println!("cargo:rustc-link-arg=--no-dynamic-linker");
        println!("cargo:rustc-link-arg=-znotext");
    }
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=../kernel/kernel.ld");
    println!("cargo:rerun-if-env-changed=BULKHEAD_GIT");
}
