//! SMMUv3 (placeholder).
#![no_std]
