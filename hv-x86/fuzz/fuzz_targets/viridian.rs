//! Viridian: the configuration list parser and a domain's enlightenments
//! under a hostile guest, in three modes chosen by the first byte.
//!
//! Lists (raw bytes as a string, or lists generated from the group names,
//! their negations, the special values and junk): `parse_list` never
//! panics; an accepted mask holds only HVMPV_* bits we know, holds BASE
//! when non-zero, passes `check_mask`, has each bit only when some item
//! turns it on and none turns it off; every error is one line when the
//! list is.
//!
//! Operations: a `Viridian` made with a fuzzed mask (only a valid one is
//! accepted, EINVAL otherwise) and a fake platform whose clock the input
//! moves forwards, backwards and anywhere, with vLAPICs for some vCPUs,
//! then a sequence of RDMSR/WRMSR (indices biased to the synthetic block
//! and its APIC MSRs), Hyper-V hypercalls, CPUID and `set_mask` attempts,
//! checked against a model of what the TLFS and seed 004 say:
//! - the mask follows `viridian_mask_change` (same value accepted, any
//!   change once non-zero EEXIST, an invalid one EINVAL) and never changes
//!   otherwise;
//! - no MSR or leaf is answered while the mask is 0, nor an MSR outside
//!   0x40000000..=0x400000ff;
//! - TIME_REF_COUNT reads never decrease, whatever the clock does, and
//!   are the partition's age when the clock does not step back;
//! - the frequency MSRs are never readable with NO_FREQ;
//! - GUEST_OS_ID and HYPERCALL read back what the rules let through (a
//!   locked HYPERCALL ignores writes, no guest OS id disables it), every
//!   FillHypercallPage is page-aligned and comes from enabling the page;
//! - a hypercall yields only on the interface being set up and a clean
//!   HvNotifyLongSpinWait, and returns no rep count;
//! - CPUID answers only 0x40000000..=0x40000006, and its privilege bits
//!   follow the mask.
#![no_main]

use hv_x86::viridian::{
    self, HV_ACCESS_FREQUENCY_MSRS, HV_ACCESS_PARTITION_REFERENCE_COUNTER, HV_CPUID_FIRST,
    HV_CPUID_LAST, HV_FEATURE_FREQUENCY_REGS_AVAILABLE, HV_STATUS_INVALID_HYPERCALL_CODE,
    HV_STATUS_INVALID_HYPERCALL_INPUT, HV_STATUS_SUCCESS, HV_X64_MSR_APIC_FREQUENCY,
    HV_X64_MSR_EOI, HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_HYPERCALL, HV_X64_MSR_ICR,
    HV_X64_MSR_TIME_REF_COUNT, HV_X64_MSR_TPR, HV_X64_MSR_TSC_FREQUENCY, HV_X64_MSR_VP_INDEX,
    HVCALL_NOTIFY_LONG_SPIN_WAIT, MAX_LIST_ITEMS, Msr, Platform, Viridian,
};
use hv_x86::vlapic::VLapic;
use libfuzzer_sys::fuzz_target;

// HVM_PARAM_VIRIDIAN's bits (the HVMPV_* ABI values) and the errnos.
const BASE: u64 = 1 << 0;
const NO_FREQ: u64 = 1 << 1;
const TIME: u64 = 1 << 2;
const KNOWN: u64 = BASE | NO_FREQ | TIME;
const EEXIST: i32 = 17;
const EINVAL: i32 = 22;

const MSR_BLOCK: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_00ff;
const ICR_DELIVERY_STATUS: u64 = 1 << 12;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => check_list(&String::from_utf8_lossy(rest)),
        1 => check_list(&generated_list(&mut Input(rest))),
        _ => operations(&mut Input(rest)),
    }
});

/// The input, consumed from the front; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
}

/// Whether `mask` is a valid HVM_PARAM_VIRIDIAN value (seed 004).
fn valid(mask: u64) -> bool {
    mask == 0 || (mask & !KNOWN == 0 && mask & BASE != 0)
}

// ---------------------------------------------------------------------
// The configuration list.

const WORDS: [&str; 18] = [
    "base",
    "freq",
    "time_ref_count",
    "all",
    "defaults",
    "!base",
    "!freq",
    "!time_ref_count",
    "!all",
    "!defaults",
    "1",
    "0",
    "true",
    "false",
    "",
    "!",
    "Base",
    "hcall_remote_tlb_flush",
];

