//! What a production kernel image must not contain: the selftests
//! (`boards/kernel/src/selftest/`), the SMMU driver's raw-command
//! injection (`smmu` feature `diagnostics`) and the `edu` register map
//! they drive. Each kind of test code is looked for by its function
//! symbols and by the log strings defmt keeps in the ELF; the selftest
//! build of the same board is the witness that the search would find it.

use object::{Object, ObjectSymbol};

/// One kind of test code and how it shows in an ELF.
struct Kind {
    what: &'static str,
    /// A demangled function path (hash dropped) of this kind.
    function: fn(&str) -> bool,
    /// A defmt string of this kind.
    log: fn(&str) -> bool,
}

const KINDS: &[Kind] = &[
    Kind {
        what: "selftest module",
        function: |p| p.contains("::selftest::"),
        log: |m| ["selftest:", "selftest ", "dma-test:", "irq-test:"].iter().any(|p| m.starts_with(p)),
    },
    Kind { what: "raw SMMU commands", function: |p| p.contains("::diagnostic_submit_raw"), log: |_| false },
    Kind { what: "edu register map", function: |p| p.starts_with("edu::") || p.contains("<edu::"), log: |_| false },
];

/// What of each [`KINDS`] entry `elf` holds: (kind, names found).
fn test_code(elf: &[u8]) -> Result<Vec<(&'static str, Vec<String>)>, String> {
    let file = crate::image::parse_elf(elf)?;
    let mut found: Vec<(&'static str, Vec<String>)> = KINDS.iter().map(|k| (k.what, Vec::new())).collect();
    for sym in file.symbols() {
        let Ok(name) = sym.name() else { continue };
        // defmt interns each log string as a symbol named by its JSON.
        let log = name.starts_with('{').then(|| defmt_data(name)).flatten();
        let path = format!("{:#}", rustc_demangle::demangle(name));
        for (k, (_, hits)) in KINDS.iter().zip(found.iter_mut()) {
            let hit = match &log {
                Some(m) => (k.log)(m),
                None => (k.function)(&path),
            };
            if hit {
                hits.push(log.clone().unwrap_or_else(|| path.clone()));
            }
        }
    }
    Ok(found)
}

/// The `"data"` of a defmt symbol name (`{"package":…,"data":"…",…}`).
fn defmt_data(name: &str) -> Option<String> {
    let rest = &name[name.find("\"data\":\"")? + 8..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// Checks `production` holds none of the test code that `selftest` (the
/// same board built with the feature) shows the search finds. Ok: a
/// one-line account; Err: what leaked, or what the search cannot see.
pub fn check(production: &[u8], selftest: &[u8]) -> Result<String, String> {
    let (shipped, witness) = (test_code(production)?, test_code(selftest)?);
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for ((what, leaked), (_, expected)) in shipped.iter().zip(&witness) {
        if expected.is_empty() {
            problems.push(format!("the selftest image shows no {what}: this check would not see it"));
        }
        if !leaked.is_empty() {
            let shown: Vec<&str> = leaked.iter().take(3).map(String::as_str).collect();
            problems.push(format!("the production image holds the {what}: {} ({} in all)", shown.join(", "), leaked.len()));
        }
        seen.push(format!("{} {what}", expected.len()));
    }
    if problems.is_empty() {
        Ok(format!("none of the test code the selftest image shows ({})", seen.join(", ")))
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object as Writer, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};

    /// A relocatable AArch64 ELF with these symbol names.
    fn elf(names: &[&str]) -> Vec<u8> {
        let mut w = Writer::new(BinaryFormat::Elf, Architecture::Aarch64, Endianness::Little);
        for (i, n) in names.iter().enumerate() {
            w.add_symbol(Symbol {
                name: n.as_bytes().to_vec(),
                value: 0x1000 + i as u64 * 4,
                size: 4,
                kind: SymbolKind::Text,
                scope: SymbolScope::Compilation,
                weak: false,
                section: SymbolSection::Absolute,
                flags: SymbolFlags::None,
            });
        }
        w.write().expect("ELF")
    }

    const SELFTEST: &[&str] = &[
        "_ZN15bulkhead_kernel8selftest17before_partitions17hec9c9abac689e290E",
        "_ZN4smmu6driver21Smmu$LT$M$C$D$C$T$GT$21diagnostic_submit_raw17h0123456789abcdefE",
        "_ZN3edu9Registers9start_dma17h0123456789abcdefE",
        r#"{"package":"bulkhead-kernel","tag":"defmt_error","data":"dma-test: edu DMA did not complete within 2 s","disambiguator":"1","crate_name":"bulkhead_kernel"}"#,
    ];
    const PRODUCTION: &[&str] = &[
        "_ZN15bulkhead_kernel4boot16refuse_selftests17h0123456789abcdefE",
        r#"{"package":"bulkhead-kernel","tag":"defmt_warn","data":"bootargs: {=str} ignored: this image was built without selftests (cargo feature `selftest`)","disambiguator":"2","crate_name":"bulkhead_kernel"}"#,
    ];

    #[test]
    fn a_clean_production_image_passes() {
        let r = check(&elf(PRODUCTION), &elf(SELFTEST)).unwrap();
        assert_eq!(r, "none of the test code the selftest image shows (2 selftest module, 1 raw SMMU commands, 1 edu register map)");
    }

    #[test]
    fn each_kind_of_leak_is_named() {
        for leak in SELFTEST {
            let shipped: Vec<&str> = PRODUCTION.iter().chain([leak]).copied().collect();
            let e = check(&elf(&shipped), &elf(SELFTEST)).unwrap_err();
            assert!(e.starts_with("the production image holds the "), "{leak}: {e}");
        }
        let e = check(&elf(&[SELFTEST[1]]), &elf(SELFTEST)).unwrap_err();
        assert!(e.contains("holds the raw SMMU commands: smmu::driver::Smmu<M,D,T>::diagnostic_submit_raw (1 in all)"), "{e}");
    }

    #[test]
    fn a_witness_that_shows_nothing_fails() {
        let e = check(&elf(PRODUCTION), &elf(&SELFTEST[1..3])).unwrap_err();
        assert_eq!(e, "the selftest image shows no selftest module: this check would not see it");
    }

    #[test]
    fn defmt_strings_are_read_with_escapes() {
        assert_eq!(defmt_data(r#"{"tag":"x","data":"a \"b\" c","k":1}"#).as_deref(), Some(r#"a "b" c"#));
        assert_eq!(defmt_data(r#"{"data":"unterminated"#), None);
    }
}
