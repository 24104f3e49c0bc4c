//! Viridian: the Hyper-V enlightenments (Microsoft's Hypervisor Top-Level
//! Functional Specification) a Windows guest uses when it finds them,
//! per domain, behind the HVM_PARAM_VIRIDIAN feature mask.
//!
//! It owns the configuration list parser (xl's `viridian=[...]` groups),
//! the Hyper-V CPUID leaves 0x40000000..=0x40000006, the synthetic MSRs
//! of the enabled groups, the hypercall page stub and the Hyper-V
//! hypercalls. The mask's rules (base present in any non-zero mask, set
//! once, never by the guest) are defined once, in `common::xen`
//! ([`common::xen::check_viridian_mask`],
//! [`common::xen::viridian_mask_change`]); this module calls them.
//!
//! It never writes guest memory (it asks the arch to, with
//! [`Msr::FillHypercallPage`]), never reaches another vCPU (an IPI its
//! vLAPIC cannot take is handed back as [`Msr::Ipi`]), never answers an
//! MSR or leaf while the mask is 0 (Xen's own leaves and hypercall MSR
//! live there then, see `xencpuid`), and never panics on a guest value.
//!
//! Groups and what they switch on:
//! - base (HVMPV_BASE_FREQ): GUEST_OS_ID, HYPERCALL, VP_INDEX, the APIC
//!   access MSRs EOI/ICR/TPR, and the frequency MSRs unless NO_FREQ;
//! - freq (base without HVMPV_NO_FREQ): TSC_FREQUENCY, APIC_FREQUENCY;
//! - time_ref_count (HVMPV_TIME_REF_COUNT): TIME_REF_COUNT, a partition
//!   clock in 100 ns units from domain creation that never goes back.
//!
//! The mask can go from 0 to a value after this state is made (a control
//! domain's HVMOP_set_param): the arch passes the domain's current mask
//! to [`Viridian::set_mask`], which applies the same rule as the core.

use core::fmt;

use common::xen::Action;
use common::xen::abi::{HVMPV_BASE_FREQ, HVMPV_NO_FREQ, HVMPV_TIME_REF_COUNT};

use crate::vlapic::{IcrResult, NotDelivered, VLapic};

// ---------------------------------------------------------------------
// The configuration list.

/// A group of enlightenments the configuration names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Hypercall, VP index and APIC access MSRs; required by every other.
    Base,
    /// TSC and APIC frequency MSRs.
    Freq,
    /// The partition time reference counter.
    TimeRefCount,
}

impl Group {
    /// Every group, in the order errors report them.
    pub const ALL: [Group; 3] = [Group::Base, Group::Freq, Group::TimeRefCount];

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Group::Base => "base",
            Group::Freq => "freq",
            Group::TimeRefCount => "time_ref_count",
        }
    }

    fn from_name(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }

    const fn bit(self) -> u8 {
        match self {
            Group::Base => 1 << 0,
            Group::Freq => 1 << 1,
            Group::TimeRefCount => 1 << 2,
        }
    }
}

/// The groups "defaults" stands for: what `viridian=1` always meant.
const DEFAULT_GROUPS: u8 = Group::Base.bit() | Group::Freq.bit();
/// The groups "all" stands for.
const ALL_GROUPS: u8 = DEFAULT_GROUPS | Group::TimeRefCount.bit();

/// A configuration list that is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupError<'a> {
    /// A name that is no group nor special value.
    Unknown(&'a str),
    /// "!all" or "!defaults": special values cannot be disabled.
    NegatedSpecial(&'a str),
    /// The same group named enabled and disabled ("freq", "!freq").
    BothEnabledAndDisabled(Group),
    /// Some group is enabled but base is not.
    BaseMissing,
    /// An empty item ("" or a bare "!").
    EmptyName,
    /// "1"/"true"/"0"/"false" inside a longer list: the boolean form
    /// is the whole list or nothing.
    BooleanInList(&'a str),
    /// A comma-separated list longer than [`MAX_LIST_ITEMS`].
    TooManyItems,
}

impl fmt::Display for GroupError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Items are quoted with escapes: an error stays one log line
            // whatever the list held.
            GroupError::Unknown(n) => write!(f, "unknown viridian group {n:?}"),
            GroupError::NegatedSpecial(n) => {
                write!(f, "{n:?}: a special value cannot be disabled")
            }
            GroupError::BothEnabledAndDisabled(g) => {
                write!(f, "viridian group '{}' both enabled and disabled", g.name())
            }
            GroupError::BaseMissing => {
                write!(f, "viridian groups enabled without the 'base' group")
            }
            GroupError::EmptyName => write!(f, "empty viridian group name"),
            GroupError::BooleanInList(n) => {
                write!(f, "boolean {n:?} must be the whole viridian list")
            }
            GroupError::TooManyItems => {
                write!(f, "more than {MAX_LIST_ITEMS} items in the viridian list")
            }
        }
    }
}

fn boolean(item: &str) -> Option<bool> {
    match item {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The feature mask a configuration list asks for.
///
/// Items: a group name enables it, "!name" disables it; "all" enables
/// every group and "defaults" base + freq. Special values are not
/// explicit namings, so "all", "!freq" is every group but freq; naming a
/// group both ways explicitly is [`GroupError::BothEnabledAndDisabled`]
/// whatever the order. Disabling wins over a special value. An empty
/// list is 0 (no enlightenments); so is a list that disables everything
/// it enables. Any enabled group without base is
/// [`GroupError::BaseMissing`]. The whole list "1"/"true" is "defaults",
/// "0"/"false" is empty (xl's boolean compatibility form).
///
/// Mask: base → HVMPV_BASE_FREQ, base without freq → also HVMPV_NO_FREQ,
/// time_ref_count → HVMPV_TIME_REF_COUNT.
pub fn parse_groups<'a>(items: &[&'a str]) -> Result<u64, GroupError<'a>> {
    if let [only] = items
        && let Some(on) = boolean(only)
    {
        return Ok(if on { mask_of(DEFAULT_GROUPS) } else { 0 });
    }
    let (mut enabled, mut disabled, mut special) = (0u8, 0u8, 0u8);
    for &item in items {
        if boolean(item).is_some() {
            return Err(GroupError::BooleanInList(item));
        }
        let (negated, name) = match item.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        if name.is_empty() {
            return Err(GroupError::EmptyName);
        }
        let special_groups = match name {
            "all" => Some(ALL_GROUPS),
            "defaults" => Some(DEFAULT_GROUPS),
            _ => None,
        };
        match (special_groups, negated) {
            (Some(_), true) => return Err(GroupError::NegatedSpecial(item)),
            (Some(groups), false) => special |= groups,
            (None, _) => {
                let g = Group::from_name(name).ok_or(GroupError::Unknown(item))?;
                if negated {
                    disabled |= g.bit();
                } else {
                    enabled |= g.bit();
                }
            }
        }
    }
    if let Some(g) = Group::ALL
        .into_iter()
        .find(|g| enabled & disabled & g.bit() != 0)
    {
        return Err(GroupError::BothEnabledAndDisabled(g));
    }
    let groups = (special | enabled) & !disabled;
    if groups != 0 && groups & Group::Base.bit() == 0 {
        return Err(GroupError::BaseMissing);
    }
    Ok(mask_of(groups))
}

