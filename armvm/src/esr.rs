//! Exception syndromes: decoding ESR_EL2 for the traps from a guest, and
//! building the ESR_EL1 value and entry state of an exception injected
//! into one.
//!
//! Owns the bit layouts (Arm ARM, ESR_ELx and its ISS encodings) and
//! nothing else: it never reads or writes a register, and it does not
//! decide what a trap means. Every ESR value decodes to something: an
//! exception class not handled here is [`Exit::Other`].
//!
//! Where the PC goes after a trap is the caller's business, but note the
//! architecture's rule: HVC returns past the instruction (ELR_EL2 already
//! points after it); trapped WFx, SMC, MSR/MRS and data aborts leave
//! ELR_EL2 on the instruction itself, to be skipped (4 bytes, see `il32`)
//! once emulated.

/// ESR bit positions.
const EC_SHIFT: u32 = 26;
const IL: u64 = 1 << 25;
const ISS_MASK: u64 = (1 << 25) - 1;

/// Exception class: unknown reason (an UNDEFINED instruction).
pub const EC_UNKNOWN: u8 = 0x00;
/// Trapped WFI/WFE.
pub const EC_WFX: u8 = 0x01;
/// HVC from AArch64.
pub const EC_HVC64: u8 = 0x16;
/// SMC from AArch64 trapped by HCR_EL2.TSC.
pub const EC_SMC64: u8 = 0x17;
/// Trapped MSR, MRS or system instruction from AArch64.
pub const EC_SYS64: u8 = 0x18;
/// Instruction abort from a lower exception level.
pub const EC_IABT_LOW: u8 = 0x20;
/// Data abort from a lower exception level.
pub const EC_DABT_LOW: u8 = 0x24;
/// Data abort without a change of exception level.
pub const EC_DABT_CUR: u8 = 0x25;

/// Fault status code: synchronous external abort (not on a table walk).
pub const FSC_SYNC_EXTERNAL: u8 = 0x10;

/// A system register's encoding in the MSR/MRS instruction space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SysRegEncoding {
    /// op0 (2 bits).
    pub op0: u8,
    /// op1 (3 bits).
    pub op1: u8,
    /// CRn (4 bits).
    pub crn: u8,
    /// CRm (4 bits).
    pub crm: u8,
    /// op2 (3 bits).
    pub op2: u8,
}

/// ICC_SGI1R_EL1: generate a Group 1 SGI for the current security state.
pub const ICC_SGI1R_EL1: SysRegEncoding = SysRegEncoding {
    op0: 3,
    op1: 0,
    crn: 12,
    crm: 11,
    op2: 5,
};
/// ICC_ASGI1R_EL1: generate a Group 1 SGI for the other security state.
pub const ICC_ASGI1R_EL1: SysRegEncoding = SysRegEncoding {
    op0: 3,
    op1: 1,
    crn: 12,
    crm: 11,
    op2: 6,
};
/// ICC_SGI0R_EL1: generate a Group 0 SGI.
pub const ICC_SGI0R_EL1: SysRegEncoding = SysRegEncoding {
    op0: 3,
    op1: 2,
    crn: 12,
    crm: 11,
    op2: 7,
};

/// A trapped MSR/MRS (EC 0x18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// op0.
    pub op0: u8,
    /// op1.
    pub op1: u8,
    /// CRn.
    pub crn: u8,
    /// CRm.
    pub crm: u8,
    /// op2.
    pub op2: u8,
    /// The general-purpose register transferred; 31 is XZR (reads as
    /// zero, writes discarded), never SP.
    pub rt: u8,
    /// True for MRS (the guest reads), false for MSR.
    pub read: bool,
}

impl SysRegAccess {
    /// The register accessed.
    pub fn encoding(&self) -> SysRegEncoding {
        SysRegEncoding {
            op0: self.op0,
            op1: self.op1,
            crn: self.crn,
            crm: self.crm,
            op2: self.op2,
        }
    }

    /// True when the access is to the register `enc`.
    pub fn is(&self, enc: SysRegEncoding) -> bool {
        self.encoding() == enc
    }
}

