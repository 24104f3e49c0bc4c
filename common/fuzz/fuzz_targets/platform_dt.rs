//! Arbitrary bytes as a boot device tree: the parser must return (Ok or an
//! error), never panic, overflow or read out of bounds.
#![no_main]

use common::platform::{Platform, dtb_total_size};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dtb_total_size(data);
    if let Ok(p) = Platform::from_fdt(data) {
        assert!(!p.memory.is_empty() && !p.cpus.is_empty());
        for c in p.cpus.iter() {
            let _ = c.mpidr;
        }
    }
});