/// A comma-separated list of mostly real items with spaces around them.
fn generated_list(g: &mut Input) -> String {
    let mut s = String::new();
    for i in 0..g.u8() % 20 {
        if i > 0 {
            s.push(if g.u8().is_multiple_of(32) { ';' } else { ',' });
        }
        for _ in 0..g.u8() % 3 {
            s.push(' ');
        }
        s.push_str(WORDS[usize::from(g.u8()) % WORDS.len()]);
        if g.u8().is_multiple_of(8) {
            s.push(char::from(g.u8() & 0x7f));
        }
        for _ in 0..g.u8() % 3 {
            s.push(if g.u8().is_multiple_of(2) { ' ' } else { '\t' });
        }
    }
    s
}

fn check_list(s: &str) {
    let mask = match viridian::parse_list(s) {
        Ok(mask) => mask,
        Err(e) => {
            let text = e.to_string();
            // Items are echoed as given: one line when the list is (the
            // arch's lists come from printable command lines).
            assert!(!text.is_empty(), "{s:?}");
            assert!(s.contains('\n') || !text.contains('\n'), "{s:?}: {text}");
            return;
        }
    };
    assert_eq!(mask & !KNOWN, 0, "{s:?}: unknown bits in {mask:#x}");
    assert!(
        mask == 0 || mask & BASE != 0,
        "{s:?}: {mask:#x} without base"
    );
    assert_eq!(viridian::check_mask(mask), Ok(()), "{s:?}");
    if s.trim().is_empty() {
        assert_eq!(mask, 0);
        return;
    }
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    assert!(items.len() <= MAX_LIST_ITEMS, "{s:?}: too many items taken");
    let named = |names: &[&str]| items.iter().any(|i| names.contains(i));
    // A bit needs an item that turns its group on...
    if mask & BASE != 0 {
        assert!(named(&["base", "all", "defaults", "1", "true"]), "{s:?}");
    }
    if mask & BASE != 0 && mask & NO_FREQ == 0 {
        assert!(named(&["freq", "all", "defaults", "1", "true"]), "{s:?}");
    }
    if mask & TIME != 0 {
        assert!(named(&["time_ref_count", "all"]), "{s:?}");
    }
    // ...and none that turns it off.
    if named(&["!base", "0", "false"]) {
        assert_eq!(mask, 0, "{s:?}");
    }
    if named(&["!freq"]) {
        assert!(mask == 0 || mask & NO_FREQ != 0, "{s:?}");
    }
    if named(&["!time_ref_count"]) {
        assert_eq!(mask & TIME, 0, "{s:?}");
    }
    // The boolean forms stand only as the whole list.
    if named(&["0", "1", "true", "false"]) {
        assert_eq!(items.len(), 1, "{s:?}");
    }
}

// ---------------------------------------------------------------------
// Operations.

/// The arch side: a clock the input moves, vLAPICs for some vCPUs.
struct FakePlatform {
    clock: u64,
    tsc_hz: u64,
    apic_hz: u64,
    lapics: Vec<VLapic>,
}

impl Platform for FakePlatform {
    fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }
    fn apic_hz(&self) -> u64 {
        self.apic_hz
    }
    fn now_100ns(&self) -> u64 {
        self.clock
    }
    fn lapic(&mut self, vcpu: u32) -> Option<&mut VLapic> {
        self.lapics.get_mut(vcpu as usize)
    }
}

/// What the domain's viridian state must be.
struct Model {
    mask: u64,
    nr_vcpus: u32,
    guest_os_id: u64,
    hypercall_msr: u64,
    created: u64,
    /// The last TIME_REF_COUNT read.
    time_last: u64,
}

impl Model {
    fn on(&self) -> bool {
        self.mask != 0
    }

    fn hypercall_enabled(&self) -> bool {
        self.on() && self.guest_os_id != 0 && self.hypercall_msr & 1 != 0
    }
}

const NAMED_MSRS: [u32; 9] = [
    HV_X64_MSR_GUEST_OS_ID,
    HV_X64_MSR_HYPERCALL,
    HV_X64_MSR_VP_INDEX,
    HV_X64_MSR_TIME_REF_COUNT,
    HV_X64_MSR_TSC_FREQUENCY,
    HV_X64_MSR_APIC_FREQUENCY,
    HV_X64_MSR_EOI,
    HV_X64_MSR_ICR,
    HV_X64_MSR_TPR,
];