/// A data abort from the guest (EC 0x24).
///
/// When `isv` is false the hardware gave no description of the access
/// (a load/store pair, writeback, SIMD, ...): `sas_bytes`, `sign_extend`,
/// `rt` and `sf` are then 0/false and the access cannot be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// The syndrome describes the access.
    pub isv: bool,
    /// Access size: 1, 2, 4 or 8 bytes (0 when `!isv`).
    pub sas_bytes: u8,
    /// A load sign-extends to the register.
    pub sign_extend: bool,
    /// The register loaded or stored; 31 is XZR/WZR.
    pub rt: u8,
    /// The register is 64-bit (X), else 32-bit (W).
    pub sf: bool,
    /// A write (for a cache maintenance op, also true).
    pub write: bool,
    /// The fault was on the stage-1 table walk, not the access.
    pub s1ptw: bool,
    /// Data fault status code.
    pub dfsc: u8,
    /// The instruction is 32 bits long (always, from AArch64).
    pub il32: bool,
}

impl DataAbort {
    /// True for a translation fault at any level (DFSC 0b0001LL): the usual
    /// result of touching an IPA stage 2 does not map.
    pub fn is_translation_fault(&self) -> bool {
        self.dfsc & 0x3c == 0x04
    }
}

/// Why the guest trapped, as far as the hypervisor handles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// WFI (or WFIT) / WFE (or WFET).
    Wfx {
        /// WFE rather than WFI.
        wfe: bool,
    },
    /// HVC #imm from AArch64.
    Hvc {
        /// The immediate.
        imm: u16,
    },
    /// SMC #imm from AArch64.
    Smc {
        /// The immediate.
        imm: u16,
    },
    /// MSR/MRS to a trapped system register.
    SysReg(SysRegAccess),
    /// Data abort from the guest.
    DataAbort(DataAbort),
    /// Instruction abort from the guest.
    InstructionAbort {
        /// Instruction fault status code.
        ifsc: u8,
    },
    /// Any other exception class.
    Other {
        /// The EC field.
        ec: u8,
    },
}

fn bits(v: u64, lo: u32, width: u32) -> u8 {
    ((v >> lo) & ((1 << width) - 1)) as u8
}

fn bit(v: u64, n: u32) -> bool {
    (v >> n) & 1 != 0
}

/// The exception class of an ESR value.
pub fn ec(esr: u64) -> u8 {
    bits(esr, EC_SHIFT, 6)
}

/// Decodes ESR_EL2 as read after a trap from the guest.
pub fn decode(esr: u64) -> Exit {
    let iss = esr & ISS_MASK;
    match ec(esr) {
        EC_WFX => Exit::Wfx {
            // TI bit 0: WFE/WFET; bit 1 (FEAT_WFxT) adds the timeout.
            wfe: bit(iss, 0),
        },
        EC_HVC64 => Exit::Hvc { imm: iss as u16 },
        EC_SMC64 => Exit::Smc { imm: iss as u16 },
        EC_SYS64 => Exit::SysReg(SysRegAccess {
            op0: bits(iss, 20, 2),
            op2: bits(iss, 17, 3),
            op1: bits(iss, 14, 3),
            crn: bits(iss, 10, 4),
            rt: bits(iss, 5, 5),
            crm: bits(iss, 1, 4),
            read: bit(iss, 0),
        }),
        EC_DABT_LOW => {
            let isv = bit(iss, 24);
            let described = |v| if isv { v } else { 0 };
            Exit::DataAbort(DataAbort {
                isv,
                sas_bytes: described(1 << bits(iss, 22, 2)),
                sign_extend: isv && bit(iss, 21),
                rt: described(bits(iss, 16, 5)),
                sf: isv && bit(iss, 15),
                write: bit(iss, 6),
                s1ptw: bit(iss, 7),
                dfsc: bits(iss, 0, 6),
                il32: esr & IL != 0,
            })
        }
        EC_IABT_LOW => Exit::InstructionAbort {
            ifsc: bits(iss, 0, 6),
        },
        ec => Exit::Other { ec },
    }
}

/// ESR_EL1 for a synchronous external abort injected on a data access.
/// `from_el0`: the access was made at EL0 (EC 0x24), else at EL1 (0x25).
/// ISV is 0, so IL is 1 as the architecture requires.
pub fn external_dabt_syndrome(from_el0: bool, write: bool) -> u64 {
    let ec = if from_el0 { EC_DABT_LOW } else { EC_DABT_CUR };
    let wnr = if write { 1 << 6 } else { 0 };
    (u64::from(ec) << EC_SHIFT) | IL | wnr | u64::from(FSC_SYNC_EXTERNAL)
}

/// ESR_EL1 for an UNDEFINED instruction (EC 0x00; IL is 1 as the
/// architecture requires for this class).
pub fn undef_syndrome() -> u64 {
    (u64::from(EC_UNKNOWN) << EC_SHIFT) | IL
}

