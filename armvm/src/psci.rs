//! PSCI 1.1 and the SMCCC architecture calls, as a guest makes them with
//! `hvc #0`.
//!
//! Owns the ABI facts (function IDs, return codes, argument widths) and the
//! decoding of a call from x0..x3 into a [`Call`]. It does not act on a
//! call: starting vCPUs, powering the domain off or restarting it is the
//! caller's. The registers are the guest's and anything may be in them:
//! every value decodes, unknown IDs to [`Call::Unknown`].
//!
//! SMC32 calls (IDs 0x84xx_xxxx, 0x80xx_xxxx) take 32-bit arguments: the
//! upper halves of x1..x3 are ignored, as the calling convention says. The
//! function ID is always W0.

/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND, SMC32.
pub const CPU_SUSPEND: u32 = 0x8400_0001;
/// CPU_SUSPEND, SMC64.
pub const CPU_SUSPEND_64: u32 = 0xc400_0001;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON, SMC32.
pub const CPU_ON: u32 = 0x8400_0003;
/// CPU_ON, SMC64.
pub const CPU_ON_64: u32 = 0xc400_0003;
/// AFFINITY_INFO, SMC32.
pub const AFFINITY_INFO: u32 = 0x8400_0004;
/// AFFINITY_INFO, SMC64.
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000a;
/// SYSTEM_RESET2, SMC32 (PSCI 1.1).
pub const SYSTEM_RESET2: u32 = 0x8400_0012;
/// SYSTEM_RESET2, SMC64.
pub const SYSTEM_RESET2_64: u32 = 0xc400_0012;
/// SYSTEM_RESET2's one architectural reset type.
pub const SYSTEM_WARM_RESET: u32 = 0;
/// SMCCC_VERSION.
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES.
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

/// Success.
pub const SUCCESS: i32 = 0;
/// The function is not implemented.
pub const NOT_SUPPORTED: i32 = -1;
/// An argument is invalid.
pub const INVALID_PARAMETERS: i32 = -2;
/// Refused.
pub const DENIED: i32 = -3;
/// CPU_ON: the target is already on.
pub const ALREADY_ON: i32 = -4;
/// CPU_ON: the target is already being turned on.
pub const ON_PENDING: i32 = -5;
/// An internal error.
pub const INTERNAL_FAILURE: i32 = -6;
/// The target does not exist.
pub const NOT_PRESENT: i32 = -7;
/// The target is disabled.
pub const DISABLED: i32 = -8;
/// The entry point address is invalid.
pub const INVALID_ADDRESS: i32 = -9;

/// AFFINITY_INFO results.
pub const AFFINITY_ON: i32 = 0;
/// The target is off.
pub const AFFINITY_OFF: i32 = 1;
/// The target is being turned on.
pub const AFFINITY_ON_PENDING: i32 = 2;

/// The PSCI version implemented: 1.1.
pub const VERSION_1_1: u32 = 0x0001_0001;
/// The SMCCC version implemented: 1.1.
pub const SMCCC_VERSION_1_1: u32 = 0x0001_0001;
/// MIGRATE_INFO_TYPE result: no Trusted OS needs migrating.
pub const MIGRATE_INFO_TYPE_NOT_REQUIRED: u64 = 2;

/// CPU_SUSPEND power_state (original format): StateType, 1 = powerdown.
pub const POWER_STATE_POWERDOWN: u32 = 1 << 16;

/// Bit 30 of a function ID: the SMC64 calling convention.
const SMC64: u32 = 1 << 30;

