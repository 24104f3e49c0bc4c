//! GICv3 for the hypervisor.
//!
//! [`host`] drives the physical GIC with arm-gic and adds what that crate
//! leaves out for a hypervisor: the CPU interface runs in EOImode 1, so an
//! EOI only drops the running priority and a separate DIR write deactivates
//! the interrupt. That split is what later lets a guest's deactivation of a
//! hardware-backed virtual interrupt reach the physical one. Redistributors
//! are matched to CPUs by the affinity in GICR_TYPER, never by position.
//!
//! It owns no policy: which interrupts are enabled, and for whom, is the
//! caller's choice. The virtual GIC comes with the Linux-guest issue.
#![no_std]

pub mod host;
pub mod vgic;

pub use arm_gic::IntId;