/// Which of the four entries of a vector table group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorKind {
    /// Synchronous exception.
    Sync,
    /// IRQ.
    Irq,
    /// FIQ.
    Fiq,
    /// SError.
    SError,
}

/// SPSR fields.
const SPSR_NRW: u64 = 1 << 4;
const SPSR_EL_SHIFT: u32 = 2;
const SPSR_SP: u64 = 1 << 0;
const SPSR_DIT: u64 = 1 << 24;
/// EL1h with D, A, I and F masked.
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;

/// Offset from VBAR_EL1 of the vector for an exception of `kind` taken to
/// EL1, given the guest's PSTATE at the time (its SPSR_EL2): EL1 on SP_EL0
/// 0x000, EL1 on SP_EL1 0x200, AArch64 EL0 0x400, AArch32 0x600, plus
/// 0x80 per kind. A mode a guest cannot be in (EL2, EL3) is taken as EL1
/// on SP_EL1.
pub fn vector_offset(spsr_el2_of_guest: u64, kind: VectorKind) -> u64 {
    let spsr = spsr_el2_of_guest;
    let group = if spsr & SPSR_NRW != 0 {
        0x600
    } else {
        match (spsr >> SPSR_EL_SHIFT) & 3 {
            0 => 0x400,
            1 if spsr & SPSR_SP == 0 => 0x000,
            _ => 0x200,
        }
    };
    let entry = match kind {
        VectorKind::Sync => 0x000,
        VectorKind::Irq => 0x080,
        VectorKind::Fiq => 0x100,
        VectorKind::SError => 0x180,
    };
    group + entry
}