/// Items [`parse_list`] takes: twice every name and special value, room
/// for any sensible list without an allocator.
pub const MAX_LIST_ITEMS: usize = 16;

/// [`parse_groups`] of a comma-separated list; spaces around items are
/// ignored, a blank string is the empty list.
pub fn parse_list(s: &str) -> Result<u64, GroupError<'_>> {
    if s.trim().is_empty() {
        return Ok(0);
    }
    let mut items = [""; MAX_LIST_ITEMS];
    let mut n = 0;
    for item in s.split(',') {
        // Refuse rather than truncate: a dropped "!freq" changes the mask.
        let slot = items.get_mut(n).ok_or(GroupError::TooManyItems)?;
        *slot = item.trim();
        n += 1;
    }
    parse_groups(items.get(..n).unwrap_or(&[]))
}

fn mask_of(groups: u8) -> u64 {
    let mut mask = 0;
    if groups & Group::Base.bit() != 0 {
        mask |= HVMPV_BASE_FREQ;
        if groups & Group::Freq.bit() == 0 {
            mask |= HVMPV_NO_FREQ;
        }
    }
    if groups & Group::TimeRefCount.bit() != 0 {
        mask |= HVMPV_TIME_REF_COUNT;
    }
    mask
}

/// Whether `mask` is a valid HVM_PARAM_VIRIDIAN value (EINVAL if not):
/// the core's rule, [`common::xen::check_viridian_mask`].
pub fn check_mask(mask: u64) -> Result<(), i32> {
    common::xen::check_viridian_mask(mask)
}

/// Viridian is on: a valid, non-zero mask (which then holds base).
fn is_on(mask: u64) -> bool {
    mask != 0 && check_mask(mask).is_ok()
}

fn freq_on(mask: u64) -> bool {
    is_on(mask) && mask & HVMPV_NO_FREQ == 0
}

fn time_ref_on(mask: u64) -> bool {
    is_on(mask) && mask & HVMPV_TIME_REF_COUNT != 0
}

// ---------------------------------------------------------------------
// CPUID.

/// First Hyper-V leaf.
pub const HV_CPUID_FIRST: u32 = 0x4000_0000;
/// Last Hyper-V leaf we answer (hardware features).
pub const HV_CPUID_LAST: u32 = 0x4000_0006;
/// "Microsoft Hv" as ebx, ecx, edx.
pub const HV_VENDOR: [u32; 3] = [0x7263_694d, 0x666f_736f, 0x7648_2074];
/// "Hv#1": the Microsoft hypervisor interface.
pub const HV_INTERFACE_HV1: u32 = 0x3123_7648;
/// The Hyper-V version reported (leaf 0x40000002): 6.0, the first
/// Hyper-V (Windows Server 2008), whose interface is the subset here;
/// build 0, as we are no Microsoft build.
pub const HV_VERSION_MAJOR: u32 = 6;
pub const HV_VERSION_MINOR: u32 = 0;

// Leaf 0x40000003 EAX: partition privileges (the MSRs the guest may use).
pub const HV_ACCESS_PARTITION_REFERENCE_COUNTER: u32 = 1 << 1;
pub const HV_ACCESS_APIC_MSRS: u32 = 1 << 4;
pub const HV_ACCESS_HYPERCALL_MSRS: u32 = 1 << 5;
pub const HV_ACCESS_VP_INDEX: u32 = 1 << 6;
pub const HV_ACCESS_FREQUENCY_MSRS: u32 = 1 << 11;
// Leaf 0x40000003 EDX: features.
pub const HV_FEATURE_FREQUENCY_REGS_AVAILABLE: u32 = 1 << 8;
pub const HV_FEATURE_HYPERCALL_MSR_LOCK_AVAILABLE: u32 = 1 << 18;
// Leaf 0x40000004 EAX: recommendations.
pub const HV_HINT_USE_APIC_MSRS: u32 = 1 << 3;
pub const HV_HINT_USE_RELAXED_TIMING: u32 = 1 << 5;
/// Leaf 0x40000004 EBX: spins on a contended lock before the guest calls
/// HvNotifyLongSpinWait. A vCPU can be descheduled while it holds a
/// lock; yielding after a bounded spin lets the holder run. 0xffffffff
/// would mean "never notify".
pub const HV_LONG_SPIN_WAIT_COUNT: u32 = 2047;

/// The Hyper-V leaves as [eax, ebx, ecx, edx] for a domain with feature
/// mask `mask` and `nr_vcpus` vCPUs; None when viridian is off (mask 0 or
/// invalid) or `leaf` is outside 0x40000000..=0x40000006. No leaf has
/// sub-leaves.
pub fn cpuid(mask: u64, leaf: u32, _subleaf: u32, nr_vcpus: u32) -> Option<[u32; 4]> {
    if !is_on(mask) || !(HV_CPUID_FIRST..=HV_CPUID_LAST).contains(&leaf) {
        return None;
    }
    Some(match leaf - HV_CPUID_FIRST {
        0 => [HV_CPUID_LAST, HV_VENDOR[0], HV_VENDOR[1], HV_VENDOR[2]],
        1 => [HV_INTERFACE_HV1, 0, 0, 0],
        2 => [0, (HV_VERSION_MAJOR << 16) | HV_VERSION_MINOR, 0, 0],
        3 => {
            let mut eax = HV_ACCESS_APIC_MSRS | HV_ACCESS_HYPERCALL_MSRS | HV_ACCESS_VP_INDEX;
            let mut edx = HV_FEATURE_HYPERCALL_MSR_LOCK_AVAILABLE;
            if freq_on(mask) {
                eax |= HV_ACCESS_FREQUENCY_MSRS;
                edx |= HV_FEATURE_FREQUENCY_REGS_AVAILABLE;
            }
            if time_ref_on(mask) {
                eax |= HV_ACCESS_PARTITION_REFERENCE_COUNTER;
            }
            [eax, 0, 0, edx]
        }
        4 => [
            HV_HINT_USE_APIC_MSRS | HV_HINT_USE_RELAXED_TIMING,
            HV_LONG_SPIN_WAIT_COUNT,
            0,
            0,
        ],
        5 => [nr_vcpus, 0, 0, 0],
        _ => [0; 4],
    })
}

