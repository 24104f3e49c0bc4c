//! The portable core of the hypervisor.
//!
//! Everything here builds and is tested on the host: no architecture is named
//! in code, no hardware is touched, and `unsafe` is forbidden. Firmware data
//! (device trees now, ACPI later) is parsed here into typed descriptions with
//! every length and offset checked, because the same parsers will meet
//! guest-supplied trees.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

#[cfg(test)]
extern crate std;

pub mod dom0less;
pub mod fdt;
pub mod memory;
pub mod modules;
pub mod platform;
pub mod tmem;
pub mod xen;
