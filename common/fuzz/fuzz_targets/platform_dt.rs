//! Arbitrary bytes as a boot device tree: the parser must return (Ok or an
//! error), never panic, overflow or read out of bounds, and what it accepts
//! must make sense.
#![no_main]

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
});