// ---------------------------------------------------------------------
// MSRs.

pub const HV_X64_MSR_GUEST_OS_ID: u32 = 0x4000_0000;
pub const HV_X64_MSR_HYPERCALL: u32 = 0x4000_0001;
pub const HV_X64_MSR_VP_INDEX: u32 = 0x4000_0002;
pub const HV_X64_MSR_TIME_REF_COUNT: u32 = 0x4000_0020;
pub const HV_X64_MSR_TSC_FREQUENCY: u32 = 0x4000_0022;
pub const HV_X64_MSR_APIC_FREQUENCY: u32 = 0x4000_0023;
pub const HV_X64_MSR_EOI: u32 = 0x4000_0070;
pub const HV_X64_MSR_ICR: u32 = 0x4000_0071;
pub const HV_X64_MSR_TPR: u32 = 0x4000_0072;
/// The synthetic MSR block: with viridian on, every index here is ours
/// (one we do not implement is #GP, not passed on).
pub const HV_MSR_RANGE: core::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_00ff;

// HYPERCALL MSR fields.
pub const HV_HYPERCALL_ENABLE: u64 = 1 << 0;
pub const HV_HYPERCALL_LOCKED: u64 = 1 << 1;
const HV_HYPERCALL_RESERVED: u64 = 0xffc;
const PAGE_MASK: u64 = 0xfff;

/// What the arch does with a RDMSR/WRMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msr {
    /// Not a viridian MSR, or viridian is off: the caller treats it as any
    /// other MSR (Xen's hypercall MSR may be this very index then).
    NotMine,
    /// RDMSR result.
    Value(u64),
    /// WRMSR done (or, where the TLFS says so, ignored).
    Done,
    /// Inject #GP(0).
    Gp,
    /// WRMSR done; the arch writes [`hypercall_page`] at `gpa` (after
    /// checking it is the guest's RAM).
    FillHypercallPage { gpa: u64 },
    /// WRMSR of the ICR done, but the IPI is not for this vCPU's vLAPIC
    /// alone: the arch routes it or drops it.
    Ipi { icr: u64, reason: NotDelivered },
}

/// What viridian needs from the arch.
pub trait Platform {
    /// The guest's TSC frequency.
    fn tsc_hz(&self) -> u64;
    /// The guest's local APIC timer frequency.
    fn apic_hz(&self) -> u64;
    /// A host clock in 100 ns units (it may step back; viridian hides
    /// that from the guest).
    fn now_100ns(&self) -> u64;
    /// `vcpu`'s vLAPIC; None for no such vCPU.
    fn lapic(&mut self, vcpu: u32) -> Option<&mut VLapic>;
}

/// One domain's viridian state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viridian {
    mask: u64,
    nr_vcpus: u32,
    /// HV_X64_MSR_GUEST_OS_ID (partition-wide).
    guest_os_id: u64,
    /// HV_X64_MSR_HYPERCALL (partition-wide).
    hypercall_msr: u64,
    /// The platform clock at creation: the reference counter's zero.
    time_ref_start: u64,
    /// The highest reference count returned; later reads never go below.
    time_ref_last: u64,
}

impl Viridian {
    /// State for a domain with `nr_vcpus` vCPUs created at `now_100ns`
    /// (the platform clock); EINVAL for an invalid mask.
    pub fn new(mask: u64, nr_vcpus: u32, now_100ns: u64) -> Result<Self, i32> {
        check_mask(mask)?;
        Ok(Viridian {
            mask,
            nr_vcpus,
            guest_os_id: 0,
            hypercall_msr: 0,
            time_ref_start: now_100ns,
            time_ref_last: 0,
        })
    }

    /// The feature mask.
    pub fn mask(&self) -> u64 {
        self.mask
    }

    /// Whether any enlightenment is on.
    pub fn is_on(&self) -> bool {
        is_on(self.mask)
    }

    /// Takes the domain's mask as it is now: the core's rule (the same
    /// value is accepted, a change once non-zero is EEXIST, an invalid
    /// mask EINVAL).
    pub fn set_mask(&mut self, mask: u64) -> Result<(), i32> {
        common::xen::viridian_mask_change(self.mask, mask)?;
        self.mask = mask;
        Ok(())
    }

    /// [`cpuid`] for this domain.
    pub fn cpuid(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        cpuid(self.mask, leaf, subleaf, self.nr_vcpus)
    }

    /// Whether the Hyper-V hypercall interface is established: viridian
    /// on, a guest OS id reported and the hypercall page enabled. Until
    /// then the arch answers a viridian VMCALL with #UD (TLFS).
    pub fn hypercall_enabled(&self) -> bool {
        self.is_on() && self.guest_os_id != 0 && self.hypercall_msr & HV_HYPERCALL_ENABLE != 0
    }

    fn time_ref_count(&mut self, p: &dyn Platform) -> u64 {
        let now = p.now_100ns().saturating_sub(self.time_ref_start);
        self.time_ref_last = self.time_ref_last.max(now);
        self.time_ref_last
    }

    /// RDMSR `idx` on `vcpu`.
    pub fn rdmsr(&mut self, vcpu: u32, idx: u32, p: &mut dyn Platform) -> Msr {
        if !self.is_on() || !HV_MSR_RANGE.contains(&idx) {
            return Msr::NotMine;
        }
        match idx {
            HV_X64_MSR_GUEST_OS_ID => Msr::Value(self.guest_os_id),
            HV_X64_MSR_HYPERCALL => Msr::Value(self.hypercall_msr),
            HV_X64_MSR_VP_INDEX if vcpu < self.nr_vcpus => Msr::Value(u64::from(vcpu)),
            HV_X64_MSR_TIME_REF_COUNT if time_ref_on(self.mask) => {
                Msr::Value(self.time_ref_count(p))
            }
            HV_X64_MSR_TSC_FREQUENCY if freq_on(self.mask) => Msr::Value(p.tsc_hz()),
            HV_X64_MSR_APIC_FREQUENCY if freq_on(self.mask) => Msr::Value(p.apic_hz()),
            HV_X64_MSR_ICR => p.lapic(vcpu).map_or(Msr::Gp, |l| Msr::Value(l.read_icr())),
            HV_X64_MSR_TPR => p
                .lapic(vcpu)
                .map_or(Msr::Gp, |l| Msr::Value(u64::from(l.tpr()))),
            // EOI is write-only; the rest: off groups, bad vCPU, unknown.
            _ => Msr::Gp,
        }
    }

