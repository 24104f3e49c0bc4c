//! hv-x86's logic that needs no hardware, kept out of the binary so it can
//! be tested on the host (`cargo test -p hv-x86 --lib`).
//!
//! Nothing here touches memory or ports: loader memory is read through the
//! [`multiboot::Memory`] the binary supplies.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod multiboot;
