//! SMMUv3: what the hypervisor needs to assign devices to domains.
//!
//! For now it owns identification: the ID registers read once at boot and
//! decoded into the features stage-2 device assignment depends on (stage-2
//! translation, AArch64 tables, 4 KiB granule, stream ID width, output
//! address size). Stream tables, stage-2 contexts and fault handling arrive
//! with device assignment. Decoding is pure and tested on the host; the
//! register reads are the caller's (hv-arm maps the SMMU and passes the raw
//! values in).
#![no_std]
#![forbid(unsafe_code)]

/// Offsets of the ID registers in the SMMUv3 page 0.
pub mod regs {
    /// SMMU_IDR0.
    pub const IDR0: usize = 0x0;
    /// SMMU_IDR1.
    pub const IDR1: usize = 0x4;
    /// SMMU_IDR5.
    pub const IDR5: usize = 0x14;
    /// SMMU_AIDR (architecture revision).
    pub const AIDR: usize = 0x1c;
}

/// Features of an SMMUv3 that matter for stage-2 device assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Stage-1 translation.
    pub stage1: bool,
    /// Stage-2 translation (required for device assignment).
    pub stage2: bool,
    /// Two-level stream tables.
    pub two_level_stream_table: bool,
    /// Translation tables in AArch64 format.
    pub aarch64_tables: bool,
    /// Coherent table walks.
    pub coherent_walk: bool,
    /// Width of StreamIDs in bits.
    pub sid_bits: u8,
    /// Output address size in bits.
    pub oas_bits: u8,
    /// 4 KiB translation granule.
    pub granule_4k: bool,
    /// Architecture minor revision (SMMUv3.x).
    pub minor_revision: u8,
}

/// Why an SMMU cannot be used for device assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsuitable {
    /// No stage-2 translation.
    NoStage2,
    /// No AArch64 table format.
    NoAArch64Tables,
    /// No 4 KiB granule (the stage-2 tables the hypervisor builds use it).
    No4kGranule,
}

impl Features {
    /// Decodes IDR0, IDR1, IDR5 and AIDR.
    pub fn decode(idr0: u32, idr1: u32, idr5: u32, aidr: u32) -> Self {
        let ttf = (idr0 >> 2) & 0b11;
        let oas = match idr5 & 0b111 {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            5 => 48,
            _ => 52,
        };
        Self {
            stage2: idr0 & 1 != 0,
            stage1: idr0 & (1 << 1) != 0,
            aarch64_tables: ttf & 0b10 != 0,
            coherent_walk: idr0 & (1 << 4) != 0,
            two_level_stream_table: (idr0 >> 27) & 0b11 == 1,
            sid_bits: (idr1 & 0x3f) as u8,
            oas_bits: oas,
            granule_4k: idr5 & (1 << 4) != 0,
            minor_revision: (aidr & 0xf) as u8,
        }
    }

    /// Checks the features device assignment needs.
    pub fn check_assignable(&self) -> Result<(), Unsuitable> {
        if !self.stage2 {
            Err(Unsuitable::NoStage2)
        } else if !self.aarch64_tables {
            Err(Unsuitable::NoAArch64Tables)
        } else if !self.granule_4k {
            Err(Unsuitable::No4kGranule)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_typical_smmu() {
        // S1P, S2P, TTF = AArch64, COHACC, 2-level stream table; 16-bit
        // StreamIDs; 44-bit OAS with 4K and 64K granules; SMMUv3.1.
        let idr0 = 1 | 1 << 1 | 0b10 << 2 | 1 << 4 | 1 << 27;
        let f = Features::decode(idr0, 16, 4 | 1 << 4 | 1 << 6, 1);
        assert!(
            f.stage1 && f.stage2 && f.aarch64_tables && f.coherent_walk && f.two_level_stream_table
        );
        assert_eq!(
            (f.sid_bits, f.oas_bits, f.granule_4k, f.minor_revision),
            (16, 44, true, 1)
        );
        assert_eq!(f.check_assignable(), Ok(()));
    }

    #[test]
    fn refuses_what_assignment_cannot_use() {
        let f = Features::decode(1 << 1 | 0b10 << 2, 8, 1 << 4, 0);
        assert_eq!(f.check_assignable(), Err(Unsuitable::NoStage2));
        let f = Features::decode(1 | 0b01 << 2, 8, 1 << 4, 0);
        assert_eq!(f.check_assignable(), Err(Unsuitable::NoAArch64Tables));
        let f = Features::decode(1 | 0b10 << 2, 8, 1 << 6, 0);
        assert_eq!(f.check_assignable(), Err(Unsuitable::No4kGranule));
    }

    #[test]
    fn reserved_oas_values_are_the_largest() {
        assert_eq!(Features::decode(0, 0, 7, 0).oas_bits, 52);
    }
}