fn msr_index(g: &mut Input) -> u32 {
    match g.u8() % 8 {
        0..=2 => NAMED_MSRS[usize::from(g.u8()) % NAMED_MSRS.len()],
        3 => 0x4000_0000 + u32::from(g.u8()),
        4 => 0x4000_0070 + u32::from(g.u8() % 3),
        5 => 0x4000_0000 + u32::from(g.u16() % 0x200),
        6 => [0x3fff_ffff, 0x4000_0100, 0x4000_00ff, 0xc000_0080][usize::from(g.u8() % 4)],
        _ => g.u32(),
    }
}

fn msr_value(g: &mut Input) -> u64 {
    match g.u8() % 7 {
        0 => 0,
        1 => 1 + u64::from(g.u8()),
        // HYPERCALL: a page, enable, lock, at times a reserved bit.
        2 => (u64::from(g.u32()) << 12) | u64::from(g.u16() & 0xfff & (0x3 | g.u16())),
        3 => (u64::from(g.u32()) << 12) | u64::from(g.u8() & 3),
        // ICR: vector, delivery mode, logical, shorthand, destination.
        4 => {
            u64::from(g.u8())
                | u64::from(g.u8() & 7) << 8
                | u64::from(g.u8() & 1) << 11
                | u64::from(g.u8() & 1) << 12
                | u64::from(g.u8() & 3) << 18
                | u64::from(g.u8() % 6) << 56
        }
        5 => u64::from(g.u16()),
        _ => g.u64(),
    }
}

fn new_mask(g: &mut Input) -> u64 {
    match g.u8() % 8 {
        0 => 0,
        1 => BASE,
        2 => BASE | NO_FREQ,
        3 => BASE | TIME,
        4 => KNOWN,
        5 => u64::from(g.u8() & 0xf),
        6 => 1 << (g.u8() % 64),
        _ => g.u64(),
    }
}