    /// WRMSR `value` to `idx` on `vcpu`.
    pub fn wrmsr(&mut self, vcpu: u32, idx: u32, value: u64, p: &mut dyn Platform) -> Msr {
        if !self.is_on() || !HV_MSR_RANGE.contains(&idx) {
            return Msr::NotMine;
        }
        match idx {
            HV_X64_MSR_GUEST_OS_ID => {
                self.guest_os_id = value;
                // No guest OS: no hypercall interface (TLFS), lock or not.
                if value == 0 {
                    self.hypercall_msr &= !HV_HYPERCALL_ENABLE;
                }
                Msr::Done
            }
            HV_X64_MSR_HYPERCALL => self.write_hypercall_msr(value),
            HV_X64_MSR_EOI => p.lapic(vcpu).map_or(Msr::Gp, |l| {
                l.eoi();
                Msr::Done
            }),
            HV_X64_MSR_ICR => p.lapic(vcpu).map_or(Msr::Gp, |l| match l.write_icr(value) {
                IcrResult::Delivered(_) => Msr::Done,
                IcrResult::NotDelivered(reason) => Msr::Ipi { icr: value, reason },
            }),
            HV_X64_MSR_TPR => match (u8::try_from(value), p.lapic(vcpu)) {
                (Ok(tpr), Some(l)) => {
                    l.set_tpr(tpr);
                    Msr::Done
                }
                _ => Msr::Gp,
            },
            // VP_INDEX, TIME_REF_COUNT and the frequencies are read-only;
            // anything else in the block is not implemented.
            _ => Msr::Gp,
        }
    }

    fn write_hypercall_msr(&mut self, value: u64) -> Msr {
        // Locked: writes are ignored until the domain is reset. Before the
        // guest names itself the interface cannot be set up: ignored too.
        if self.hypercall_msr & HV_HYPERCALL_LOCKED != 0 || self.guest_os_id == 0 {
            return Msr::Done;
        }
        if value & HV_HYPERCALL_RESERVED != 0 {
            return Msr::Gp;
        }
        self.hypercall_msr = value;
        if value & HV_HYPERCALL_ENABLE != 0 {
            Msr::FillHypercallPage {
                gpa: value & !PAGE_MASK,
            }
        } else {
            Msr::Done
        }
    }

    /// A Hyper-V hypercall: `input` is the input value (RCX). Returns the
    /// result value for RAX (status in bits 15:0, reps completed in bits
    /// 43:32: always 0, we have no rep calls) and what the arch does next.
    ///
    /// Order of checks: interface established, then the call code
    /// (unknown: HV_STATUS_INVALID_HYPERCALL_CODE), then the input value's
    /// fields (HV_STATUS_INVALID_HYPERCALL_INPUT). HvNotifyLongSpinWait
    /// is a simple call: no rep count, no rep start, no variable header;
    /// fast or not, its one input (the spin count) is a hint we ignore.
    pub fn hypercall(&mut self, input: u64) -> (u64, Action) {
        if !self.hypercall_enabled() {
            return (u64::from(HV_STATUS_INVALID_HYPERCALL_CODE), Action::None);
        }
        let call = HypercallInput(input);
        if call.code() != HVCALL_NOTIFY_LONG_SPIN_WAIT {
            return (u64::from(HV_STATUS_INVALID_HYPERCALL_CODE), Action::None);
        }
        if call.reserved() != 0
            || call.rep_count() != 0
            || call.rep_start() != 0
            || call.variable_header_size() != 0
        {
            return (u64::from(HV_STATUS_INVALID_HYPERCALL_INPUT), Action::None);
        }
        (u64::from(HV_STATUS_SUCCESS), Action::Yield)
    }
}

// ---------------------------------------------------------------------
// Hypercalls.

pub const HV_STATUS_SUCCESS: u16 = 0x0000;
pub const HV_STATUS_INVALID_HYPERCALL_CODE: u16 = 0x0002;
pub const HV_STATUS_INVALID_HYPERCALL_INPUT: u16 = 0x0003;
/// HvCallNotifyLongSpinWait.
pub const HVCALL_NOTIFY_LONG_SPIN_WAIT: u16 = 0x0008;

/// EAX bit 31 marks a VMCALL from the viridian hypercall page; Xen's
/// page puts hypercall numbers below 128 there.
pub const VIRIDIAN_CALL_FLAG: u32 = 0x8000_0000;

/// Whether a VMCALL with `eax` comes from the viridian hypercall page.
pub fn is_viridian_call(eax: u32) -> bool {
    eax & VIRIDIAN_CALL_FLAG != 0
}

/// The hypercall input value's fields (TLFS "Hypercall Inputs").
#[derive(Clone, Copy)]
struct HypercallInput(u64);

impl HypercallInput {
    fn code(self) -> u16 {
        self.0 as u16
    }
    fn variable_header_size(self) -> u64 {
        (self.0 >> 17) & 0x1ff
    }
    fn rep_count(self) -> u64 {
        (self.0 >> 32) & 0xfff
    }
    fn rep_start(self) -> u64 {
        (self.0 >> 48) & 0xfff
    }
    /// Bits 30:26, 31 (nested: we are not a nested hypervisor's parent),
    /// 47:44 and 63:60.
    fn reserved(self) -> u64 {
        self.0 & (0x7c00_0000 | 1 << 31 | 0xf << 44 | 0xf << 60)
    }
}

/// Bytes of the viridian hypercall page.
pub const HYPERCALL_PAGE_SIZE: usize = 4096;