/// A decoded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// PSCI_VERSION.
    Version,
    /// CPU_SUSPEND (either width).
    CpuSuspend {
        /// The requested state (original format).
        power_state: u32,
        /// Where to resume after a powerdown state.
        entry: u64,
        /// x0 at that entry.
        context_id: u64,
    },
    /// CPU_OFF.
    CpuOff,
    /// CPU_ON (either width).
    CpuOn {
        /// MPIDR of the vCPU to start.
        target_mpidr: u64,
        /// Its entry point.
        entry: u64,
        /// Its x0 at entry.
        context_id: u64,
    },
    /// AFFINITY_INFO (either width).
    AffinityInfo {
        /// MPIDR of the node asked about.
        target_mpidr: u64,
        /// Affinity level (only 0 is meaningful with PSCI 1.x and no
        /// OS-initiated mode).
        lowest_level: u32,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// SYSTEM_RESET2.
    SystemReset2 {
        /// Bit 31 set: vendor-specific; else architectural (0 = warm).
        reset_type: u32,
        /// Passed to the reset, meaning defined by the type.
        cookie: u64,
    },
    /// PSCI_FEATURES.
    Features {
        /// The function asked about.
        function_id: u32,
    },
    /// SMCCC_VERSION.
    SmcccVersion,
    /// SMCCC_ARCH_FEATURES.
    SmcccArchFeatures {
        /// The function asked about.
        function_id: u32,
    },
    /// Anything else (the caller answers NOT_SUPPORTED).
    Unknown(u32),
}

impl Call {
    /// True for a powerdown CPU_SUSPEND (which may still be served as a
    /// standby: returning SUCCESS is allowed for any requested state).
    pub fn is_powerdown_suspend(&self) -> bool {
        matches!(self, Call::CpuSuspend { power_state, .. } if power_state & POWER_STATE_POWERDOWN != 0)
    }
}

/// Decodes a call from the guest's x0..x3.
pub fn decode(x0: u64, x1: u64, x2: u64, x3: u64) -> Call {
    let fid = x0 as u32;
    // SMC32: only the low halves of the arguments count.
    let arg = |x: u64| if fid & SMC64 != 0 { x } else { x & 0xffff_ffff };
    let (a1, a2, a3) = (arg(x1), arg(x2), arg(x3));
    match fid {
        PSCI_VERSION => Call::Version,
        CPU_SUSPEND | CPU_SUSPEND_64 => Call::CpuSuspend {
            power_state: a1 as u32,
            entry: a2,
            context_id: a3,
        },
        CPU_OFF => Call::CpuOff,
        CPU_ON | CPU_ON_64 => Call::CpuOn {
            target_mpidr: a1,
            entry: a2,
            context_id: a3,
        },
        AFFINITY_INFO | AFFINITY_INFO_64 => Call::AffinityInfo {
            target_mpidr: a1,
            lowest_level: a2 as u32,
        },
        MIGRATE_INFO_TYPE => Call::MigrateInfoType,
        SYSTEM_OFF => Call::SystemOff,
        SYSTEM_RESET => Call::SystemReset,
        SYSTEM_RESET2 | SYSTEM_RESET2_64 => Call::SystemReset2 {
            reset_type: a1 as u32,
            cookie: a2,
        },
        PSCI_FEATURES => Call::Features {
            function_id: a1 as u32,
        },
        SMCCC_VERSION => Call::SmcccVersion,
        SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures {
            function_id: a1 as u32,
        },
        other => Call::Unknown(other),
    }
}

/// The PSCI_FEATURES answer for `function_id`: 0 for every call decoded
/// above, [`NOT_SUPPORTED`] for the rest. For CPU_SUSPEND, 0 also means
/// the original power_state format and platform-coordinated mode: it is
/// served as a standby (WFI-like) whatever state is asked for, and returns
/// SUCCESS, which PSCI allows for any state.
pub fn features(function_id: u32) -> i32 {
    match function_id {
        PSCI_VERSION | CPU_SUSPEND | CPU_SUSPEND_64 | CPU_OFF | CPU_ON | CPU_ON_64
        | AFFINITY_INFO | AFFINITY_INFO_64 | MIGRATE_INFO_TYPE | SYSTEM_OFF | SYSTEM_RESET
        | SYSTEM_RESET2 | SYSTEM_RESET2_64 | PSCI_FEATURES | SMCCC_VERSION
        | SMCCC_ARCH_FEATURES => SUCCESS,
        _ => NOT_SUPPORTED,
    }
}