/// PSTATE (to write to SPSR_EL2 before ERET) for entering the guest's EL1
/// exception vector: EL1h, AArch64, D/A/I/F masked. PSTATE.DIT is kept,
/// as the architecture does on exception entry. Not handled: PAN (set on
/// entry when SCTLR_EL1.SPAN is 0), SSBS (taken from SCTLR_EL1.DSSBS),
/// TCO (set with MTE) and ALLINT; they come out 0. The caller saves the
/// old PSTATE in SPSR_EL1 and the return address in ELR_EL1.
pub fn injected_pstate(old_spsr: u64) -> u64 {
    PSTATE_EL1H_MASKED | (old_spsr & SPSR_DIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esr(ec: u8, il: bool, iss: u64) -> u64 {
        (u64::from(ec) << 26) | if il { IL } else { 0 } | (iss & ISS_MASK)
    }

    #[test]
    fn wfx() {
        assert_eq!(decode(esr(EC_WFX, true, 0)), Exit::Wfx { wfe: false });
        assert_eq!(decode(esr(EC_WFX, true, 1)), Exit::Wfx { wfe: true });
        // WFIT / WFET, and a condition field set.
        assert_eq!(decode(esr(EC_WFX, true, 2)), Exit::Wfx { wfe: false });
        assert_eq!(
            decode(esr(EC_WFX, true, 3 | (0x1f << 20))),
            Exit::Wfx { wfe: true }
        );
        // A real value: WFI from AArch64 (0x0600_0000 | IL).
        assert_eq!(decode(0x0600_0000 | IL), Exit::Wfx { wfe: false });
    }

    #[test]
    fn hvc_smc() {
        assert_eq!(decode(0x5a00_0000), Exit::Hvc { imm: 0 });
        assert_eq!(decode(esr(EC_HVC64, true, 0xea1)), Exit::Hvc { imm: 0xea1 });
        assert_eq!(
            decode(esr(EC_SMC64, true, 0xffff)),
            Exit::Smc { imm: 0xffff }
        );
        // Bits above imm16 do not leak into it.
        assert_eq!(
            decode(esr(EC_SMC64, true, 0x1_2345)),
            Exit::Smc { imm: 0x2345 }
        );
    }

    fn sys_iss(e: SysRegEncoding, rt: u8, read: bool) -> u64 {
        (u64::from(e.op0) << 20)
            | (u64::from(e.op2) << 17)
            | (u64::from(e.op1) << 14)
            | (u64::from(e.crn) << 10)
            | (u64::from(rt) << 5)
            | (u64::from(e.crm) << 1)
            | u64::from(read)
    }

    #[test]
    fn sysreg_sgi1r() {
        // msr icc_sgi1r_el1, x3
        let Exit::SysReg(a) = decode(esr(EC_SYS64, true, sys_iss(ICC_SGI1R_EL1, 3, false))) else {
            panic!("not a sysreg trap");
        };
        assert_eq!(
            a,
            SysRegAccess {
                op0: 3,
                op1: 0,
                crn: 12,
                crm: 11,
                op2: 5,
                rt: 3,
                read: false
            }
        );
        assert!(a.is(ICC_SGI1R_EL1));
        assert!(!a.is(ICC_ASGI1R_EL1));
        assert!(!a.is(ICC_SGI0R_EL1));
        // The raw syndrome for it, worked out by hand from the ISS layout.
        assert_eq!(sys_iss(ICC_SGI1R_EL1, 3, false), 0x3a_3076);
    }

    #[test]
    fn sysreg_fields_all_registers() {
        for e in [ICC_SGI1R_EL1, ICC_ASGI1R_EL1, ICC_SGI0R_EL1] {
            for rt in [0, 17, 30, 31] {
                for read in [false, true] {
                    match decode(esr(EC_SYS64, true, sys_iss(e, rt, read))) {
                        Exit::SysReg(a) => {
                            assert!(a.is(e));
                            assert_eq!(a.encoding(), e);
                            assert_eq!((a.rt, a.read), (rt, read));
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
        // Every field at its maximum.
        let Exit::SysReg(a) = decode(esr(EC_SYS64, true, ISS_MASK)) else {
            panic!();
        };
        assert_eq!(
            (a.op0, a.op1, a.crn, a.crm, a.op2, a.rt, a.read),
            (3, 7, 15, 15, 7, 31, true)
        );
    }

    #[test]
    fn data_abort_described() {
        // str w1, [x0] to unmapped IPA: ISV, SAS=2 (4 bytes), SRT=1, WnR,
        // DFSC = level-3 translation fault.
        let iss = (1 << 24) | (2 << 22) | (1 << 16) | (1 << 6) | 0x07;
        let Exit::DataAbort(d) = decode(esr(EC_DABT_LOW, true, iss)) else {
            panic!();
        };
        assert_eq!(
            d,
            DataAbort {
                isv: true,
                sas_bytes: 4,
                sign_extend: false,
                rt: 1,
                sf: false,
                write: true,
                s1ptw: false,
                dfsc: 0x07,
                il32: true
            }
        );
        assert!(d.is_translation_fault());

        // ldrsh x30, [x2]: 2 bytes, sign-extended, 64-bit register, read.
        let iss = (1 << 24) | (1 << 22) | (1 << 21) | (30 << 16) | (1 << 15) | 0x06;
        let Exit::DataAbort(d) = decode(esr(EC_DABT_LOW, true, iss)) else {
            panic!();
        };
        assert_eq!(
            (d.sas_bytes, d.sign_extend, d.rt, d.sf, d.write),
            (2, true, 30, true, false)
        );
    }

    #[test]
    fn data_abort_sizes() {
        for (sas, bytes) in [(0, 1), (1, 2), (2, 4), (3, 8)] {
            let iss = (1 << 24) | (sas << 22) | 0x04;
            let Exit::DataAbort(d) = decode(esr(EC_DABT_LOW, true, iss)) else {
                panic!();
            };
            assert_eq!(d.sas_bytes, bytes);
        }
    }

    #[test]
    fn data_abort_undescribed() {
        // ISV clear: the other bits are not to be trusted and come out zero.
        let iss = (3 << 22) | (1 << 21) | (31 << 16) | (1 << 15) | (1 << 7) | (1 << 6) | 0x0f;
        let Exit::DataAbort(d) = decode(esr(EC_DABT_LOW, true, iss)) else {
            panic!();
        };
        assert_eq!(
            d,
            DataAbort {
                isv: false,
                sas_bytes: 0,
                sign_extend: false,
                rt: 0,
                sf: false,
                write: true,
                s1ptw: true,
                dfsc: 0x0f,
                il32: true
            }
        );
        assert!(!d.is_translation_fault());
        let Exit::DataAbort(d) = decode(esr(EC_DABT_LOW, false, 0)) else {
            panic!();
        };
        assert!(!d.il32);
    }

    #[test]
    fn translation_fault_levels() {
        let dabt = |dfsc| DataAbort {
            isv: true,
            sas_bytes: 4,
            sign_extend: false,
            rt: 0,
            sf: false,
            write: false,
            s1ptw: false,
            dfsc,
            il32: true,
        };
        for f in 0x04..=0x07 {
            assert!(dabt(f).is_translation_fault());
        }
        for f in [0x00, 0x03, 0x08, 0x0b, 0x0c, 0x10, 0x14, 0x21, 0x3f] {
            assert!(!dabt(f).is_translation_fault(), "{f:#x}");
        }
    }

    #[test]
    fn instruction_abort() {
        assert_eq!(
            decode(esr(EC_IABT_LOW, true, 0x86)),
            Exit::InstructionAbort { ifsc: 0x06 }
        );
    }

    #[test]
    fn other_classes() {
        for ec in [0x00u8, 0x07, 0x12, 0x13, 0x15, 0x21, 0x25, 0x2f, 0x3c, 0x3f] {
            assert_eq!(decode(esr(ec, true, 0x1ff_ffff)), Exit::Other { ec });
        }
        // Bits above 31 (ISS2 and RES0) change nothing.
        assert_eq!(
            decode((0xffff_ffffu64 << 32) | esr(EC_HVC64, true, 7)),
            Exit::Hvc { imm: 7 }
        );
        assert_eq!(decode(u64::MAX), Exit::Other { ec: 0x3f });
    }

    #[test]
    fn every_esr_value_decodes() {
        let mut x: u64 = 0xdead_beef_cafe_f00d;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if let Exit::DataAbort(d) = decode(x) {
                assert!(matches!(d.sas_bytes, 0 | 1 | 2 | 4 | 8));
                assert!(d.rt < 32 && d.dfsc < 64);
            }
        }
        for ec in 0..64u64 {
            let _ = decode(ec << 26);
        }
    }

    #[test]
    fn injected_dabt() {
        // From EL1 (EC 0x25), read.
        assert_eq!(external_dabt_syndrome(false, false), 0x9600_0010);
        // From EL1, write.
        assert_eq!(external_dabt_syndrome(false, true), 0x9600_0050);
        // From EL0 (EC 0x24), write.
        assert_eq!(external_dabt_syndrome(true, true), 0x9200_0050);
        let s = external_dabt_syndrome(true, false);
        assert_eq!(ec(s), EC_DABT_LOW);
        assert_eq!(s & (1 << 24), 0, "ISV clear");
        assert_ne!(s & IL, 0);
        assert_eq!(s & 0x3f, 0x10);
    }

    #[test]
    fn injected_undef() {
        assert_eq!(undef_syndrome(), 0x0200_0000);
        assert_eq!(ec(undef_syndrome()), EC_UNKNOWN);
    }

    #[test]
    fn vectors() {
        use VectorKind::*;
        // EL1h, EL1t, EL0t, AArch32 user (0x10) and svc (0x13).
        assert_eq!(vector_offset(0x3c5, Sync), 0x200);
        assert_eq!(vector_offset(0x3c4, Sync), 0x000);
        assert_eq!(vector_offset(0x000, Sync), 0x400);
        assert_eq!(vector_offset(0x010, Sync), 0x600);
        assert_eq!(vector_offset(0x013, Sync), 0x600);
        // Flags and masks do not matter.
        assert_eq!(vector_offset(0xf000_0000 | 0x3c0, Sync), 0x400);
        assert_eq!(vector_offset(0x6000_0005, Sync), 0x200);
        // Per kind.
        assert_eq!(vector_offset(0x5, Irq), 0x280);
        assert_eq!(vector_offset(0x5, Fiq), 0x300);
        assert_eq!(vector_offset(0x5, SError), 0x380);
        assert_eq!(vector_offset(0x0, Irq), 0x480);
        assert_eq!(vector_offset(0x4, SError), 0x180);
        assert_eq!(vector_offset(0x10, SError), 0x780);
        // Impossible for a guest: EL2h, EL2t, EL3h.
        assert_eq!(vector_offset(0x9, Sync), 0x200);
        assert_eq!(vector_offset(0x8, Sync), 0x200);
        assert_eq!(vector_offset(0xd, Sync), 0x200);
        assert!(vector_offset(u64::MAX, SError) <= 0x780);
    }

    #[test]
    fn pstate_on_entry() {
        assert_eq!(injected_pstate(0), 0x3c5);
        assert_eq!(injected_pstate(0x3c5), 0x3c5);
        // NZCV, PAN, SSBS, SS, IL, EL0 state: all dropped; DIT kept.
        assert_eq!(
            injected_pstate(0xf060_1000 | (1 << 22) | (1 << 21) | (1 << 20)),
            0x3c5
        );
        assert_eq!(injected_pstate(1 << 24), 0x0100_03c5);
        assert_eq!(injected_pstate(u64::MAX), 0x0100_03c5);
    }
}