fn operations(g: &mut Input) {
    let mask = new_mask(g);
    let nr_vcpus = u32::from(g.u8() % 5);
    let lapics = g.u8() % 5;
    let created = if g.u8().is_multiple_of(4) {
        g.u64()
    } else {
        u64::from(g.u32())
    };
    let mut p = FakePlatform {
        clock: created,
        tsc_hz: u64::from(g.u32()),
        apic_hz: u64::from(g.u32()),
        lapics: (0..lapics).map(VLapic::new).collect(),
    };
    let mut v = match Viridian::new(mask, nr_vcpus, created) {
        Ok(v) => {
            assert!(valid(mask), "mask {mask:#x} accepted");
            v
        }
        Err(e) => {
            assert!(!valid(mask), "mask {mask:#x} refused");
            assert_eq!(e, EINVAL);
            return;
        }
    };
    let mut m = Model {
        mask,
        nr_vcpus,
        guest_os_id: 0,
        hypercall_msr: 0,
        created,
        time_last: 0,
    };
    // The actions a yielding and a refused hypercall return, from a
    // domain set up by hand (the type is the core's, named nowhere here).
    let (yield_action, none_action) = {
        let mut r = Viridian::new(BASE, 1, 0).expect("base is valid");
        let mut rp = FakePlatform {
            clock: 0,
            tsc_hz: 0,
            apic_hz: 0,
            lapics: Vec::new(),
        };
        let (_, none) = r.hypercall(u64::from(HVCALL_NOTIFY_LONG_SPIN_WAIT));
        assert_eq!(r.wrmsr(0, HV_X64_MSR_GUEST_OS_ID, 1, &mut rp), Msr::Done);
        assert_eq!(
            r.wrmsr(0, HV_X64_MSR_HYPERCALL, 0x1000 | 1, &mut rp),
            Msr::FillHypercallPage { gpa: 0x1000 }
        );
        let (status, yielded) = r.hypercall(u64::from(HVCALL_NOTIFY_LONG_SPIN_WAIT));
        assert_eq!(status, u64::from(HV_STATUS_SUCCESS));
        assert_ne!(yielded, none);
        (yielded, none)
    };

    for _ in 0..1024 {
        if g.0.is_empty() {
            break;
        }
        match g.u8() % 12 {
            0 => p.clock = p.clock.saturating_add(u64::from(g.u32())),
            1 => p.clock = p.clock.saturating_sub(u64::from(g.u32())),
            2 => p.clock = g.u64(),
            3..=5 => {
                let (vcpu, idx) = (u32::from(g.u8() % 6), msr_index(g));
                let r = v.rdmsr(vcpu, idx, &mut p);
                check_rdmsr(&mut m, &mut p, vcpu, idx, r);
            }
            6..=8 => {
                let (vcpu, idx, value) = (u32::from(g.u8() % 6), msr_index(g), msr_value(g));
                let r = v.wrmsr(vcpu, idx, value, &mut p);
                check_wrmsr(&mut m, &mut p, vcpu, idx, value, r);
            }
            9 => {
                let input = match g.u8() % 4 {
                    0 => u64::from(HVCALL_NOTIFY_LONG_SPIN_WAIT),
                    1 => u64::from(HVCALL_NOTIFY_LONG_SPIN_WAIT) | 1 << (16 + g.u8() % 48),
                    2 => u64::from(g.u16()),
                    _ => g.u64(),
                };
                assert_eq!(v.hypercall_enabled(), m.hypercall_enabled());
                let (rax, action) = v.hypercall(input);
                let status = rax as u16;
                assert_eq!(rax >> 16, 0, "reps completed or junk in {rax:#x}");
                // A simple call: only the code and the fast bit (16) set.
                let expected =
                    if !m.hypercall_enabled() || input as u16 != HVCALL_NOTIFY_LONG_SPIN_WAIT {
                        HV_STATUS_INVALID_HYPERCALL_CODE
                    } else if input & !0x1_ffff == 0 {
                        HV_STATUS_SUCCESS
                    } else {
                        HV_STATUS_INVALID_HYPERCALL_INPUT
                    };
                assert_eq!(status, expected, "hypercall {input:#x}");
                if status == HV_STATUS_SUCCESS {
                    assert_eq!(action, yield_action);
                } else {
                    assert_eq!(action, none_action);
                }
            }
            10 => {
                let new = new_mask(g);
                let expected = if new == m.mask {
                    Ok(())
                } else if m.mask != 0 {
                    Err(EEXIST)
                } else if valid(new) {
                    Ok(())
                } else {
                    Err(EINVAL)
                };
                assert_eq!(v.set_mask(new), expected, "{:#x} -> {new:#x}", m.mask);
                if expected.is_ok() {
                    m.mask = new;
                }
            }
            _ => {
                let leaf = match g.u8() % 4 {
                    0 | 1 => HV_CPUID_FIRST + u32::from(g.u8() % 10),
                    2 => HV_CPUID_FIRST.wrapping_sub(1 + u32::from(g.u8() % 2)),
                    _ => g.u32(),
                };
                let subleaf = g.u32();
                check_cpuid(&m, leaf, v.cpuid(leaf, subleaf));
                assert_eq!(
                    v.cpuid(leaf, subleaf),
                    viridian::cpuid(m.mask, leaf, subleaf, m.nr_vcpus)
                );
            }
        }
        assert_eq!(v.mask(), m.mask, "the mask changed");
        assert_eq!(v.is_on(), m.on());
    }
}

fn check_rdmsr(m: &mut Model, p: &mut FakePlatform, vcpu: u32, idx: u32, r: Msr) {
    if !m.on() || !MSR_BLOCK.contains(&idx) {
        assert_eq!(r, Msr::NotMine, "rdmsr {idx:#x} with mask {:#x}", m.mask);
        return;
    }
    let lapic = p.lapics.get(vcpu as usize);
    let expected = match idx {
        HV_X64_MSR_GUEST_OS_ID => Msr::Value(m.guest_os_id),
        HV_X64_MSR_HYPERCALL => Msr::Value(m.hypercall_msr),
        HV_X64_MSR_VP_INDEX if vcpu < m.nr_vcpus => Msr::Value(u64::from(vcpu)),
        HV_X64_MSR_TIME_REF_COUNT if m.mask & TIME != 0 => {
            let Msr::Value(count) = r else {
                panic!("TIME_REF_COUNT read gave {r:?}");
            };
            assert!(count >= m.time_last, "{count} after {}", m.time_last);
            // The partition's age, unless the clock stepped back below an
            // earlier read.
            let age = p.clock.saturating_sub(m.created);
            assert_eq!(count, age.max(m.time_last));
            m.time_last = count;
            r
        }
        HV_X64_MSR_TSC_FREQUENCY | HV_X64_MSR_APIC_FREQUENCY if m.mask & NO_FREQ != 0 => {
            assert!(!matches!(r, Msr::Value(_)), "frequency read with NO_FREQ");
            Msr::Gp
        }
        HV_X64_MSR_TSC_FREQUENCY => Msr::Value(p.tsc_hz),
        HV_X64_MSR_APIC_FREQUENCY => Msr::Value(p.apic_hz),
        HV_X64_MSR_ICR => lapic.map_or(Msr::Gp, |l| Msr::Value(l.read_icr())),
        HV_X64_MSR_TPR => lapic.map_or(Msr::Gp, |l| Msr::Value(u64::from(l.tpr()))),
        _ => Msr::Gp,
    };
    assert_eq!(r, expected, "rdmsr {idx:#x} on vCPU {vcpu}");
}

