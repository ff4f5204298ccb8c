//! Links the payload position-independent at 0 (it relocates itself).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-search={dir}");
        println!("cargo:rustc-link-arg=-Tpayload.ld");
        println!("cargo:rustc-link-arg=-pie");
        println!("cargo:rustc-link-arg=--no-dynamic-linker");
        println!("cargo:rustc-link-arg=-znotext");
    }
    println!("cargo:rerun-if-changed=payload.ld");
}
