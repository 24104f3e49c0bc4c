//! hv-x86's logic that needs no hardware, kept out of the binary so it can
//! be tested on the host (`cargo test -p hv-x86 --lib`).
//!
//! Nothing here touches memory, ports or registers: loader and firmware
//! memory is read through the [`multiboot::Memory`] the binary supplies,
//! page tables through [`ept::TableMemory`], guest memory through
//! [`gwalk::GuestPhys`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod elf;
pub mod ept;
pub mod gwalk;
pub mod multiboot;
pub mod viridian;
pub mod vlapic;
pub mod vmx;
pub mod xencpuid;
