//! The aarch64 virtual machine, as logic that runs anywhere.
//!
//! Everything here is what hv-arm needs to present a machine to an EL1
//! guest but that touches no hardware: the fixed guest memory map, the guest
//! device tree, the arm64 Image header, the PL011 model, PSCI and the
//! syndrome decoding of traps. It is built and tested on the host; hv-arm
//! supplies the trap front end and the memory.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod console_mux;
pub mod esr;
pub mod guest_dt;
pub mod image;
pub mod layout;
pub mod pl011;
pub mod psci;
