//! GICv3 (placeholder).
#![no_std]