fn check_wrmsr(m: &mut Model, p: &mut FakePlatform, vcpu: u32, idx: u32, value: u64, r: Msr) {
    if let Msr::FillHypercallPage { gpa } = r {
        assert_eq!(gpa & 0xfff, 0, "hypercall page at {gpa:#x}");
        assert_eq!(idx, HV_X64_MSR_HYPERCALL);
        assert_eq!(gpa, value & !0xfff);
    }
    if !m.on() || !MSR_BLOCK.contains(&idx) {
        assert_eq!(r, Msr::NotMine, "wrmsr {idx:#x} with mask {:#x}", m.mask);
        return;
    }
    let lapic = p.lapics.get(vcpu as usize);
    let expected = match idx {
        HV_X64_MSR_GUEST_OS_ID => {
            m.guest_os_id = value;
            if value == 0 {
                m.hypercall_msr &= !1;
            }
            Msr::Done
        }
        HV_X64_MSR_HYPERCALL => {
            if m.hypercall_msr & 2 != 0 || m.guest_os_id == 0 {
                Msr::Done
            } else if value & 0xffc != 0 {
                Msr::Gp
            } else {
                m.hypercall_msr = value;
                if value & 1 != 0 {
                    Msr::FillHypercallPage {
                        gpa: value & !0xfff,
                    }
                } else {
                    Msr::Done
                }
            }
        }
        HV_X64_MSR_EOI => lapic.map_or(Msr::Gp, |_| Msr::Done),
        HV_X64_MSR_ICR => match (lapic, r) {
            (None, _) => Msr::Gp,
            (Some(l), Msr::Ipi { icr, .. }) => {
                assert_eq!(icr, value);
                assert_eq!(l.read_icr(), value & !ICR_DELIVERY_STATUS);
                r
            }
            (Some(l), _) => {
                assert_eq!(l.read_icr(), value & !ICR_DELIVERY_STATUS);
                Msr::Done
            }
        },
        HV_X64_MSR_TPR => match (u8::try_from(value), lapic) {
            (Ok(tpr), Some(l)) => {
                assert_eq!(l.tpr(), tpr);
                Msr::Done
            }
            _ => Msr::Gp,
        },
        _ => Msr::Gp,
    };
    assert_eq!(r, expected, "wrmsr {idx:#x} = {value:#x} on vCPU {vcpu}");
}

fn check_cpuid(m: &Model, leaf: u32, r: Option<[u32; 4]>) {
    let ours = m.on() && (HV_CPUID_FIRST..=HV_CPUID_LAST).contains(&leaf);
    assert_eq!(r.is_some(), ours, "leaf {leaf:#x} with mask {:#x}", m.mask);
    let Some([eax, _, _, edx]) = r else {
        return;
    };
    match leaf - HV_CPUID_FIRST {
        0 => assert_eq!(eax, HV_CPUID_LAST),
        3 => {
            let freq = m.mask & NO_FREQ == 0;
            assert_eq!(eax & HV_ACCESS_FREQUENCY_MSRS != 0, freq);
            assert_eq!(edx & HV_FEATURE_FREQUENCY_REGS_AVAILABLE != 0, freq);
            assert_eq!(
                eax & HV_ACCESS_PARTITION_REFERENCE_COUNTER != 0,
                m.mask & TIME != 0
            );
        }
        5 => assert_eq!(eax, m.nr_vcpus),
        _ => {}
    }
}
