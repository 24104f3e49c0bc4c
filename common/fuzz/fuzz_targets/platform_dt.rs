//! Arbitrary bytes as a boot device tree: the parsers must return (Ok or an
//! error), never panic, overflow or read out of bounds, and what they accept
//! must make sense. The same bytes go to the platform description and to
//! the `/chosen` boot-module table.
#![no_main]

use common::modules::{MAX_MODULES, ModuleKind, Modules};
use common::platform::{Platform, dtb_total_size};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dtb_total_size(data) {
        assert!(!e.to_string().contains('\n'));
    }
    match Platform::from_fdt(data) {
        Ok(p) => {
            assert!(!p.memory.is_empty() && !p.cpus.is_empty());
            assert!(p.memory.iter().all(|r| !r.is_empty()));
            let _ = format!("{p:?}");
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
    match Modules::from_fdt(data) {
        Ok(mods) => check_modules(&mods),
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
});

/// What a table handed to the domain builder must satisfy.
fn check_modules(mods: &Modules<'_>) {
    let all: Vec<_> = mods.iter().collect();
    assert_eq!(all.len(), mods.len());
    assert!(mods.len() <= MAX_MODULES);
    assert_eq!(mods.is_empty(), all.is_empty());
    for (i, m) in all.iter().enumerate() {
        assert!(m.range.start < m.range.end, "empty module {m:?}");
        assert!(m.range.size() > 0);
        for other in &all[..i] {
            assert!(
                m.range.end <= other.range.start || other.range.end <= m.range.start,
                "{m:?} overlaps {other:?}"
            );
            assert_ne!(m.kind, other.kind, "two modules of one kind");
        }
    }
    for kind in [
        ModuleKind::Kernel,
        ModuleKind::Ramdisk,
        ModuleKind::DeviceTree,
    ] {
        let n = all.iter().filter(|m| m.kind == kind).count();
        assert!(n <= 1);
        assert_eq!(mods.first(kind).is_some(), n == 1);
    }
    let _ = format!("{mods:?}");
}