/// The Hyper-V hypercall page: `mov $0x80000000, %eax; vmcall; ret`, the
/// rest int3 (a jump past the stub traps).
pub fn hypercall_page() -> [u8; HYPERCALL_PAGE_SIZE] {
    let mut page = [0xcc_u8; HYPERCALL_PAGE_SIZE];
    let flag = VIRIDIAN_CALL_FLAG.to_le_bytes();
    let stub = [
        0xb8, flag[0], flag[1], flag[2], flag[3], // mov $0x80000000, %eax
        0x0f, 0x01, 0xc1, // vmcall
        0xc3, // ret
    ];
    if let Some(dst) = page.get_mut(..stub.len()) {
        dst.copy_from_slice(&stub);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::xen::abi::{EEXIST, EINVAL, HVMPV_FEATURE_MASK};
    use core::cell::Cell;

    const BASE: u64 = HVMPV_BASE_FREQ;
    const NO_FREQ: u64 = HVMPV_NO_FREQ;
    const TIME: u64 = HVMPV_TIME_REF_COUNT;

    struct FakePlatform {
        clock: Cell<u64>,
        lapics: Vec<VLapic>,
    }

    impl FakePlatform {
        fn new(vcpus: u8) -> Self {
            FakePlatform {
                clock: Cell::new(1_000),
                lapics: (0..vcpus).map(VLapic::new).collect(),
            }
        }
    }

    impl Platform for FakePlatform {
        fn tsc_hz(&self) -> u64 {
            2_500_000_000
        }
        fn apic_hz(&self) -> u64 {
            100_000_000
        }
        fn now_100ns(&self) -> u64 {
            self.clock.get()
        }
        fn lapic(&mut self, vcpu: u32) -> Option<&mut VLapic> {
            self.lapics.get_mut(vcpu as usize)
        }
    }

    fn on(mask: u64) -> (Viridian, FakePlatform) {
        (Viridian::new(mask, 2, 1_000).unwrap(), FakePlatform::new(2))
    }

    // ---- seed 004: the mask rules, as this module applies them ----

    #[test]
    fn mask_validity_is_the_cores_rule() {
        assert_eq!(check_mask(0), Ok(()));
        assert_eq!(check_mask(BASE), Ok(()));
        assert_eq!(check_mask(BASE | NO_FREQ), Ok(()));
        assert_eq!(check_mask(HVMPV_FEATURE_MASK), Ok(()));
        assert_eq!(check_mask(NO_FREQ), Err(EINVAL), "no_freq alone");
        assert_eq!(check_mask(TIME), Err(EINVAL), "base missing");
        assert_eq!(check_mask(BASE | 1 << 3), Err(EINVAL), "unknown bit");
        assert_eq!(Viridian::new(NO_FREQ, 1, 0), Err(EINVAL));
        assert_eq!(Viridian::new(BASE | 1 << 40, 1, 0), Err(EINVAL));
    }

    #[test]
    fn mask_is_set_once() {
        let mut v = Viridian::new(0, 1, 0).unwrap();
        assert!(!v.is_on());
        assert_eq!(v.set_mask(0), Ok(()), "zero on zero");
        assert_eq!(v.set_mask(NO_FREQ), Err(EINVAL));
        assert_eq!(v.set_mask(BASE | 1 << 5), Err(EINVAL));
        assert_eq!(v.mask(), 0);
        assert_eq!(v.set_mask(BASE | NO_FREQ), Ok(()));
        assert!(v.is_on());
        assert_eq!(v.set_mask(BASE | NO_FREQ), Ok(()), "same value");
        assert_eq!(v.set_mask(BASE), Err(EEXIST));
        assert_eq!(v.set_mask(0), Err(EEXIST), "cannot switch off");
        assert_eq!(v.mask(), BASE | NO_FREQ);
    }

    // ---- the configuration list ----

    #[test]
    fn group_lists_give_masks() {
        assert_eq!(parse_groups(&[]), Ok(0), "empty list: nothing");
        assert_eq!(parse_groups(&["base"]), Ok(BASE | NO_FREQ));
        assert_eq!(parse_groups(&["base", "freq"]), Ok(BASE));
        assert_eq!(parse_groups(&["freq", "base"]), Ok(BASE));
        assert_eq!(
            parse_groups(&["base", "time_ref_count"]),
            Ok(BASE | NO_FREQ | TIME)
        );
        assert_eq!(parse_groups(&["defaults"]), Ok(BASE));
        assert_eq!(parse_groups(&["all"]), Ok(BASE | TIME));
        assert_eq!(parse_groups(&["all", "!freq"]), Ok(BASE | NO_FREQ | TIME));
        assert_eq!(
            parse_groups(&["!freq", "all"]),
            Ok(BASE | NO_FREQ | TIME),
            "order-free"
        );
        assert_eq!(parse_groups(&["defaults", "!freq"]), Ok(BASE | NO_FREQ));
        assert_eq!(
            parse_groups(&["defaults", "time_ref_count"]),
            Ok(BASE | TIME)
        );
        assert_eq!(parse_groups(&["all", "!time_ref_count"]), Ok(BASE));
        assert_eq!(
            parse_groups(&["base", "base"]),
            Ok(BASE | NO_FREQ),
            "repeat"
        );
        assert_eq!(parse_groups(&["!base"]), Ok(0), "everything disabled");
        assert_eq!(parse_groups(&["all", "defaults"]), Ok(BASE | TIME));
    }

    #[test]
    fn group_lists_refused() {
        use GroupError::*;
        assert_eq!(
            parse_groups(&["freq", "!freq"]),
            Err(BothEnabledAndDisabled(Group::Freq))
        );
        assert_eq!(
            parse_groups(&["!freq", "base", "freq"]),
            Err(BothEnabledAndDisabled(Group::Freq)),
            "whatever the order"
        );
        assert_eq!(
            parse_groups(&["base", "!base"]),
            Err(BothEnabledAndDisabled(Group::Base))
        );
        assert_eq!(parse_groups(&["freq"]), Err(BaseMissing));
        assert_eq!(parse_groups(&["time_ref_count"]), Err(BaseMissing));
        assert_eq!(parse_groups(&["all", "!base"]), Err(BaseMissing));
        assert_eq!(parse_groups(&["defaults", "!base"]), Err(BaseMissing));
        assert_eq!(parse_groups(&["base", "fast"]), Err(Unknown("fast")));
        assert_eq!(parse_groups(&["!fast"]), Err(Unknown("!fast")));
        assert_eq!(
            parse_groups(&["Base"]),
            Err(Unknown("Base")),
            "names are exact"
        );
        assert_eq!(parse_groups(&["!all"]), Err(NegatedSpecial("!all")));
        assert_eq!(
            parse_groups(&["base", "!defaults"]),
            Err(NegatedSpecial("!defaults"))
        );
        assert_eq!(parse_groups(&[""]), Err(EmptyName));
        assert_eq!(parse_groups(&["base", "!"]), Err(EmptyName));
        assert_eq!(parse_groups(&["1", "base"]), Err(BooleanInList("1")));
        assert_eq!(
            parse_groups(&["base", "false"]),
            Err(BooleanInList("false"))
        );
    }

    #[test]
    fn boolean_forms_only_as_the_whole_list() {
        assert_eq!(parse_groups(&["1"]), Ok(BASE));
        assert_eq!(parse_groups(&["true"]), Ok(BASE));
        assert_eq!(parse_groups(&["0"]), Ok(0));
        assert_eq!(parse_groups(&["false"]), Ok(0));
        assert_eq!(parse_list("1"), Ok(BASE));
        assert_eq!(parse_list("false"), Ok(0));
        assert_eq!(parse_list("true,1"), Err(GroupError::BooleanInList("true")));
    }

    #[test]
    fn comma_lists() {
        assert_eq!(parse_list(""), Ok(0));
        assert_eq!(parse_list("   "), Ok(0));
        assert_eq!(parse_list("all,!freq"), Ok(BASE | NO_FREQ | TIME));
        assert_eq!(parse_list(" base , freq "), Ok(BASE));
        assert_eq!(parse_list("base,,freq"), Err(GroupError::EmptyName));
        assert_eq!(parse_list("base,"), Err(GroupError::EmptyName));
        assert_eq!(
            parse_list("freq,!freq"),
            Err(GroupError::BothEnabledAndDisabled(Group::Freq))
        );
        let long = "base,".repeat(16) + "base";
        assert_eq!(parse_list(&long), Err(GroupError::TooManyItems), "17 items");
        let sixteen = "base,".repeat(15) + "base";
        assert_eq!(parse_list(&sixteen), Ok(BASE | NO_FREQ));
    }

    #[test]
    fn every_parsed_mask_is_valid() {
        let names = [
            "base",
            "freq",
            "time_ref_count",
            "!base",
            "!freq",
            "!time_ref_count",
            "all",
            "defaults",
        ];
        for a in 0..names.len() {
            for b in 0..names.len() {
                for c in 0..names.len() {
                    let items = [names[a], names[b], names[c]];
                    if let Ok(m) = parse_groups(&items) {
                        assert_eq!(check_mask(m), Ok(()), "{items:?} -> {m:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn group_errors_name_what_was_wrong() {
        let s = |e: GroupError| format!("{e}");
        assert!(s(GroupError::Unknown("zz")).contains("\"zz\""));
        // Control characters are escaped: one log line whatever the item.
        assert!(!s(GroupError::Unknown("a\nb")).contains('\n'));
        assert!(s(GroupError::NegatedSpecial("!all")).contains("!all"));
        assert!(
            s(GroupError::BothEnabledAndDisabled(Group::TimeRefCount)).contains("time_ref_count")
        );
        assert!(s(GroupError::BaseMissing).contains("base"));
        assert!(s(GroupError::EmptyName).contains("empty"));
        assert!(s(GroupError::BooleanInList("0")).contains("\"0\""));
        assert!(s(GroupError::TooManyItems).contains("16"));
    }

    // ---- CPUID ----

    #[test]
    fn cpuid_absent_when_off_or_out_of_range() {
        for leaf in [0x4000_0000, 0x4000_0003, 0x4000_0006] {
            assert_eq!(cpuid(0, leaf, 0, 1), None, "mask 0");
            assert_eq!(cpuid(NO_FREQ, leaf, 0, 1), None, "invalid mask");
        }
        assert_eq!(cpuid(BASE, 0x3fff_ffff, 0, 1), None);
        assert_eq!(cpuid(BASE, 0x4000_0007, 0, 1), None);
        assert_eq!(cpuid(BASE, 0x4000_0100, 0, 1), None, "Xen's leaves");
    }

    #[test]
    fn cpuid_identity_leaves() {
        let l0 = cpuid(BASE, 0x4000_0000, 0, 4).unwrap();
        assert_eq!(l0[0], 0x4000_0006);
        let vendor: Vec<u8> = l0[1..].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&vendor, b"Microsoft Hv");
        assert_eq!(
            &cpuid(BASE, 0x4000_0001, 0, 4).unwrap()[0].to_le_bytes(),
            b"Hv#1"
        );
        assert_eq!(cpuid(BASE, 0x4000_0002, 0, 4).unwrap(), [0, 6 << 16, 0, 0]);
        assert_eq!(
            cpuid(BASE, 0x4000_0004, 0, 4).unwrap(),
            [(1 << 3) | (1 << 5), 2047, 0, 0]
        );
        assert_eq!(cpuid(BASE, 0x4000_0005, 0, 4).unwrap(), [4, 0, 0, 0]);
        assert_eq!(cpuid(BASE, 0x4000_0006, 0, 4).unwrap(), [0; 4]);
        let v = Viridian::new(BASE, 3, 0).unwrap();
        assert_eq!(v.cpuid(0x4000_0005, 0).unwrap()[0], 3);
    }

    #[test]
    fn cpuid_0x40000003_follows_the_mask() {
        let always = (1 << 4) | (1 << 5) | (1 << 6);
        let freq = 1 << 11;
        let time = 1 << 1;
        let eax = |m| cpuid(m, 0x4000_0003, 0, 1).unwrap()[0];
        let edx = |m| cpuid(m, 0x4000_0003, 0, 1).unwrap()[3];
        assert_eq!(eax(BASE), always | freq);
        assert_eq!(eax(BASE | NO_FREQ), always);
        assert_eq!(eax(BASE | TIME), always | freq | time);
        assert_eq!(eax(BASE | NO_FREQ | TIME), always | time);
        assert_eq!(edx(BASE), (1 << 8) | (1 << 18));
        assert_eq!(edx(BASE | NO_FREQ), 1 << 18);
    }

    // ---- MSRs ----

    #[test]
    fn msrs_are_not_mine_when_off() {
        let mut v = Viridian::new(0, 1, 0).unwrap();
        let mut p = FakePlatform::new(1);
        for idx in [
            HV_X64_MSR_GUEST_OS_ID,
            HV_X64_MSR_HYPERCALL,
            HV_X64_MSR_VP_INDEX,
            HV_X64_MSR_TIME_REF_COUNT,
            HV_X64_MSR_TSC_FREQUENCY,
            HV_X64_MSR_APIC_FREQUENCY,
            HV_X64_MSR_EOI,
            HV_X64_MSR_ICR,
            HV_X64_MSR_TPR,
            0x4000_00ff,
        ] {
            assert_eq!(v.rdmsr(0, idx, &mut p), Msr::NotMine, "{idx:#x}");
            assert_eq!(v.wrmsr(0, idx, 1, &mut p), Msr::NotMine, "{idx:#x}");
        }
        assert!(!v.hypercall_enabled());
    }

    #[test]
    fn msrs_outside_the_block_are_not_mine_when_on() {
        let (mut v, mut p) = on(BASE);
        for idx in [0x3fff_ffff, 0x4000_0100, 0x4000_0200, 0x10] {
            assert_eq!(v.rdmsr(0, idx, &mut p), Msr::NotMine);
            assert_eq!(v.wrmsr(0, idx, 0, &mut p), Msr::NotMine);
        }
        // Unimplemented ones inside it are #GP, not passed on.
        for idx in [0x4000_0003, 0x4000_0021, 0x4000_0073, 0x4000_00ff] {
            assert_eq!(v.rdmsr(0, idx, &mut p), Msr::Gp, "{idx:#x}");
            assert_eq!(v.wrmsr(0, idx, 0, &mut p), Msr::Gp, "{idx:#x}");
        }
    }

    #[test]
    fn vp_index_per_vcpu_and_read_only() {
        let (mut v, mut p) = on(BASE);
        assert_eq!(v.rdmsr(0, HV_X64_MSR_VP_INDEX, &mut p), Msr::Value(0));
        assert_eq!(v.rdmsr(1, HV_X64_MSR_VP_INDEX, &mut p), Msr::Value(1));
        assert_eq!(
            v.rdmsr(2, HV_X64_MSR_VP_INDEX, &mut p),
            Msr::Gp,
            "no vCPU 2"
        );
        assert_eq!(v.wrmsr(0, HV_X64_MSR_VP_INDEX, 5, &mut p), Msr::Gp);
    }

    #[test]
    fn frequency_msrs_only_with_freq() {
        let (mut v, mut p) = on(BASE);
        assert_eq!(
            v.rdmsr(0, HV_X64_MSR_TSC_FREQUENCY, &mut p),
            Msr::Value(2_500_000_000)
        );
        assert_eq!(
            v.rdmsr(0, HV_X64_MSR_APIC_FREQUENCY, &mut p),
            Msr::Value(100_000_000)
        );
        assert_eq!(v.wrmsr(0, HV_X64_MSR_TSC_FREQUENCY, 1, &mut p), Msr::Gp);
        assert_eq!(v.wrmsr(0, HV_X64_MSR_APIC_FREQUENCY, 1, &mut p), Msr::Gp);
        let (mut v, mut p) = on(BASE | NO_FREQ);
        for idx in [HV_X64_MSR_TSC_FREQUENCY, HV_X64_MSR_APIC_FREQUENCY] {
            assert_eq!(v.rdmsr(0, idx, &mut p), Msr::Gp);
            assert_eq!(v.wrmsr(0, idx, 1, &mut p), Msr::Gp);
        }
    }

    #[test]
    fn time_reference_counter_only_with_its_group() {
        let (mut v, mut p) = on(BASE);
        assert_eq!(v.rdmsr(0, HV_X64_MSR_TIME_REF_COUNT, &mut p), Msr::Gp);
        let (mut v, mut p) = on(BASE | TIME);
        p.clock.set(1_500);
        assert_eq!(
            v.rdmsr(0, HV_X64_MSR_TIME_REF_COUNT, &mut p),
            Msr::Value(500)
        );
        assert_eq!(
            v.wrmsr(0, HV_X64_MSR_TIME_REF_COUNT, 0, &mut p),
            Msr::Gp,
            "read-only"
        );
    }

    #[test]
    fn time_reference_counter_never_goes_backwards() {
        let (mut v, mut p) = on(BASE | TIME);
        let read = |v: &mut Viridian, p: &mut FakePlatform, at: u64| {
            p.clock.set(at);
            match v.rdmsr(1, HV_X64_MSR_TIME_REF_COUNT, p) {
                Msr::Value(x) => x,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(read(&mut v, &mut p, 1_000), 0, "zero at creation");
        assert_eq!(read(&mut v, &mut p, 9_000), 8_000);
        assert_eq!(read(&mut v, &mut p, 4_000), 8_000, "clock stepped back");
        assert_eq!(read(&mut v, &mut p, 0), 8_000, "before creation");
        assert_eq!(read(&mut v, &mut p, 8_500), 8_000);
        assert_eq!(read(&mut v, &mut p, 12_000), 11_000, "moves on");
        assert_eq!(read(&mut v, &mut p, u64::MAX), u64::MAX - 1_000);
    }

    #[test]
    fn guest_os_id_reads_back() {
        let (mut v, mut p) = on(BASE);
        assert_eq!(v.rdmsr(0, HV_X64_MSR_GUEST_OS_ID, &mut p), Msr::Value(0));
        assert_eq!(
            v.wrmsr(1, HV_X64_MSR_GUEST_OS_ID, 0x8100 << 48, &mut p),
            Msr::Done
        );
        assert_eq!(
            v.rdmsr(0, HV_X64_MSR_GUEST_OS_ID, &mut p),
            Msr::Value(0x8100 << 48),
            "partition-wide"
        );
    }

    #[test]
    fn hypercall_msr_needs_a_guest_os_id() {
        let (mut v, mut p) = on(BASE);
        assert_eq!(
            v.wrmsr(0, HV_X64_MSR_HYPERCALL, 0x5000 | 1, &mut p),
            Msr::Done
        );
        assert_eq!(
            v.rdmsr(0, HV_X64_MSR_HYPERCALL, &mut p),
            Msr::Value(0),
            "ignored"
        );
        assert!(!v.hypercall_enabled());
    }

    #[test]
    fn hypercall_msr_enable_fill_lock() {
        let (mut v, mut p) = on(BASE);
        v.wrmsr(0, HV_X64_MSR_GUEST_OS_ID, 1, &mut p);
        // Disabled write: stored, nothing to fill.
        assert_eq!(v.wrmsr(0, HV_X64_MSR_HYPERCALL, 0x7000, &mut p), Msr::Done);
        assert_eq!(v.rdmsr(0, HV_X64_MSR_HYPERCALL, &mut p), Msr::Value(0x7000));
        assert!(!v.hypercall_enabled());
        // Reserved bits 11:2: #GP, value unchanged.
        assert_eq!(
            v.wrmsr(0, HV_X64_MSR_HYPERCALL, 0x5000 | 1 << 2 | 1, &mut p),
            Msr::Gp
        );
        assert_eq!(v.rdmsr(0, HV_X64_MSR_HYPERCALL, &mut p), Msr::Value(0x7000));
        // Enable: the arch fills the page at the GPA.
        assert_eq!(
            v.wrmsr(0, HV_X64_MSR_HYPERCALL, 0x1234_5000 | 1, &mut p),
            Msr::FillHypercallPage { gpa: 0x1234_5000 }
        );
        assert!(v.hypercall_enabled());
        // Move it again and lock it.
        let locked = 0x6000 | HV_HYPERCALL_LOCKED | HV_HYPERCALL_ENABLE;
        assert_eq!(
            v.wrmsr(0, HV_X64_MSR_HYPERCALL, locked, &mut p),
            Msr::FillHypercallPage { gpa: 0x6000 }
        );
        // Locked: further writes ignored.
        assert_eq!(
            v.wrmsr(0, HV_X64_MSR_HYPERCALL, 0x9000 | 1, &mut p),
            Msr::Done
        );
        assert_eq!(v.wrmsr(1, HV_X64_MSR_HYPERCALL, 0, &mut p), Msr::Done);
        assert_eq!(v.rdmsr(0, HV_X64_MSR_HYPERCALL, &mut p), Msr::Value(locked));
        // Clearing the guest OS id takes the interface away, lock or not.
        v.wrmsr(0, HV_X64_MSR_GUEST_OS_ID, 0, &mut p);
        assert!(!v.hypercall_enabled());
        assert_eq!(
            v.rdmsr(0, HV_X64_MSR_HYPERCALL, &mut p),
            Msr::Value(locked & !HV_HYPERCALL_ENABLE)
        );
    }

    #[test]
    fn apic_msrs_reach_the_vlapic() {
        let (mut v, mut p) = on(BASE | NO_FREQ);
        // TPR.
        assert_eq!(v.wrmsr(1, HV_X64_MSR_TPR, 0x20, &mut p), Msr::Done);
        assert_eq!(p.lapics[1].tpr(), 0x20);
        assert_eq!(p.lapics[0].tpr(), 0, "per vCPU");
        assert_eq!(v.rdmsr(1, HV_X64_MSR_TPR, &mut p), Msr::Value(0x20));
        assert_eq!(
            v.wrmsr(1, HV_X64_MSR_TPR, 0x100, &mut p),
            Msr::Gp,
            "reserved bits"
        );
        // ICR to self, then EOI.
        let self_ipi = 0x51 | 0b01 << 18;
        assert_eq!(v.wrmsr(1, HV_X64_MSR_ICR, self_ipi, &mut p), Msr::Done);
        assert_eq!(v.rdmsr(1, HV_X64_MSR_ICR, &mut p), Msr::Value(self_ipi));
        assert_eq!(p.lapics[1].pending(), Some(0x51));
        p.lapics[1].ack(0x51).unwrap();
        assert_eq!(v.wrmsr(1, HV_X64_MSR_EOI, 0, &mut p), Msr::Done);
        assert!(!p.lapics[1].isr_contains(0x51));
        assert_eq!(v.rdmsr(1, HV_X64_MSR_EOI, &mut p), Msr::Gp, "write-only");
        // An IPI to vCPU 0's APIC id goes back to the arch.
        let to_0 = 0x52;
        assert_eq!(
            v.wrmsr(1, HV_X64_MSR_ICR, to_0, &mut p),
            Msr::Ipi {
                icr: to_0,
                reason: NotDelivered::OtherDestination(0)
            }
        );
        // No vLAPIC for the vCPU: #GP.
        for idx in [HV_X64_MSR_EOI, HV_X64_MSR_ICR, HV_X64_MSR_TPR] {
            assert_eq!(v.wrmsr(7, idx, 0, &mut p), Msr::Gp);
        }
        assert_eq!(v.rdmsr(7, HV_X64_MSR_ICR, &mut p), Msr::Gp);
        assert_eq!(v.rdmsr(7, HV_X64_MSR_TPR, &mut p), Msr::Gp);
    }

    #[test]
    fn set_mask_turns_the_msrs_on() {
        let mut v = Viridian::new(0, 1, 0).unwrap();
        let mut p = FakePlatform::new(1);
        assert_eq!(v.rdmsr(0, HV_X64_MSR_VP_INDEX, &mut p), Msr::NotMine);
        v.set_mask(BASE).unwrap();
        assert_eq!(v.rdmsr(0, HV_X64_MSR_VP_INDEX, &mut p), Msr::Value(0));
    }

    // ---- hypercalls ----

    fn enabled() -> Viridian {
        let (mut v, mut p) = on(BASE);
        v.wrmsr(0, HV_X64_MSR_GUEST_OS_ID, 1, &mut p);
        v.wrmsr(0, HV_X64_MSR_HYPERCALL, 0x5000 | 1, &mut p);
        v
    }

    #[test]
    fn long_spin_wait_yields() {
        let mut v = enabled();
        assert_eq!(v.hypercall(0x0008), (0, Action::Yield));
        assert_eq!(v.hypercall(0x0008 | 1 << 16), (0, Action::Yield), "fast");
    }

    #[test]
    fn unknown_codes_and_bad_inputs() {
        let mut v = enabled();
        for code in [0u64, 1, 2, 3, 7, 9, 0x5c, 0xffff] {
            assert_eq!(v.hypercall(code), (2, Action::None), "code {code:#x}");
        }
        assert_eq!(
            v.hypercall(0x0002 | 1 << 60),
            (2, Action::None),
            "code first"
        );
        for bad in [
            1u64 << 32, // rep count on a simple call
            1 << 48,    // rep start index
            1 << 17,    // variable header
            1 << 26,    // reserved 30:26
            1 << 31,    // nested
            1 << 44,    // reserved 47:44
            1 << 63,    // reserved 63:60
        ] {
            assert_eq!(v.hypercall(0x0008 | bad), (3, Action::None), "{bad:#x}");
        }
    }

    #[test]
    fn hypercalls_need_the_interface() {
        let (mut v, _) = on(BASE);
        assert_eq!(v.hypercall(0x0008), (2, Action::None), "no page yet");
        let mut off = Viridian::new(0, 1, 0).unwrap();
        assert_eq!(off.hypercall(0x0008), (2, Action::None));
    }

    #[test]
    fn hypercall_page_stub() {
        let page = hypercall_page();
        assert_eq!(
            &page[..9],
            &[0xb8, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x01, 0xc1, 0xc3]
        );
        assert!(page[9..].iter().all(|b| *b == 0xcc));
        assert!(is_viridian_call(0x8000_0000));
        assert!(!is_viridian_call(17), "a Xen hypercall number");
    }
}