/// The SMCCC_ARCH_FEATURES answer: 0 for the two architecture calls we
/// implement, [`NOT_SUPPORTED`] for the rest (the Spectre workarounds and
/// SOC_ID among them).
pub fn arch_features(function_id: u32) -> i32 {
    match function_id {
        SMCCC_VERSION | SMCCC_ARCH_FEATURES => SUCCESS,
        _ => NOT_SUPPORTED,
    }
}

/// A signed result as written to x0 (sign-extended, so both `(int)w0` and
/// `(long)x0` read it back).
pub fn ret(code: i32) -> u64 {
    i64::from(code) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const HI: u64 = 0xdead_beef_0000_0000;

    #[test]
    fn simple_calls() {
        assert_eq!(decode(0x8400_0000, 1, 2, 3), Call::Version);
        assert_eq!(decode(0x8400_0002, 0, 0, 0), Call::CpuOff);
        assert_eq!(decode(0x8400_0006, 0, 0, 0), Call::MigrateInfoType);
        assert_eq!(decode(0x8400_0008, 0, 0, 0), Call::SystemOff);
        assert_eq!(decode(0x8400_0009, 0, 0, 0), Call::SystemReset);
        assert_eq!(
            decode(0x8400_0012, 1 << 32, 7, 0),
            Call::SystemReset2 {
                reset_type: SYSTEM_WARM_RESET,
                cookie: 7
            }
        );
        assert_eq!(
            decode(0xc400_0012, 0x8000_0001, 1 << 40, 0),
            Call::SystemReset2 {
                reset_type: 0x8000_0001,
                cookie: 1 << 40
            }
        );
        assert_eq!(decode(0x8000_0000, 0, 0, 0), Call::SmcccVersion);
    }

    #[test]
    fn cpu_on_64_keeps_full_arguments() {
        assert_eq!(
            decode(0xc400_0003, 0x1_0000_0101, 0x4008_0000 | HI, u64::MAX),
            Call::CpuOn {
                target_mpidr: 0x1_0000_0101,
                entry: 0x4008_0000 | HI,
                context_id: u64::MAX
            }
        );
    }

    #[test]
    fn cpu_on_32_truncates_arguments() {
        assert_eq!(
            decode(0x8400_0003, HI | 0x101, HI | 0x4008_0000, HI | 0x1234),
            Call::CpuOn {
                target_mpidr: 0x101,
                entry: 0x4008_0000,
                context_id: 0x1234
            }
        );
    }

    #[test]
    fn affinity_info() {
        assert_eq!(
            decode(0x8400_0004, HI | 3, HI, 99),
            Call::AffinityInfo {
                target_mpidr: 3,
                lowest_level: 0
            }
        );
        assert_eq!(
            decode(0xc400_0004, HI | 3, HI | 1, 99),
            Call::AffinityInfo {
                target_mpidr: HI | 3,
                lowest_level: 1
            }
        );
    }

    #[test]
    fn cpu_suspend() {
        let c = decode(
            0x8400_0001,
            HI | u64::from(POWER_STATE_POWERDOWN),
            HI | 0x4000_1000,
            HI | 7,
        );
        assert_eq!(
            c,
            Call::CpuSuspend {
                power_state: POWER_STATE_POWERDOWN,
                entry: 0x4000_1000,
                context_id: 7
            }
        );
        assert!(c.is_powerdown_suspend());
        let c = decode(0xc400_0001, HI, HI | 0x4000_1000, HI | 7);
        assert_eq!(
            c,
            Call::CpuSuspend {
                power_state: 0,
                entry: HI | 0x4000_1000,
                context_id: HI | 7
            }
        );
        assert!(!c.is_powerdown_suspend());
        assert!(!Call::CpuOff.is_powerdown_suspend());
    }

    #[test]
    fn feature_queries() {
        assert_eq!(
            decode(0x8400_000a, HI | u64::from(CPU_ON_64), 0, 0),
            Call::Features {
                function_id: CPU_ON_64
            }
        );
        assert_eq!(
            decode(0x8000_0001, HI | 0x8000_8000, 0, 0),
            Call::SmcccArchFeatures {
                function_id: 0x8000_8000
            }
        );
    }

    #[test]
    fn function_id_is_w0() {
        assert_eq!(decode(HI | 0x8400_0000, 0, 0, 0), Call::Version);
        assert_eq!(decode(HI | 0x8400_0008, 0, 0, 0), Call::SystemOff);
    }

    #[test]
    fn unknown_calls() {
        for fid in [
            0u32,
            0x8400_0005, // MIGRATE
            0x8400_0007, // MIGRATE_INFO_UP_CPU
            0xc400_0002, // CPU_OFF has no SMC64 form
            0xc400_0000,
            0xc400_000a,
            0x8000_8000, // SMCCC_ARCH_WORKAROUND_1
            0x8600_ff01, // Xen-style vendor call
            u32::MAX,
        ] {
            assert_eq!(decode(u64::from(fid), 1, 2, 3), Call::Unknown(fid));
            assert_eq!(features(fid), NOT_SUPPORTED, "{fid:#x}");
        }
    }

    #[test]
    fn features_of_implemented_calls() {
        for fid in [
            PSCI_VERSION,
            CPU_SUSPEND,
            CPU_SUSPEND_64,
            CPU_OFF,
            CPU_ON,
            CPU_ON_64,
            AFFINITY_INFO,
            AFFINITY_INFO_64,
            MIGRATE_INFO_TYPE,
            SYSTEM_OFF,
            SYSTEM_RESET,
            SYSTEM_RESET2,
            SYSTEM_RESET2_64,
            PSCI_FEATURES,
            SMCCC_VERSION,
            SMCCC_ARCH_FEATURES,
        ] {
            assert_eq!(features(fid), SUCCESS, "{fid:#x}");
            // Everything it says is implemented decodes to a known call.
            assert!(!matches!(decode(u64::from(fid), 0, 0, 0), Call::Unknown(_)));
        }
    }

    #[test]
    fn arch_feature_queries() {
        assert_eq!(arch_features(SMCCC_VERSION), SUCCESS);
        assert_eq!(arch_features(SMCCC_ARCH_FEATURES), SUCCESS);
        for fid in [
            0x8000_8000,
            0x8000_7fff,
            0x8000_3fff,
            0x8000_0002,
            PSCI_VERSION,
        ] {
            assert_eq!(arch_features(fid), NOT_SUPPORTED);
        }
    }

    #[test]
    fn abi_numbers() {
        assert_eq!(
            [
                SUCCESS,
                NOT_SUPPORTED,
                INVALID_PARAMETERS,
                DENIED,
                ALREADY_ON,
                ON_PENDING,
                INTERNAL_FAILURE,
                NOT_PRESENT,
                DISABLED,
                INVALID_ADDRESS
            ],
            [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
        );
        assert_eq!(VERSION_1_1 >> 16, 1);
        assert_eq!(VERSION_1_1 & 0xffff, 1);
        assert_eq!(MIGRATE_INFO_TYPE_NOT_REQUIRED, 2);
    }

    #[test]
    fn return_values() {
        assert_eq!(ret(SUCCESS), 0);
        assert_eq!(ret(NOT_SUPPORTED), u64::MAX);
        assert_eq!(ret(INVALID_ADDRESS), (-9i64) as u64);
        assert_eq!(ret(INVALID_PARAMETERS) as u32 as i32, -2);
        assert_eq!(ret(VERSION_1_1 as i32), 0x1_0001);
    }

    #[test]
    fn any_registers_decode() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50_000 {
            let (a, b, c, d) = (next(), next(), next(), next());
            let call = decode(a, b, c, d);
            if let Call::CpuOn {
                target_mpidr,
                entry,
                context_id,
            } = call
                && (a as u32) & SMC64 == 0
            {
                assert!(target_mpidr | entry | context_id <= u64::from(u32::MAX));
            }
        }
    }
}
