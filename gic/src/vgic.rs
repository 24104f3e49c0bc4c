//! The virtual GICv3 a guest domain sees: distributor, one redistributor per
//! vCPU, and the bookkeeping behind the hardware list registers.
//!
//! What it owns: the architectural state of every virtual interrupt of one
//! domain (SGIs and PPIs banked per vCPU, SPIs shared): enable, pending
//! (a software latch plus, for level-sensitive interrupts, the input line),
//! active, priority, group, trigger and SPI routing; the register views of
//! the distributor frame (64 KiB) and of each 128 KiB redistributor frame;
//! which interrupts sit in which vCPU's list registers; and which physical
//! interrupts forwarded with the LR HW bit were dropped and still need a
//! deactivation.
//!
//! What it never does: touch hardware (no system register, no MMIO, no
//! `unsafe`), allocate, block, or trust a number that came from a guest.
//! Every guest offset, width, INTID and routing value is checked before use;
//! bad ones give [`MmioError`] or do nothing. Every operation is bounded by
//! [`MAX_VCPUS`], [`MAX_SPIS`] and [`MAX_LRS`]. The virtual CPU interface
//! (ICH_VMCR_EL2, priority mask, running priority, the guest's group enables
//! in ICC_IGRPEN*) is the hardware's business and is not modelled here.
//!
//! # How the caller drives it
//! - Guest MMIO to the distributor or a redistributor →
//!   [`VGic::dist_read`]/[`VGic::dist_write`]/[`VGic::redist_read`]/
//!   [`VGic::redist_write`]; an `Err` becomes a data abort in the guest.
//! - Trapped ICC_SGI1R_EL1 → [`VGic::send_sgi`]; device models →
//!   [`VGic::set_line`]; physical interrupts forwarded to a guest →
//!   [`VGic::inject_hw`].
//! - Every call that changes state returns a [`VcpuMask`]: those vCPUs must
//!   leave the guest (if running) and refill their list registers.
//! - On every guest exit: [`VGic::sync_lrs`] with the LR values, then
//!   [`VGic::take_kicks`] (interrupts leaving this vCPU's LRs may now belong
//!   to another vCPU). Before every entry: [`VGic::drain_hw_deactivations`]
//!   (write ICC_DIR_EL1 for each), then [`VGic::fill_lrs`]; on `underflow`
//!   set ICH_HCR_EL2.UIE. Keep the maintenance interrupt enabled: level
//!   interrupts are sent with the LR EOI bit so their deactivation exits and
//!   the line is sampled again.
//!
//! While a vCPU is outside the guest this model is authoritative. While it
//! runs, the LRs hold the state of what `fill_lrs` put there; changes made
//! meanwhile (another vCPU re-pends or clears an interrupt) are recorded as
//! events and merged by `sync_lrs`, so a pending edge is never lost.
//!
//! # Choices the architecture leaves open
//! - Single security state: GICD_CTLR.DS and ARE read as one, so
//!   IGRPMODR, NSACR and the legacy GICD_SGIR/ITARGETSR/CPENDSGIR/SPENDSGIR
//!   are RAZ/WI, and bank 0 of the distributor's per-INTID registers too.
//! - No LPIs, no ITS, no extended SPI/PPI ranges, no message-based SPIs.
//! - GICD_IIDR and GICR_IIDR read [`IIDR`]: implementer 0 (no JEP106 code:
//!   this is a software model, so no guest erratum workaround keyed on the
//!   IIDR of some silicon applies), product ID 0x58, variant and revision 0.
//! - GICD_TYPER advertises A3V (Aff3 routing) and RSS (SGI target lists in
//!   every 16-CPU range), which [`VGic::send_sgi`] honours.
//! - Priorities keep all 8 bits. SGI enables are writable; SGIs are always
//!   edge; PPI and SPI trigger is writable (reset: level).
//! - An IROUTER with IRM=1 (1-of-N) targets the lowest vCPU whose
//!   redistributor is awake (GICR_WAKER.ProcessorSleep clear), else vCPU 0.
//! - SGIs are made pending on their targets whatever their group; group
//!   gating happens at delivery.
//! - A level-sensitive or HW-backed interrupt that is active is put in an
//!   LR as active only (never pending+active): for level the pending state
//!   is re-evaluated after the EOI maintenance exit, for HW the physical
//!   interrupt cannot fire again before it is deactivated.
#![forbid(unsafe_code)]

/// Most vCPUs a domain's vGIC serves.
pub const MAX_VCPUS: usize = 8;
/// Most SPIs (INTID 32..32+MAX_SPIS).
pub const MAX_SPIS: u32 = 256;
/// Most hardware list registers (ICH_VTR_EL2.ListRegs + 1 is at most 16).
pub const MAX_LRS: usize = 16;

/// Bit n set = vCPU n needs its list registers refilled (it may be running
/// on another pCPU: the caller kicks it).
pub type VcpuMask = u32;

/// Why a guest MMIO access was refused: the caller injects a data abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioError {
    /// A width this register does not accept.
    BadWidth,
    /// The offset is not a multiple of the access size.
    Unaligned,
    /// Outside the frame, or the redistributor of a vCPU that does not exist.
    OutOfRange,
}

/// What [`VGic::fill_lrs`] put in the list registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fill {
    /// LRs 0..used are valid; the rest were written 0.
    pub used: usize,
    /// More interrupts are deliverable than fit: set ICH_HCR_EL2.UIE.
    pub underflow: bool,
}

/// ICH_LR<n>_EL2.pINTID (when HW = 1) starts at this bit.
pub const LR_PINTID_SHIFT: u32 = 32;
/// Width mask of ICH_LR<n>_EL2.pINTID.
pub const LR_PINTID_MASK: u64 = 0x1fff;
/// ICH_LR<n>_EL2.EOI (HW = 0): maintenance interrupt when deactivated.
pub const LR_EOI: u64 = 1 << 41;
/// ICH_LR<n>_EL2.Priority starts at this bit.
pub const LR_PRIORITY_SHIFT: u32 = 48;
/// ICH_LR<n>_EL2.Group: Group 1.
pub const LR_GROUP1: u64 = 1 << 60;
/// ICH_LR<n>_EL2.HW: deactivation reaches the physical INTID.
pub const LR_HW: u64 = 1 << 61;
/// ICH_LR<n>_EL2.State bit for pending.
pub const LR_PENDING: u64 = 1 << 62;
/// ICH_LR<n>_EL2.State bit for active.
pub const LR_ACTIVE: u64 = 1 << 63;

/// GICD_IIDR and GICR_IIDR: implementer 0, ProductID 0x58, variant and
/// revision 0.
pub const IIDR: u32 = 0x5800_0000;

/// Size of the distributor frame.
pub const DIST_FRAME_SIZE: u64 = 0x1_0000;
/// Size of one redistributor frame (RD_base + SGI_base, no VLPI pages).
pub const REDIST_FRAME_SIZE: u64 = 0x2_0000;
/// Offset of SGI_base within a redistributor frame.
pub const SGI_BASE: u64 = 0x1_0000;

// Distributor registers.
const GICD_CTLR: u64 = 0x0000;
const GICD_TYPER: u64 = 0x0004;
const GICD_IIDR: u64 = 0x0008;
const GICD_TYPER2: u64 = 0x000c;
const GICD_IROUTER: u64 = 0x6000;
const GICD_IROUTER_END: u64 = GICD_IROUTER + 8 * 1020;

const CTLR_ENABLE_GRP0: u32 = 1 << 0;
const CTLR_ENABLE_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;

const TYPER_IDBITS: u32 = 9 << 19;
const TYPER_A3V: u32 = 1 << 24;
const TYPER_RSS: u32 = 1 << 26;

/// IROUTER bits a guest can write: Aff0..Aff2, IRM, Aff3.
const IROUTER_MASK: u64 = 0xff_80ff_ffff;
const IROUTER_IRM: u64 = 1 << 31;
/// Affinity fields shared by MPIDR_EL1 and GICD_IROUTER.
const AFF_MASK: u64 = 0xff_00ff_ffff;

// Redistributor RD_base registers.
const GICR_CTLR: u64 = 0x0000;
const GICR_IIDR: u64 = 0x0004;
const GICR_TYPER: u64 = 0x0008;
const GICR_STATUSR: u64 = 0x0010;
const GICR_WAKER: u64 = 0x0014;
const TYPER_LAST: u64 = 1 << 4;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

// Layout shared by GICD and GICR SGI_base.
const BITS_START: u64 = 0x0080;
const BITS_END: u64 = 0x0400;
const IPRIORITYR: u64 = 0x0400;
const ICFGR: u64 = 0x0c00;
const ID_START: u64 = 0xffd0;

/// Physical INTIDs that may be forwarded with the HW bit: PPIs and SPIs.
const HW_PINTID_MIN: u32 = 16;
const HW_PINTID_END: u32 = 1020;

/// The per-INTID one-bit-per-interrupt registers, in address order from
/// offset 0x80 (IGROUPR) in steps of 0x80.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

impl BitReg {
    const ALL: [BitReg; 7] = [
        BitReg::Group,
        BitReg::SetEnable,
        BitReg::ClearEnable,
        BitReg::SetPending,
        BitReg::ClearPending,
        BitReg::SetActive,
        BitReg::ClearActive,
    ];

    /// The register at `off` (within 0x80..0x400) and its index n.
    fn decode(off: u64) -> Option<(BitReg, u32)> {
        if !(BITS_START..BITS_END).contains(&off) {
            return None;
        }
        let kind = ((off - BITS_START) / 0x80) as usize;
        let n = ((off % 0x80) / 4) as u32;
        BitReg::ALL.get(kind).map(|&r| (r, n))
    }
}

/// Access widths a register accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Widths {
    Word,
    ByteOrWord,
    WordOrDouble,
}

impl Widths {
    fn check(self, size: u8) -> Result<(), MmioError> {
        let ok = match self {
            Widths::Word => size == 4,
            Widths::ByteOrWord => size == 1 || size == 4,
            Widths::WordOrDouble => size == 4 || size == 8,
        };
        if ok { Ok(()) } else { Err(MmioError::BadWidth) }
    }
}

/// A decoded register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// Reserved or not implemented: reads 0, writes ignored.
    Raz,
    DistCtlr,
    DistTyper,
    Iidr,
    Bits(BitReg, u32),
    /// Byte-addressed priorities starting at this INTID.
    Priority(u32),
    /// ICFGR<n> covering 16 INTIDs from this one.
    Icfgr(u32),
    /// IROUTER of this INTID; `true` for the upper 32-bit half.
    Router(u32, bool),
    Id(u64),
    RdTyper(bool),
    Waker,
}

/// Whose registers an access reaches: the distributor's SPIs, or the
/// private interrupts of one vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Dist,
    Redist(usize),
}

/// Where one interrupt's state lives. Only built by [`VGic::slot`], which
/// checks the bounds, so indexing with it cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Private(usize, usize),
    Spi(usize),
}

/// State of one virtual interrupt.
#[derive(Debug, Clone, Copy)]
struct Irq {
    priority: u8,
    enabled: bool,
    group1: bool,
    edge: bool,
    /// Edge: the pending state. Level: the software latch (ISPENDR); the
    /// line adds to it. While in an LR: set-pending events since the fill.
    latch: bool,
    /// The input level last given to `set_line`.
    line: bool,
    /// While in an LR: set-active events since the fill.
    active: bool,
    /// Physical INTID forwarded with the HW bit, active in hardware until
    /// the guest deactivates it or the caller drains it.
    hw: Option<u16>,
    /// vCPU whose drain list gets `hw` if it is dropped.
    hw_vcpu: u8,
    /// The vCPU whose list registers hold it since the last fill.
    lr_vcpu: Option<u8>,
    /// The LR was given the pending state out of the latch (not the line).
    lr_latch: bool,
    /// The LR was given the active state.
    lr_active: bool,
    /// ICPENDR / ICACTIVER written while in an LR.
    clr_pending: bool,
    clr_active: bool,
    /// SPI: the vCPU that activated it; it goes back to that vCPU's LRs.
    active_on: Option<u8>,
}

impl Irq {
    const RESET: Irq = Irq {
        priority: 0,
        enabled: false,
        group1: false,
        edge: false,
        latch: false,
        line: false,
        active: false,
        hw: None,
        hw_vcpu: 0,
        lr_vcpu: None,
        lr_latch: false,
        lr_active: false,
        clr_pending: false,
        clr_active: false,
        active_on: None,
    };

    /// Pending as the guest sees it (an LR's copy as of the fill included).
    fn pending(&self) -> bool {
        self.latch
            || (!self.edge && self.line)
            || (self.lr_vcpu.is_some() && self.lr_latch && !self.clr_pending)
    }

    /// Active as the guest sees it (an LR's copy as of the fill included).
    fn is_active(&self) -> bool {
        self.active || (self.lr_vcpu.is_some() && self.lr_active && !self.clr_active)
    }
}

/// What `fill_lrs` last wrote for one vCPU.
#[derive(Debug, Clone, Copy)]
struct Shadow {
    vals: [u64; MAX_LRS],
    used: usize,
}

impl Shadow {
    const EMPTY: Shadow = Shadow {
        vals: [0; MAX_LRS],
        used: 0,
    };
}

/// The virtual GICv3 of one domain.
#[derive(Debug, Clone)]
pub struct VGic {
    mpidrs: [u64; MAX_VCPUS],
    nr_vcpus: usize,
    nr_spis: u32,
    /// GICD_CTLR EnableGrp0/EnableGrp1.
    ctlr: u32,
    /// GICR_WAKER.ProcessorSleep per vCPU.
    asleep: [bool; MAX_VCPUS],
    private: [[Irq; 32]; MAX_VCPUS],
    spis: [Irq; MAX_SPIS as usize],
    routes: [u64; MAX_SPIS as usize],
    shadow: [Shadow; MAX_VCPUS],
    /// Per vCPU, a bitmap over physical INTIDs 0..1024 to deactivate.
    hw_drops: [[u32; 32]; MAX_VCPUS],
    /// vCPUs whose `hw_drops` row may be non-empty.
    hw_drops_any: VcpuMask,
    kicks: VcpuMask,
    /// Interrupts that may be active, deliverable or in an LR: every
    /// change of an interrupt's state marks it (through `irq_mut`, the
    /// routing and the distributor enables), and `fill_lrs` unmarks the
    /// ones it finds idle. The fill and `has_deliverable` visit only
    /// these, instead of every INTID on every guest entry.
    cand_private: [u32; MAX_VCPUS],
    cand_spis: [u64; MAX_SPIS as usize / 64],
}

/// The set bits of a word, as `base + bit`, lowest first.
struct Bits64(u64, u32);

impl Iterator for Bits64 {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(self.1 + b)
    }
}

fn bit(vcpu: usize) -> VcpuMask {
    if vcpu < MAX_VCPUS { 1 << vcpu } else { 0 }
}

/// Common checks for every access: a size the bus can make, inside the
/// frame, naturally aligned.
fn check_access(offset: u64, size: u8, limit: u64) -> Result<(), MmioError> {
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(MmioError::BadWidth);
    }
    if offset >= limit || offset + u64::from(size) > limit {
        return Err(MmioError::OutOfRange);
    }
    if !offset.is_multiple_of(u64::from(size)) {
        return Err(MmioError::Unaligned);
    }
    Ok(())
}

/// The identification block at 0xFFD0..0x10000 of both frames: PIDR2 says
/// GICv3 (ArchRev 3) with the designer bits that value implies; part
/// number 0; the usual component ID preamble.
fn id_reg(off: u64) -> u32 {
    match off {
        0xffd0 => 0x04, // PIDR4: DES_2
        0xffe0 => 0x00, // PIDR0: part number [7:0]
        0xffe4 => 0xb0, // PIDR1: DES_0, part number [11:8]
        0xffe8 => 0x3b, // PIDR2: ArchRev 3, JEDEC, DES_1
        0xfff0 => 0x0d, // CIDR0..3
        0xfff4 => 0xf0,
        0xfff8 => 0x05,
        0xfffc => 0xb1,
        _ => 0,
    }
}

/// Registers of the distributor frame.
fn decode_dist(off: u64) -> (Reg, Widths) {
    match off {
        GICD_CTLR => (Reg::DistCtlr, Widths::Word),
        GICD_TYPER => (Reg::DistTyper, Widths::Word),
        GICD_IIDR => (Reg::Iidr, Widths::Word),
        GICD_TYPER2 => (Reg::Raz, Widths::Word),
        BITS_START..BITS_END => match BitReg::decode(off) {
            // Bank 0 (SGIs, PPIs) lives in the redistributors when ARE=1.
            Some((r, n)) if n > 0 => (Reg::Bits(r, 32 * n), Widths::Word),
            _ => (Reg::Raz, Widths::Word),
        },
        0x0400..0x0800 => match off - IPRIORITYR {
            first @ 32.. => (Reg::Priority(first as u32), Widths::ByteOrWord),
            _ => (Reg::Raz, Widths::ByteOrWord),
        },
        // ITARGETSR: RAZ/WI with affinity routing.
        0x0800..0x0c00 => (Reg::Raz, Widths::ByteOrWord),
        0x0c00..0x0d00 => match (off - ICFGR) / 4 {
            n @ 2.. => (Reg::Icfgr(16 * n as u32), Widths::Word),
            _ => (Reg::Raz, Widths::Word),
        },
        // IGRPMODR and NSACR: RAZ/WI in a single security state.
        0x0d00..0x0d80 | 0x0e00..0x0f00 => (Reg::Raz, Widths::Word),
        GICD_IROUTER..GICD_IROUTER_END => {
            let intid = ((off - GICD_IROUTER) / 8) as u32;
            if intid < 32 {
                (Reg::Raz, Widths::WordOrDouble)
            } else {
                (Reg::Router(intid, off % 8 == 4), Widths::WordOrDouble)
            }
        }
        ID_START..DIST_FRAME_SIZE => (Reg::Id(off), Widths::Word),
        _ => (Reg::Raz, Widths::WordOrDouble),
    }
}

/// Registers of RD_base.
fn decode_rd(off: u64) -> (Reg, Widths) {
    match off {
        GICR_CTLR | GICR_STATUSR => (Reg::Raz, Widths::Word),
        GICR_IIDR => (Reg::Iidr, Widths::Word),
        GICR_TYPER => (Reg::RdTyper(false), Widths::WordOrDouble),
        0x000c => (Reg::RdTyper(true), Widths::Word),
        GICR_WAKER => (Reg::Waker, Widths::Word),
        ID_START..SGI_BASE => (Reg::Id(off), Widths::Word),
        _ => (Reg::Raz, Widths::WordOrDouble),
    }
}

/// Registers of SGI_base (`off` relative to it).
fn decode_sgi(off: u64) -> (Reg, Widths) {
    match off {
        BITS_START..BITS_END => match BitReg::decode(off) {
            Some((r, 0)) => (Reg::Bits(r, 0), Widths::Word),
            // Extended PPI range: not implemented.
            _ => (Reg::Raz, Widths::Word),
        },
        0x0400..0x0420 => (Reg::Priority((off - IPRIORITYR) as u32), Widths::ByteOrWord),
        0x0c00 => (Reg::Icfgr(0), Widths::Word),
        0x0c04 => (Reg::Icfgr(16), Widths::Word),
        // IGRPMODR0, NSACR: RAZ/WI in a single security state.
        0x0d00 | 0x0e00 => (Reg::Raz, Widths::Word),
        _ => (Reg::Raz, Widths::WordOrDouble),
    }
}

impl VGic {
    /// `mpidrs[n]` = MPIDR_EL1 the guest reads on vCPU n (Aff3..Aff0 used
    /// for routing and GICR_TYPER); at most [`MAX_VCPUS`] are used.
    /// `nr_spis` is rounded down to a multiple of 32 and capped at
    /// [`MAX_SPIS`].
    pub fn new(mpidrs: &[u64], nr_spis: u32) -> Self {
        let mut ids = [0u64; MAX_VCPUS];
        for (dst, src) in ids.iter_mut().zip(mpidrs) {
            *dst = *src;
        }
        let mut gic = VGic {
            mpidrs: ids,
            nr_vcpus: mpidrs.len().min(MAX_VCPUS),
            nr_spis: nr_spis.min(MAX_SPIS) / 32 * 32,
            ctlr: 0,
            asleep: [true; MAX_VCPUS],
            private: [[Irq::RESET; 32]; MAX_VCPUS],
            spis: [Irq::RESET; MAX_SPIS as usize],
            routes: [0; MAX_SPIS as usize],
            shadow: [Shadow::EMPTY; MAX_VCPUS],
            hw_drops: [[0; 32]; MAX_VCPUS],
            hw_drops_any: 0,
            kicks: 0,
            cand_private: [0; MAX_VCPUS],
            cand_spis: [0; MAX_SPIS as usize / 64],
        };
        gic.reset_state();
        gic
    }

    /// Number of vCPUs served.
    pub fn nr_vcpus(&self) -> usize {
        self.nr_vcpus
    }

    /// Number of SPIs (INTIDs 32..32+nr_spis).
    pub fn nr_spis(&self) -> u32 {
        self.nr_spis
    }

    /// Back to the reset state (domain reboot); keeps mpidrs and nr_spis.
    /// Call with every vCPU out of the guest: what `fill_lrs` wrote before is
    /// forgotten (the caller zeroes the LRs), and physical interrupts still
    /// forwarded are handed to [`VGic::drain_hw_deactivations`].
    pub fn reset(&mut self) {
        for v in 0..self.nr_vcpus {
            for n in 0..32 {
                let irq = self.private[v][n];
                if let Some(p) = irq.hw {
                    self.record_drop(irq.hw_vcpu, p);
                }
            }
        }
        for i in 0..self.nr_spis as usize {
            let irq = self.spis[i];
            if let Some(p) = irq.hw {
                self.record_drop(irq.hw_vcpu, p);
            }
        }
        self.reset_state();
    }

    fn reset_state(&mut self) {
        self.ctlr = 0;
        self.asleep = [true; MAX_VCPUS];
        for bank in self.private.iter_mut() {
            for (intid, irq) in bank.iter_mut().enumerate() {
                *irq = Irq::RESET;
                irq.edge = intid < 16;
            }
        }
        self.spis = [Irq::RESET; MAX_SPIS as usize];
        self.routes = [0; MAX_SPIS as usize];
        self.shadow = [Shadow::EMPTY; MAX_VCPUS];
        self.kicks = 0;
        self.mark_all();
    }

    /// Marks `s` as a candidate for the next fill (see `cand_private`).
    fn mark(&mut self, s: Slot) {
        match s {
            Slot::Private(v, n) => self.cand_private[v] |= 1 << n,
            Slot::Spi(i) => self.cand_spis[i / 64] |= 1 << (i % 64),
        }
    }

    fn unmark(&mut self, s: Slot) {
        match s {
            Slot::Private(v, n) => self.cand_private[v] &= !(1 << n),
            Slot::Spi(i) => self.cand_spis[i / 64] &= !(1 << (i % 64)),
        }
    }

    fn marked(&self, s: Slot) -> bool {
        match s {
            Slot::Private(v, n) => self.cand_private[v] & (1 << n) != 0,
            Slot::Spi(i) => self.cand_spis[i / 64] & (1 << (i % 64)) != 0,
        }
    }

    /// Every interrupt becomes a candidate (a change that can affect all).
    fn mark_all(&mut self) {
        self.cand_private = [u32::MAX; MAX_VCPUS];
        self.cand_spis = [u64::MAX; MAX_SPIS as usize / 64];
    }

    /// The marked INTIDs `vcpu` may have to look at, in ascending order:
    /// its own private ones, then every marked SPI.
    fn candidates(&self, vcpu: usize) -> impl Iterator<Item = u32> + use<> {
        let private = self.cand_private[vcpu];
        let spis = self.cand_spis;
        let nr_spis = self.nr_spis;
        Bits64(u64::from(private), 0).chain(
            spis.into_iter()
                .enumerate()
                .flat_map(|(w, word)| Bits64(word, 32 + w as u32 * 64))
                .take_while(move |&intid| intid < 32 + nr_spis),
        )
    }

    fn all_vcpus(&self) -> VcpuMask {
        (1u32 << self.nr_vcpus) - 1
    }

    // ---- interrupt lookup and routing ----

    fn slot(&self, vcpu: usize, intid: u32) -> Option<Slot> {
        if intid < 32 {
            (vcpu < self.nr_vcpus).then_some(Slot::Private(vcpu, intid as usize))
        } else {
            let i = intid - 32;
            (i < self.nr_spis).then_some(Slot::Spi(i as usize))
        }
    }

    fn slot_in(&self, frame: Frame, intid: u32) -> Option<Slot> {
        match frame {
            Frame::Dist if intid >= 32 => self.slot(0, intid),
            Frame::Redist(v) if intid < 32 => self.slot(v, intid),
            _ => None,
        }
    }

    fn irq(&self, s: Slot) -> &Irq {
        match s {
            Slot::Private(v, n) => &self.private[v][n],
            Slot::Spi(i) => &self.spis[i],
        }
    }

    fn irq_mut(&mut self, s: Slot) -> &mut Irq {
        self.mark(s);
        match s {
            Slot::Private(v, n) => &mut self.private[v][n],
            Slot::Spi(i) => &mut self.spis[i],
        }
    }

    fn intid(s: Slot) -> u32 {
        match s {
            Slot::Private(_, n) => n as u32,
            Slot::Spi(i) => i as u32 + 32,
        }
    }

    /// The vCPU an IROUTER value designates, if any.
    fn route_target(&self, route: u64) -> Option<usize> {
        if self.nr_vcpus == 0 {
            return None;
        }
        if route & IROUTER_IRM != 0 {
            let awake = (0..self.nr_vcpus).find(|&v| !self.asleep[v]);
            return Some(awake.unwrap_or(0));
        }
        (0..self.nr_vcpus).find(|&v| self.mpidrs[v] & AFF_MASK == route & AFF_MASK)
    }

    /// The vCPU an interrupt belongs to right now: its own for private
    /// ones; for an SPI the vCPU holding it in an LR, else the one that
    /// activated it, else its route.
    fn target(&self, s: Slot) -> Option<usize> {
        match s {
            Slot::Private(v, _) => Some(v),
            Slot::Spi(i) => {
                let irq = &self.spis[i];
                if let Some(v) = irq.lr_vcpu {
                    return Some(usize::from(v));
                }
                if irq.active
                    && let Some(v) = irq.active_on
                {
                    return Some(usize::from(v));
                }
                self.route_target(self.routes[i])
            }
        }
    }

    fn group_enabled(&self, group1: bool) -> bool {
        let want = if group1 {
            CTLR_ENABLE_GRP1
        } else {
            CTLR_ENABLE_GRP0
        };
        self.ctlr & want != 0
    }

    /// Enabled, pending, its group enabled, and not held back by an active
    /// state that must be deactivated first (level and HW interrupts).
    fn deliverable(&self, irq: &Irq) -> bool {
        irq.enabled
            && self.group_enabled(irq.group1)
            && irq.pending()
            && !(irq.is_active() && (!irq.edge || irq.hw.is_some()))
    }

    /// Who must refill after `s` changed: the vCPU holding it in an LR
    /// (to merge the change), and its target if it is deliverable.
    fn notify(&self, s: Slot) -> VcpuMask {
        let irq = self.irq(s);
        let mut mask = 0;
        if let Some(v) = irq.lr_vcpu {
            mask |= bit(usize::from(v));
        }
        if self.deliverable(irq)
            && let Some(t) = self.target(s)
        {
            mask |= bit(t);
        }
        mask
    }

    fn record_drop(&mut self, vcpu: u8, pintid: u16) {
        let word = usize::from(pintid / 32);
        if let Some(w) = self
            .hw_drops
            .get_mut(usize::from(vcpu))
            .and_then(|row| row.get_mut(word))
        {
            *w |= 1 << (pintid % 32);
            self.hw_drops_any |= bit(usize::from(vcpu));
        }
    }

    /// A HW-backed interrupt that is neither pending, active nor in an LR
    /// will never be deactivated by the guest: hand its physical INTID to
    /// the drain list.
    fn check_hw_drop(&mut self, s: Slot) -> VcpuMask {
        let irq = *self.irq(s);
        match irq.hw {
            Some(p) if irq.lr_vcpu.is_none() && !irq.pending() && !irq.is_active() => {
                self.irq_mut(s).hw = None;
                self.record_drop(irq.hw_vcpu, p);
                bit(usize::from(irq.hw_vcpu))
            }
            _ => 0,
        }
    }

    // ---- per-INTID register helpers ----

    fn bits_read(&self, frame: Frame, first: u32, reg: BitReg) -> u32 {
        let mut value = 0;
        for k in 0..32 {
            let Some(s) = self.slot_in(frame, first + k) else {
                continue;
            };
            let irq = self.irq(s);
            let set = match reg {
                BitReg::Group => irq.group1,
                BitReg::SetEnable | BitReg::ClearEnable => irq.enabled,
                BitReg::SetPending | BitReg::ClearPending => irq.pending(),
                BitReg::SetActive | BitReg::ClearActive => irq.is_active(),
            };
            if set {
                value |= 1 << k;
            }
        }
        value
    }

    fn bits_write(&mut self, frame: Frame, first: u32, reg: BitReg, value: u32) -> VcpuMask {
        let mut mask = 0;
        for k in 0..32 {
            let Some(s) = self.slot_in(frame, first + k) else {
                continue;
            };
            let one = value & (1 << k) != 0;
            if !one && reg != BitReg::Group {
                continue;
            }
            let irq = self.irq_mut(s);
            match reg {
                BitReg::Group => {
                    if irq.group1 == one {
                        continue;
                    }
                    irq.group1 = one;
                }
                BitReg::SetEnable => irq.enabled = true,
                BitReg::ClearEnable => irq.enabled = false,
                BitReg::SetPending => irq.latch = true,
                BitReg::ClearPending => {
                    irq.latch = false;
                    irq.clr_pending |= irq.lr_vcpu.is_some();
                }
                BitReg::SetActive => irq.active = true,
                BitReg::ClearActive => {
                    irq.active = false;
                    irq.active_on = None;
                    irq.clr_active |= irq.lr_vcpu.is_some();
                }
            }
            mask |= self.notify(s) | self.check_hw_drop(s);
        }
        mask
    }

    fn priority_read(&self, frame: Frame, first: u32, size: u8) -> u64 {
        let mut value = 0;
        for i in 0..u32::from(size) {
            if let Some(s) = self.slot_in(frame, first + i) {
                value |= u64::from(self.irq(s).priority) << (8 * i);
            }
        }
        value
    }

    fn priority_write(&mut self, frame: Frame, first: u32, size: u8, value: u64) -> VcpuMask {
        let mut mask = 0;
        for i in 0..u32::from(size) {
            if let Some(s) = self.slot_in(frame, first + i) {
                let prio = (value >> (8 * i)) as u8;
                let irq = self.irq_mut(s);
                if irq.priority != prio {
                    irq.priority = prio;
                    mask |= self.notify(s);
                }
            }
        }
        mask
    }

    fn icfgr_read(&self, frame: Frame, first: u32) -> u32 {
        let mut value = 0;
        for k in 0..16 {
            if let Some(s) = self.slot_in(frame, first + k)
                && self.irq(s).edge
            {
                value |= 2 << (2 * k);
            }
        }
        value
    }

    fn icfgr_write(&mut self, frame: Frame, first: u32, value: u32) -> VcpuMask {
        let mut mask = 0;
        for k in 0..16 {
            let intid = first + k;
            // SGIs are always edge-triggered.
            if intid < 16 {
                continue;
            }
            if let Some(s) = self.slot_in(frame, intid) {
                let edge = value & (2 << (2 * k)) != 0;
                let irq = self.irq_mut(s);
                if irq.edge != edge {
                    irq.edge = edge;
                    mask |= self.notify(s) | self.check_hw_drop(s);
                }
            }
        }
        mask
    }

    fn router_read(&self, intid: u32) -> u64 {
        match self.slot(0, intid) {
            Some(Slot::Spi(i)) => self.routes[i],
            _ => 0,
        }
    }

    fn router_write(&mut self, intid: u32, value: u64) -> VcpuMask {
        match self.slot(0, intid) {
            Some(s @ Slot::Spi(i)) => {
                self.routes[i] = value & IROUTER_MASK;
                self.mark(s);
                self.notify(s)
            }
            _ => 0,
        }
    }

    fn gicr_typer(&self, vcpu: usize) -> u64 {
        let m = self.mpidrs[vcpu];
        let aff = (m & 0xff_ffff) | ((m >> 32) & 0xff) << 24;
        let mut typer = aff << 32 | (vcpu as u64) << 8;
        if vcpu + 1 == self.nr_vcpus {
            typer |= TYPER_LAST;
        }
        typer
    }

    // ---- MMIO ----

    fn read_reg(&self, frame: Frame, reg: Reg, size: u8) -> u64 {
        match reg {
            Reg::Raz => 0,
            Reg::DistCtlr => u64::from(self.ctlr | CTLR_ARE | CTLR_DS),
            Reg::DistTyper => {
                let cpus = (self.nr_vcpus.max(1) - 1) as u32 & 7;
                u64::from((self.nr_spis / 32) | cpus << 5 | TYPER_IDBITS | TYPER_A3V | TYPER_RSS)
            }
            Reg::Iidr => u64::from(IIDR),
            Reg::Bits(r, first) => u64::from(self.bits_read(frame, first, r)),
            Reg::Priority(first) => self.priority_read(frame, first, size),
            Reg::Icfgr(first) => u64::from(self.icfgr_read(frame, first)),
            Reg::Router(intid, high) => {
                let v = self.router_read(intid);
                match (size, high) {
                    (8, _) => v,
                    (_, false) => v & 0xffff_ffff,
                    (_, true) => v >> 32,
                }
            }
            Reg::Id(off) => u64::from(id_reg(off)),
            Reg::RdTyper(high) => match frame {
                Frame::Redist(v) => {
                    let t = self.gicr_typer(v);
                    match (size, high) {
                        (8, _) => t,
                        (_, false) => t & 0xffff_ffff,
                        (_, true) => t >> 32,
                    }
                }
                Frame::Dist => 0,
            },
            Reg::Waker => match frame {
                Frame::Redist(v) if self.asleep[v] => {
                    u64::from(WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP)
                }
                _ => 0,
            },
        }
    }

    fn write_reg(&mut self, frame: Frame, reg: Reg, size: u8, value: u64) -> VcpuMask {
        let word = value as u32;
        match reg {
            Reg::DistCtlr => {
                let new = word & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1);
                if new == self.ctlr {
                    return 0;
                }
                self.ctlr = new;
                self.mark_all();
                self.all_vcpus()
            }
            Reg::Bits(r, first) => self.bits_write(frame, first, r, word),
            Reg::Priority(first) => self.priority_write(frame, first, size, value),
            Reg::Icfgr(first) => self.icfgr_write(frame, first, word),
            Reg::Router(intid, high) => {
                let old = self.router_read(intid);
                let new = match (size, high) {
                    (8, _) => value,
                    (_, false) => (old & !0xffff_ffff) | u64::from(word),
                    (_, true) => (old & 0xffff_ffff) | u64::from(word) << 32,
                };
                self.router_write(intid, new)
            }
            Reg::Waker => match frame {
                Frame::Redist(v) => {
                    let sleep = word & WAKER_PROCESSOR_SLEEP != 0;
                    if self.asleep[v] == sleep {
                        return 0;
                    }
                    self.asleep[v] = sleep;
                    // 1-of-N SPIs may now go to another vCPU.
                    self.mark_all();
                    self.all_vcpus()
                }
                Frame::Dist => 0,
            },
            Reg::Raz | Reg::DistTyper | Reg::Iidr | Reg::Id(_) | Reg::RdTyper(_) => 0,
        }
    }

    fn redist_decode(&self, vcpu: usize, offset: u64, size: u8) -> Result<(Reg, u8), MmioError> {
        check_access(offset, size, REDIST_FRAME_SIZE)?;
        if vcpu >= self.nr_vcpus {
            return Err(MmioError::OutOfRange);
        }
        let (reg, widths) = if offset < SGI_BASE {
            decode_rd(offset)
        } else {
            decode_sgi(offset - SGI_BASE)
        };
        widths.check(size)?;
        Ok((reg, size))
    }

    /// Distributor frame (64 KiB), `offset` from its base, size 1/2/4/8.
    pub fn dist_read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        check_access(offset, size, DIST_FRAME_SIZE)?;
        let (reg, widths) = decode_dist(offset);
        widths.check(size)?;
        Ok(self.read_reg(Frame::Dist, reg, size))
    }

    /// Distributor frame write; returns who must refill.
    pub fn dist_write(&mut self, offset: u64, size: u8, value: u64) -> Result<VcpuMask, MmioError> {
        check_access(offset, size, DIST_FRAME_SIZE)?;
        let (reg, widths) = decode_dist(offset);
        widths.check(size)?;
        Ok(self.write_reg(Frame::Dist, reg, size, value))
    }

    /// Redistributor of `vcpu`: `offset` within its 128 KiB frame (RD_base
    /// at 0, SGI_base at 0x10000).
    pub fn redist_read(&mut self, vcpu: usize, offset: u64, size: u8) -> Result<u64, MmioError> {
        let (reg, size) = self.redist_decode(vcpu, offset, size)?;
        Ok(self.read_reg(Frame::Redist(vcpu), reg, size))
    }

    /// Redistributor write; returns who must refill.
    pub fn redist_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<VcpuMask, MmioError> {
        let (reg, size) = self.redist_decode(vcpu, offset, size)?;
        Ok(self.write_reg(Frame::Redist(vcpu), reg, size, value))
    }

    // ---- interrupt sources ----

    /// A trapped write of ICC_SGI1R_EL1 by vCPU `sender` (TargetList[15:0],
    /// Aff1[23:16], INTID[27:24], Aff2[39:32], IRM[40] = all but self,
    /// RS[47:44], Aff3[55:48]). Targets that match no vCPU are ignored; a bad
    /// `sender` does nothing.
    pub fn send_sgi(&mut self, sender: usize, sgi1r: u64) -> VcpuMask {
        if sender >= self.nr_vcpus {
            return 0;
        }
        let intid = ((sgi1r >> 24) & 0xf) as u32;
        let all_but_self = sgi1r & (1 << 40) != 0;
        let targets = sgi1r & 0xffff;
        let rs = (sgi1r >> 44) & 0xf;
        // Aff3.Aff2.Aff1 of the request, laid out as in MPIDR_EL1.
        let upper =
            (sgi1r >> 16) & 0xff | ((sgi1r >> 32) & 0xff) << 8 | ((sgi1r >> 48) & 0xff) << 24;
        let mut mask = 0;
        for v in 0..self.nr_vcpus {
            let hit = if all_but_self {
                v != sender
            } else {
                let m = self.mpidrs[v];
                let m_upper = (m >> 8) & 0xffff | ((m >> 32) & 0xff) << 24;
                let aff0 = m & 0xff;
                m_upper == upper && aff0 >> 4 == rs && targets & (1 << (aff0 & 0xf)) != 0
            };
            if hit && let Some(s) = self.slot(v, intid) {
                self.irq_mut(s).latch = true;
                mask |= self.notify(s);
            }
        }
        mask
    }

    /// Level of a software input line (e.g. the vPL011 SPI). Level-sensitive
    /// interrupts are pending while it is high (or latched); edge-triggered
    /// ones become pending on a rising edge. `vcpu` selects the bank for
    /// private INTIDs (<32) and is ignored for SPIs.
    pub fn set_line(&mut self, vcpu: usize, intid: u32, level: bool) -> VcpuMask {
        let Some(s) = self.slot(vcpu, intid) else {
            return 0;
        };
        let irq = self.irq_mut(s);
        if irq.line == level {
            // Nothing changed: no state to update, nobody to kick (a device
            // model reports its level after every access).
            return 0;
        }
        let rising = level && !irq.line;
        irq.line = level;
        if irq.edge && rising {
            irq.latch = true;
        }
        self.notify(s) | self.check_hw_drop(s)
    }

    /// Makes a private or shared interrupt pending as a purely virtual
    /// interrupt, the way a write to ISPENDR would (the hypervisor's own
    /// sources, e.g. the Xen event-channel upcall PPI). Returns the vCPUs
    /// to kick; nothing for an INTID this vGIC does not have.
    pub fn raise(&mut self, vcpu: usize, intid: u32) -> VcpuMask {
        if vcpu >= self.nr_vcpus {
            return 0;
        }
        let Some(s) = self.slot(vcpu, intid) else {
            return 0;
        };
        self.irq_mut(s).latch = true;
        self.notify(s)
    }

    /// A physical interrupt `pintid` the hypervisor acknowledged
    /// (priority-dropped, not deactivated) is forwarded to `vcpu` as `intid`
    /// with the LR HW bit, so the guest's deactivation reaches it.
    ///
    /// `pintid` must be a PPI or SPI (16..1020) and `intid` a PPI or an SPI
    /// of this vGIC, else nothing happens. For an SPI, delivery follows its
    /// IROUTER as usual; `vcpu` only names whose drain list gets `pintid` if
    /// the model drops it (an SPI can be deactivated from any pCPU, a PPI
    /// only on its own). If `intid` already forwards a
    /// different physical interrupt, the new one is made pending as a purely
    /// virtual interrupt and `pintid` goes to the drain list at once.
    pub fn inject_hw(&mut self, vcpu: usize, intid: u32, pintid: u32) -> VcpuMask {
        if !(HW_PINTID_MIN..HW_PINTID_END).contains(&pintid) || intid < 16 || vcpu >= self.nr_vcpus
        {
            return 0;
        }
        let Some(s) = self.slot(vcpu, intid) else {
            return 0;
        };
        let p = pintid as u16;
        let v = vcpu as u8;
        let irq = self.irq_mut(s);
        irq.latch = true;
        let mut mask = 0;
        match irq.hw {
            None => {
                irq.hw = Some(p);
                irq.hw_vcpu = v;
            }
            Some(old) if old == p => {}
            Some(_) => {
                self.record_drop(v, p);
                mask |= bit(vcpu);
            }
        }
        mask | self.notify(s)
    }

    /// Cuts the link between `intid` of `vcpu` and the physical interrupt it
    /// forwards, keeping the virtual pending and active state: used when
    /// the vCPU leaves its CPU while the guest still owes the deactivation
    /// (its virtual timer, say). Returns the physical INTID, which the
    /// caller must now deactivate itself; None when nothing is forwarded or
    /// the interrupt sits in a list register (call after `sync_lrs`).
    pub fn unforward(&mut self, vcpu: usize, intid: u32) -> Option<u32> {
        if vcpu >= self.nr_vcpus {
            return None;
        }
        let s = self.slot(vcpu, intid)?;
        let irq = self.irq_mut(s);
        if irq.lr_vcpu.is_some() {
            return None;
        }
        irq.hw.take().map(u32::from)
    }

    // ---- list registers ----

    /// On guest exit: the values of the list registers the last `fill_lrs`
    /// wrote (same order; entries missing from `lrs`, or whose vINTID does
    /// not match, are taken as unchanged).
    pub fn sync_lrs(&mut self, vcpu: usize, lrs: &[u64]) {
        let Some(shadow) = self.shadow.get(vcpu).copied() else {
            return;
        };
        self.shadow[vcpu].used = 0;
        for (i, &stored) in shadow.vals.iter().take(shadow.used).enumerate() {
            let live = match lrs.get(i) {
                Some(&v) if v as u32 == stored as u32 => v,
                _ => stored,
            };
            self.take_back(vcpu, stored, live);
        }
    }

    /// Merge one LR's final state with what happened in the model meanwhile.
    fn take_back(&mut self, vcpu: usize, stored: u64, live: u64) {
        let Some(s) = self.slot(vcpu, stored as u32) else {
            return;
        };
        if self.irq(s).lr_vcpu != Some(vcpu as u8) {
            return;
        }
        let lr_pending = live & LR_PENDING != 0;
        let lr_active = live & LR_ACTIVE != 0;
        let irq = self.irq_mut(s);
        // A pending state the LR got from the line is not kept: the line
        // itself says whether it still holds.
        if lr_pending && irq.lr_latch && !irq.clr_pending {
            irq.latch = true;
        }
        let still_active = lr_active && !irq.clr_active;
        if still_active {
            irq.active = true;
        }
        // HW=1 and invalid: the guest deactivated, and so did the hardware.
        if stored & LR_HW != 0 && !lr_pending && !lr_active {
            irq.hw = None;
        }
        if matches!(s, Slot::Spi(_)) {
            if !irq.active {
                irq.active_on = None;
            } else if still_active {
                irq.active_on = Some(vcpu as u8);
            }
        }
        irq.lr_vcpu = None;
        irq.lr_latch = false;
        irq.lr_active = false;
        irq.clr_pending = false;
        irq.clr_active = false;
        let dropped = self.check_hw_drop(s);
        self.kicks |= dropped & !bit(vcpu);
        if let Some(t) = self.target(s)
            && t != vcpu
        {
            let irq = self.irq(s);
            if irq.active || self.deliverable(irq) {
                self.kicks |= bit(t);
            }
        }
    }

    /// vCPUs that need a refill because of what earlier `sync_lrs` calls
    /// took back (e.g. an SPI re-routed while it sat in this vCPU's LRs is
    /// now pending for another); cleared by the call.
    pub fn take_kicks(&mut self) -> VcpuMask {
        core::mem::take(&mut self.kicks)
    }

    /// Before guest entry: fill `lrs` (one slot per hardware LR, 1..=16;
    /// beyond 16 only zeroed) with every active interrupt of `vcpu` first,
    /// then deliverable pending ones by priority (lower value first, ties by
    /// lower INTID). Unused entries are written 0. A previous fill not yet
    /// synced is taken back as unchanged first.
    pub fn fill_lrs(&mut self, vcpu: usize, lrs: &mut [u64]) -> Fill {
        lrs.fill(0);
        if vcpu >= self.nr_vcpus || lrs.is_empty() {
            return Fill::default();
        }
        let unsynced = self.shadow[vcpu];
        if unsynced.used > 0 {
            let vals = unsynced.vals;
            self.sync_lrs(vcpu, &vals[..unsynced.used.min(MAX_LRS)]);
        }
        if self.cand_private[vcpu] == 0 && self.cand_spis.iter().all(|&w| w == 0) {
            // Nothing marked: nothing to deliver (the common exit).
            self.shadow[vcpu].used = 0;
            return Fill::default();
        }
        let cap = lrs.len().min(MAX_LRS);
        // Best candidates so far, sorted by (class, priority, INTID).
        let mut best = [(0u8, 0u8, 0u32); MAX_LRS];
        let mut len = 0;
        let mut total = 0usize;
        for intid in self.candidates(vcpu) {
            let Some(s) = self.slot(vcpu, intid) else {
                continue;
            };
            let irq = self.irq(s);
            if irq.lr_vcpu.is_some() {
                continue;
            }
            if !irq.active && !self.deliverable(irq) {
                // Idle until something changes its state, which marks it.
                self.unmark(s);
                continue;
            }
            if self.target(s) != Some(vcpu) {
                continue;
            }
            let irq = self.irq(s);
            let class = if irq.active {
                0
            } else if self.deliverable(irq) {
                1
            } else {
                continue;
            };
            total += 1;
            let key = (class, irq.priority, intid);
            let pos = best[..len].iter().position(|k| key < *k).unwrap_or(len);
            if pos >= cap {
                continue;
            }
            if len < cap {
                len += 1;
            }
            best.copy_within(pos..len - 1, pos + 1);
            best[pos] = key;
        }
        let mut used = 0;
        for &(_, _, intid) in &best[..len] {
            let Some(s) = self.slot(vcpu, intid) else {
                continue;
            };
            let value = self.load(vcpu, s);
            if let Some(lr) = lrs.get_mut(used) {
                *lr = value;
                self.shadow[vcpu].vals[used] = value;
                used += 1;
            }
        }
        self.shadow[vcpu].used = used;
        Fill {
            used,
            underflow: total > used,
        }
    }

    /// Move one interrupt's state into an LR value for `vcpu`.
    fn load(&mut self, vcpu: usize, s: Slot) -> u64 {
        let pend = self.deliverable(self.irq(s));
        let intid = Self::intid(s);
        let irq = self.irq_mut(s);
        let mut lr = u64::from(intid) | u64::from(irq.priority) << LR_PRIORITY_SHIFT;
        if irq.group1 {
            lr |= LR_GROUP1;
        }
        if let Some(p) = irq.hw {
            lr |= LR_HW | (u64::from(p) & LR_PINTID_MASK) << LR_PINTID_SHIFT;
        } else if !irq.edge && (irq.line || (!pend && irq.latch)) {
            // After the guest's EOI the hypervisor must look again: the
            // line is high (sample it), or a latched pending state waits
            // behind the active one (a level interrupt is not given to
            // the LR as active and pending). A level interrupt delivered
            // through its latch alone (ISPENDR, `raise`: the event-channel
            // PPI) is done once EOI'd and costs no maintenance exit; a
            // later change of its line or latch kicks the vCPU anyway.
            lr |= LR_EOI;
        }
        irq.lr_latch = false;
        irq.lr_active = false;
        if pend {
            lr |= LR_PENDING;
            irq.lr_latch = irq.latch;
            irq.latch = false;
        }
        if irq.active {
            lr |= LR_ACTIVE;
            irq.lr_active = true;
            irq.active = false;
        }
        irq.lr_vcpu = Some(vcpu as u8);
        irq.clr_pending = false;
        irq.clr_active = false;
        lr
    }

    /// Is anything deliverable (enabled, pending, group enabled in
    /// GICD_CTLR) for `vcpu`? Used to end a trapped WFI.
    pub fn has_deliverable(&self, vcpu: usize) -> bool {
        if vcpu >= self.nr_vcpus {
            return false;
        }
        self.candidates(vcpu).any(|intid| {
            self.slot(vcpu, intid)
                .is_some_and(|s| self.target(s) == Some(vcpu) && self.deliverable(self.irq(s)))
        })
    }

    /// Self-check for tests and fuzzing: every interrupt a fill could pick
    /// (active or deliverable, not in an LR) is marked as a candidate, so
    /// visiting only the candidates loses nothing.
    pub fn candidates_cover_work(&self) -> bool {
        (0..self.nr_vcpus).all(|v| {
            (0..32 + self.nr_spis).all(|intid| {
                let Some(s) = self.slot(v, intid) else {
                    return true;
                };
                let irq = self.irq(s);
                let work = irq.lr_vcpu.is_none() && (irq.active || self.deliverable(irq));
                !work || self.marked(s)
            })
        })
    }

    /// HW-backed interrupts the model dropped while they were not in a list
    /// register (the guest cleared their pending or active state, or the
    /// domain was reset): the caller must deactivate these physical INTIDs
    /// itself. Calls `f(pintid)` for each and forgets them.
    pub fn drain_hw_deactivations(&mut self, vcpu: usize, f: &mut dyn FnMut(u32)) {
        if self.hw_drops_any & bit(vcpu) == 0 {
            return;
        }
        self.hw_drops_any &= !bit(vcpu);
        let Some(row) = self.hw_drops.get_mut(vcpu) else {
            return;
        };
        let words = core::mem::take(row);
        for (w, &word) in words.iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                let b = rest.trailing_zeros();
                rest &= rest - 1;
                f(w as u32 * 32 + b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GICD_ISENABLER: u64 = 0x100;
    const GICD_ICENABLER: u64 = 0x180;
    const GICD_ISPENDR: u64 = 0x200;
    const GICD_ICPENDR: u64 = 0x280;
    const GICD_ISACTIVER: u64 = 0x300;
    const GICD_ICACTIVER: u64 = 0x380;
    const GICD_IGROUPR: u64 = 0x080;
    const SGI: u64 = SGI_BASE;

    /// MPIDR_EL1 as a guest reads it: bit 31 RES1.
    fn mpidr(aff3: u64, aff2: u64, aff1: u64, aff0: u64) -> u64 {
        1 << 31 | aff3 << 32 | aff2 << 16 | aff1 << 8 | aff0
    }

    fn two() -> VGic {
        VGic::new(&[mpidr(0, 0, 0, 0), mpidr(0, 0, 0, 1)], 64)
    }

    fn four() -> VGic {
        VGic::new(
            &[
                mpidr(0, 0, 0, 0),
                mpidr(0, 0, 0, 1),
                mpidr(0, 0, 1, 0),
                mpidr(1, 0, 0, 17),
            ],
            64,
        )
    }

    fn dw(g: &mut VGic, off: u64, v: u64) -> VcpuMask {
        g.dist_write(off, 4, v).unwrap()
    }

    fn dr(g: &mut VGic, off: u64) -> u64 {
        g.dist_read(off, 4).unwrap()
    }

    fn rw(g: &mut VGic, vcpu: usize, off: u64, v: u64) -> VcpuMask {
        g.redist_write(vcpu, off, 4, v).unwrap()
    }

    fn rr(g: &mut VGic, vcpu: usize, off: u64) -> u64 {
        g.redist_read(vcpu, off, 4).unwrap()
    }

    /// Register offset and bit of an INTID in a one-bit-per-INTID register.
    fn reg_bit(base: u64, intid: u32) -> (u64, u64) {
        (base + 4 * u64::from(intid / 32), 1 << (intid % 32))
    }

    /// Enable both groups; make SPI `intid` group 1, enabled, at `prio`,
    /// routed to `vcpu`.
    fn spi(g: &mut VGic, intid: u32, prio: u8, vcpu: usize) {
        dw(g, GICD_CTLR, 3);
        let (off, b) = reg_bit(GICD_IGROUPR, intid);
        let grp = dr(g, off);
        dw(g, off, grp | b);
        let (off, b) = reg_bit(GICD_ISENABLER, intid);
        dw(g, off, b);
        g.dist_write(IPRIORITYR + u64::from(intid), 1, u64::from(prio))
            .unwrap();
        let aff = g.mpidrs[vcpu] & AFF_MASK;
        g.dist_write(GICD_IROUTER + 8 * u64::from(intid), 8, aff)
            .unwrap();
    }

    /// Enable both groups; make private `intid` of `vcpu` group 1, enabled.
    fn ppi(g: &mut VGic, vcpu: usize, intid: u32, prio: u8) {
        dw(g, GICD_CTLR, 3);
        let grp = rr(g, vcpu, SGI + 0x80);
        rw(g, vcpu, SGI + 0x80, grp | 1 << intid);
        rw(g, vcpu, SGI + 0x100, 1 << intid);
        g.redist_write(
            vcpu,
            SGI + IPRIORITYR + u64::from(intid),
            1,
            u64::from(prio),
        )
        .unwrap();
    }

    /// Make `intid` edge-triggered (SPIs and PPIs reset to level).
    fn set_edge(g: &mut VGic, intid: u32) {
        let off = ICFGR + 4 * u64::from(intid / 16);
        let cfg = dr(g, off);
        dw(g, off, cfg | 2 << (2 * (intid % 16)));
    }

    fn pend_spi(g: &mut VGic, intid: u32) -> VcpuMask {
        let (off, b) = reg_bit(GICD_ISPENDR, intid);
        dw(g, off, b)
    }

    fn fill(g: &mut VGic, vcpu: usize, n: usize) -> ([u64; MAX_LRS], Fill) {
        let mut lrs = [0xdead_beef_u64; MAX_LRS];
        let f = g.fill_lrs(vcpu, &mut lrs[..n]);
        for lr in &lrs[f.used..n] {
            assert_eq!(*lr, 0);
        }
        (lrs, f)
    }

    fn vintid(lr: u64) -> u32 {
        lr as u32
    }

    fn state(lr: u64) -> u64 {
        lr >> 62
    }

    /// The guest acknowledges: pending → active.
    fn ack(lr: u64) -> u64 {
        (lr & !LR_PENDING) | LR_ACTIVE
    }

    /// The guest deactivates: active cleared (invalid if nothing else).
    fn deact(lr: u64) -> u64 {
        lr & !LR_ACTIVE
    }

    fn drained(g: &mut VGic, vcpu: usize) -> ([u32; 8], usize) {
        let mut out = [0u32; 8];
        let mut n = 0;
        g.drain_hw_deactivations(vcpu, &mut |p| {
            if n < out.len() {
                out[n] = p;
            }
            n += 1;
        });
        (out, n)
    }

    // ---- identification registers ----

    #[test]
    fn gicd_typer_iidr_and_ids() {
        let mut g = four();
        let typer = dr(&mut g, GICD_TYPER);
        assert_eq!(typer & 0x1f, 2, "ITLinesNumber = (32+64)/32 - 1");
        assert_eq!((typer >> 5) & 7, 3, "CPUNumber");
        assert_eq!((typer >> 19) & 0x1f, 9, "IDbits");
        assert_eq!(typer & (1 << 10), 0, "SecurityExtn");
        assert_eq!(typer & (1 << 16 | 1 << 17 | 1 << 18), 0, "MBIS, LPIS, DVIS");
        assert_ne!(typer & (1 << 24), 0, "A3V");
        assert_ne!(typer & (1 << 26), 0, "RSS");
        assert_eq!(dr(&mut g, GICD_TYPER2), 0);
        assert_eq!(dr(&mut g, GICD_IIDR), u64::from(IIDR));
        assert_eq!(dr(&mut g, 0xffe8), 0x3b);
        assert_eq!((dr(&mut g, 0xffe8) >> 4) & 0xf, 3, "ArchRev");
        assert_eq!(dr(&mut g, 0xfff0), 0x0d);
        assert_eq!(dr(&mut g, 0xfffc), 0xb1);
        // Read-only: writes ignored.
        assert_eq!(dw(&mut g, GICD_TYPER, 0), 0);
        assert_eq!(dr(&mut g, GICD_TYPER), typer);

        let mut max = VGic::new(&[0], MAX_SPIS);
        assert_eq!(dr(&mut max, GICD_TYPER) & 0x1f, 8);
        let mut none = VGic::new(&[0], 0);
        assert_eq!(dr(&mut none, GICD_TYPER) & 0x1f, 0);
    }

    #[test]
    fn gicd_ctlr_rao_and_enables() {
        let mut g = two();
        assert_eq!(dr(&mut g, GICD_CTLR), u64::from(CTLR_ARE | CTLR_DS));
        assert_eq!(dw(&mut g, GICD_CTLR, 0xffff_ffff), 0b11);
        let v = dr(&mut g, GICD_CTLR);
        assert_eq!(v, 0x53, "grp0, grp1, ARE, DS; RWP reads 0");
        assert_eq!(dw(&mut g, GICD_CTLR, 0xffff_ffff), 0, "no change, no kick");
        dw(&mut g, GICD_CTLR, 0);
        assert_eq!(dr(&mut g, GICD_CTLR), 0x50);
    }

    #[test]
    fn gicr_typer_affinity_number_and_last() {
        let mut g = four();
        for v in 0..4 {
            let t = g.redist_read(v, GICR_TYPER, 8).unwrap();
            let lo = rr(&mut g, v, GICR_TYPER);
            let hi = rr(&mut g, v, GICR_TYPER + 4);
            assert_eq!(t, hi << 32 | lo);
            assert_eq!((t >> 8) & 0xffff, v as u64, "Processor_Number");
            assert_eq!(t & TYPER_LAST != 0, v == 3, "Last only on the last vCPU");
            assert_eq!(t & 0b1011, 0, "no PLPIS, VLPIS, DirectLPI");
        }
        assert_eq!(rr(&mut g, 2, GICR_TYPER + 4), 0x0000_0100, "Aff1 = 1");
        assert_eq!(
            rr(&mut g, 3, GICR_TYPER + 4),
            0x0100_0011,
            "Aff3 = 1, Aff0 = 17"
        );
        assert_eq!(rr(&mut g, 1, 0xffe8), 0x3b, "GICR_PIDR2");
        assert_eq!(rr(&mut g, 1, GICR_IIDR), u64::from(IIDR));
        assert_eq!(rr(&mut g, 1, GICR_CTLR), 0);
        assert_eq!(rr(&mut g, 1, GICR_STATUSR), 0);
        assert_eq!(g.redist_read(4, GICR_TYPER, 8), Err(MmioError::OutOfRange));
        let mut one = VGic::new(&[mpidr(0, 0, 0, 0)], 32);
        assert_ne!(one.redist_read(0, GICR_TYPER, 8).unwrap() & TYPER_LAST, 0);
    }

    #[test]
    fn gicr_waker_sleep_mirrors_children() {
        let mut g = two();
        assert_eq!(rr(&mut g, 0, GICR_WAKER), 0b110, "asleep at reset");
        rw(&mut g, 0, GICR_WAKER, 0);
        assert_eq!(rr(&mut g, 0, GICR_WAKER), 0, "ChildrenAsleep follows");
        assert_eq!(rr(&mut g, 1, GICR_WAKER), 0b110, "per redistributor");
        rw(&mut g, 0, GICR_WAKER, 0b110);
        assert_eq!(rr(&mut g, 0, GICR_WAKER), 0b110);
        rw(&mut g, 0, GICR_WAKER, 0b100);
        assert_eq!(rr(&mut g, 0, GICR_WAKER), 0, "ChildrenAsleep is read-only");
    }

    // ---- per-INTID registers ----

    #[test]
    fn spi_enable_pending_active_round_trip() {
        let mut g = two();
        for intid in [32u32, 33, 63, 64, 95] {
            for (set, clear) in [
                (GICD_ISENABLER, GICD_ICENABLER),
                (GICD_ISPENDR, GICD_ICPENDR),
                (GICD_ISACTIVER, GICD_ICACTIVER),
            ] {
                let (s_off, b) = reg_bit(set, intid);
                let (c_off, _) = reg_bit(clear, intid);
                assert_eq!(dr(&mut g, s_off) & b, 0);
                dw(&mut g, s_off, b);
                assert_eq!(dr(&mut g, s_off), b, "only that bit, via set");
                assert_eq!(dr(&mut g, c_off), b, "and via clear");
                dw(&mut g, s_off, 0);
                assert_eq!(dr(&mut g, s_off), b, "writing 0 does nothing");
                dw(&mut g, c_off, b);
                assert_eq!(dr(&mut g, s_off), 0);
            }
        }
        // SPIs beyond nr_spis (64 → INTIDs up to 95) are RAZ/WI.
        dw(&mut g, GICD_ISENABLER + 12, u64::MAX);
        assert_eq!(dr(&mut g, GICD_ISENABLER + 12), 0);
        // Group round trip, both values written.
        dw(&mut g, GICD_IGROUPR + 4, 0xa5a5_a5a5);
        assert_eq!(dr(&mut g, GICD_IGROUPR + 4), 0xa5a5_a5a5);
        dw(&mut g, GICD_IGROUPR + 4, 0x0000_ffff);
        assert_eq!(dr(&mut g, GICD_IGROUPR + 4), 0x0000_ffff);
    }

    #[test]
    fn distributor_bank0_is_raz_wi() {
        let mut g = two();
        for base in [0x80, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380] {
            dw(&mut g, base, u64::MAX);
            assert_eq!(dr(&mut g, base), 0);
        }
        dw(&mut g, IPRIORITYR, u64::MAX);
        assert_eq!(dr(&mut g, IPRIORITYR), 0);
        dw(&mut g, ICFGR + 4, u64::MAX);
        assert_eq!(dr(&mut g, ICFGR + 4), 0);
        assert_eq!(rr(&mut g, 0, SGI + 0x100), 0, "redistributor untouched");
        assert_eq!(rr(&mut g, 0, SGI + 0x80), 0);
    }

    #[test]
    fn banked_sgi_ppi_round_trip_per_vcpu() {
        let mut g = two();
        for off in [0x80u64, 0x100, 0x200, 0x300] {
            let clear = if off == 0x80 { 0x80 } else { off + 0x80 };
            rw(&mut g, 0, SGI + off, 0x0800_0002);
            assert_eq!(rr(&mut g, 0, SGI + off), 0x0800_0002);
            assert_eq!(rr(&mut g, 1, SGI + off), 0, "vCPU 1 bank untouched");
            rw(&mut g, 1, SGI + off, 0x8000_0000);
            assert_eq!(rr(&mut g, 0, SGI + off), 0x0800_0002);
            if off == 0x80 {
                rw(&mut g, 0, SGI + clear, 0);
            } else {
                rw(&mut g, 0, SGI + clear, 0x0800_0002);
            }
            assert_eq!(rr(&mut g, 0, SGI + off), 0);
            assert_eq!(rr(&mut g, 1, SGI + off), 0x8000_0000);
        }
        // IGRPMODR0 and NSACR are RAZ/WI.
        rw(&mut g, 0, SGI + 0xd00, u64::MAX);
        rw(&mut g, 0, SGI + 0xe00, u64::MAX);
        assert_eq!(rr(&mut g, 0, SGI + 0xd00), 0);
        assert_eq!(rr(&mut g, 0, SGI + 0xe00), 0);
        // Extended PPI registers are absent.
        rw(&mut g, 0, SGI + 0x104, u64::MAX);
        assert_eq!(rr(&mut g, 0, SGI + 0x104), 0);
    }

    #[test]
    fn priority_byte_and_word_access() {
        let mut g = two();
        g.dist_write(IPRIORITYR + 33, 1, 0xa0).unwrap();
        assert_eq!(dr(&mut g, IPRIORITYR + 32), 0x0000_a000);
        dw(&mut g, IPRIORITYR + 36, 0x4433_2211);
        for (i, want) in [0x11, 0x22, 0x33, 0x44].into_iter().enumerate() {
            assert_eq!(g.dist_read(IPRIORITYR + 36 + i as u64, 1).unwrap(), want);
        }
        // Only the low byte of a byte write counts.
        g.dist_write(IPRIORITYR + 40, 1, 0xffff_ff12).unwrap();
        assert_eq!(g.dist_read(IPRIORITYR + 40, 1).unwrap(), 0x12);
        // Private priorities live in each redistributor.
        g.redist_write(1, SGI + IPRIORITYR + 27, 1, 0x80).unwrap();
        assert_eq!(rr(&mut g, 1, SGI + IPRIORITYR + 24), 0x8000_0000);
        assert_eq!(rr(&mut g, 0, SGI + IPRIORITYR + 24), 0);
        rw(&mut g, 0, SGI + IPRIORITYR, 0x1020_3040);
        assert_eq!(g.redist_read(0, SGI + IPRIORITYR + 3, 1).unwrap(), 0x10);
        // Halfword and doubleword are refused.
        assert_eq!(g.dist_read(IPRIORITYR + 32, 2), Err(MmioError::BadWidth));
        assert_eq!(g.dist_read(IPRIORITYR + 32, 8), Err(MmioError::BadWidth));
        assert_eq!(g.dist_read(IPRIORITYR + 33, 4), Err(MmioError::Unaligned));
        // ITARGETSR is RAZ/WI at either width.
        g.dist_write(0x820, 1, 0xff).unwrap();
        assert_eq!(g.dist_read(0x820, 1).unwrap(), 0);
    }

    #[test]
    fn icfgr_sgi_read_only_ppi_spi_writable() {
        let mut g = two();
        assert_eq!(rr(&mut g, 0, SGI + 0xc00), 0xaaaa_aaaa, "SGIs edge");
        rw(&mut g, 0, SGI + 0xc00, 0);
        assert_eq!(rr(&mut g, 0, SGI + 0xc00), 0xaaaa_aaaa);
        assert_eq!(rr(&mut g, 0, SGI + 0xc04), 0, "PPIs level at reset");
        rw(&mut g, 0, SGI + 0xc04, 0xffff_ffff);
        assert_eq!(rr(&mut g, 0, SGI + 0xc04), 0xaaaa_aaaa, "odd bits only");
        assert_eq!(rr(&mut g, 1, SGI + 0xc04), 0);
        dw(&mut g, ICFGR + 8, 0x0000_0008);
        assert_eq!(dr(&mut g, ICFGR + 8), 0x8, "INTID 33 edge");
        // IGRPMODR RAZ/WI (DS=1).
        dw(&mut g, 0xd04, u64::MAX);
        assert_eq!(dr(&mut g, 0xd04), 0);
    }

    // ---- routing ----

    #[test]
    fn irouter_64_bit_and_halves() {
        let mut g = four();
        let off = GICD_IROUTER + 8 * 40;
        g.dist_write(off, 8, u64::MAX).unwrap();
        assert_eq!(g.dist_read(off, 8).unwrap(), IROUTER_MASK, "RES0 bits");
        dw(&mut g, off, 0x0000_0100);
        assert_eq!(g.dist_read(off, 8).unwrap(), 0xff_0000_0100);
        dw(&mut g, off + 4, 0x1);
        assert_eq!(g.dist_read(off, 8).unwrap(), 0x01_0000_0100);
        assert_eq!(dr(&mut g, off), 0x100);
        assert_eq!(dr(&mut g, off + 4), 0x1);
        // IROUTER of private INTIDs and beyond nr_spis: RAZ/WI.
        g.dist_write(GICD_IROUTER + 8 * 31, 8, 5).unwrap();
        assert_eq!(g.dist_read(GICD_IROUTER + 8 * 31, 8).unwrap(), 0);
        g.dist_write(GICD_IROUTER + 8 * 200, 8, 5).unwrap();
        assert_eq!(g.dist_read(GICD_IROUTER + 8 * 200, 8).unwrap(), 0);
        assert_eq!(g.dist_read(off + 4, 8), Err(MmioError::Unaligned));
        assert_eq!(g.dist_read(off, 2), Err(MmioError::BadWidth));
    }

    #[test]
    fn irouter_routes_spi_to_matching_vcpu() {
        let mut g = four();
        spi(&mut g, 40, 0xa0, 3); // Aff3=1, Aff0=17
        assert_eq!(pend_spi(&mut g, 40), 1 << 3);
        assert!(g.has_deliverable(3));
        assert!(!g.has_deliverable(0));
        let (lrs, f) = fill(&mut g, 3, 4);
        assert_eq!(f.used, 1);
        assert_eq!(vintid(lrs[0]), 40);
        for v in 0..3 {
            assert_eq!(fill(&mut g, v, 4).1.used, 0);
        }
        g.sync_lrs(3, &lrs[..1]);
        // Aff1=1 → vCPU 2.
        assert_eq!(
            g.dist_write(GICD_IROUTER + 8 * 40, 8, 0x100).unwrap(),
            1 << 2
        );
        assert!(g.has_deliverable(2) && !g.has_deliverable(3));
    }

    #[test]
    fn irouter_unmatched_affinity_is_not_delivered() {
        let mut g = four();
        spi(&mut g, 41, 0, 0);
        g.dist_write(GICD_IROUTER + 8 * 41, 8, 0x02_0000_0000)
            .unwrap();
        assert_eq!(pend_spi(&mut g, 41), 0, "nobody to kick");
        for v in 0..4 {
            assert!(!g.has_deliverable(v));
            assert_eq!(fill(&mut g, v, 4).1, Fill::default());
        }
        // Still pending: routing it somewhere delivers it.
        assert_eq!(dr(&mut g, 0x204) & 1 << 9, 1 << 9);
        assert_eq!(g.dist_write(GICD_IROUTER + 8 * 41, 8, 1).unwrap(), 1 << 1);
        assert!(g.has_deliverable(1));
    }

    #[test]
    fn irouter_irm_picks_lowest_awake_vcpu() {
        let mut g = four();
        spi(&mut g, 42, 0, 0);
        g.dist_write(GICD_IROUTER + 8 * 42, 8, IROUTER_IRM).unwrap();
        pend_spi(&mut g, 42);
        assert!(g.has_deliverable(0), "nobody awake: vCPU 0");
        rw(&mut g, 2, GICR_WAKER, 0);
        assert!(g.has_deliverable(2) && !g.has_deliverable(0));
        rw(&mut g, 1, GICR_WAKER, 0);
        assert!(g.has_deliverable(1) && !g.has_deliverable(2));
    }

    #[test]
    fn sgi_target_list_and_range_selector() {
        let mut g = four();
        for v in 0..4 {
            ppi(&mut g, v, 5, 0);
        }
        // Aff3.Aff2.Aff1 = 0.0.0, targets Aff0 0 and 1.
        let m = g.send_sgi(2, 5 << 24 | 0b11);
        assert_eq!(m, 0b0011);
        assert!(g.has_deliverable(0) && g.has_deliverable(1) && !g.has_deliverable(2));
        rw(&mut g, 0, SGI + 0x280, 1 << 5);
        rw(&mut g, 1, SGI + 0x280, 1 << 5);
        // Aff1 = 1 → vCPU 2 (Aff0 0).
        assert_eq!(g.send_sgi(0, 5 << 24 | 1 << 16 | 1), 0b0100);
        rw(&mut g, 2, SGI + 0x280, 1 << 5);
        // vCPU 3 is Aff3=1, Aff0=17: RS=1, target bit 1.
        assert_eq!(g.send_sgi(0, 5 << 24 | 1 << 48 | 1 << 44 | 1 << 1), 0b1000);
        rw(&mut g, 3, SGI + 0x280, 1 << 5);
        // Same without RS: Aff0 range 0..15 does not include 17.
        assert_eq!(g.send_sgi(0, 5 << 24 | 1 << 48 | 1 << 1), 0);
        // Unmatched Aff2: nobody.
        assert_eq!(g.send_sgi(0, 5 << 24 | 1 << 32 | 0xffff), 0);
        for v in 0..4 {
            assert!(!g.has_deliverable(v));
        }
        // A sender may target itself.
        assert_eq!(g.send_sgi(0, 5 << 24 | 1), 1);
    }

    #[test]
    fn sgi_irm_is_all_but_self() {
        let mut g = four();
        for v in 0..4 {
            ppi(&mut g, v, 3, 0);
        }
        assert_eq!(g.send_sgi(1, 3 << 24 | 1 << 40 | 0xffff), 0b1101);
        assert!(!g.has_deliverable(1));
        let (lrs, f) = fill(&mut g, 3, 2);
        assert_eq!((f.used, vintid(lrs[0])), (1, 3));
        // Bad sender: nothing.
        let mut h = four();
        assert_eq!(h.send_sgi(4, 3 << 24 | 1 << 40), 0);
        assert_eq!(h.send_sgi(usize::MAX, 3 << 24 | 1 << 40), 0);
    }

    #[test]
    fn private_interrupts_never_reach_another_vcpu() {
        let mut g = two();
        ppi(&mut g, 0, 20, 0);
        ppi(&mut g, 1, 20, 0);
        assert_eq!(g.set_line(0, 20, true), 1);
        assert_eq!(fill(&mut g, 1, 4).1.used, 0);
        let (lrs, f) = fill(&mut g, 0, 4);
        assert_eq!((f.used, vintid(lrs[0])), (1, 20));
        assert_eq!(g.set_line(7, 20, true), 0, "bad vCPU: no-op");
    }

    // ---- gating ----

    #[test]
    fn group_and_enable_gating() {
        let mut g = two();
        spi(&mut g, 50, 0, 0);
        pend_spi(&mut g, 50);
        assert!(g.has_deliverable(0));
        // Disabled: not delivered, still pending.
        let (off, b) = reg_bit(GICD_ICENABLER, 50);
        dw(&mut g, off, b);
        assert!(!g.has_deliverable(0));
        assert_eq!(fill(&mut g, 0, 4).1.used, 0);
        let (off, b) = reg_bit(GICD_ISENABLER, 50);
        assert_eq!(dw(&mut g, off, b), 1);
        // Group 1 disabled in GICD_CTLR.
        dw(&mut g, GICD_CTLR, 1);
        assert!(!g.has_deliverable(0));
        // Move it to group 0, which is enabled.
        let (off, _) = reg_bit(GICD_IGROUPR, 50);
        dw(&mut g, off, 0);
        assert!(g.has_deliverable(0));
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(lrs[0] & LR_GROUP1, 0);
        g.sync_lrs(0, &lrs[..1]);
        dw(&mut g, GICD_CTLR, 0);
        assert!(!g.has_deliverable(0));
        assert_eq!(dw(&mut g, GICD_CTLR, 2), 0b11, "everyone refills");
        assert!(!g.has_deliverable(0), "group 0 still off");
    }

    // ---- list registers ----

    #[test]
    fn lr_encoding_edge_level_and_hw() {
        let mut g = two();
        ppi(&mut g, 0, 27, 0x20);
        ppi(&mut g, 0, 23, 0x40);
        rw(&mut g, 0, SGI + 0xc04, 0); // PPIs level
        spi(&mut g, 33, 0x60, 0);
        dw(&mut g, ICFGR + 8, 0x8); // INTID 33 edge
        assert_eq!(g.inject_hw(0, 27, 27), 1);
        g.set_line(0, 23, true);
        pend_spi(&mut g, 33);
        let (lrs, f) = fill(&mut g, 0, 4);
        assert_eq!(
            f,
            Fill {
                used: 3,
                underflow: false
            }
        );
        let hw = lrs[0];
        assert_eq!(vintid(hw), 27);
        assert_ne!(hw & LR_HW, 0);
        assert_eq!((hw >> LR_PINTID_SHIFT) & LR_PINTID_MASK, 27);
        assert_eq!((hw >> LR_PRIORITY_SHIFT) & 0xff, 0x20);
        assert_ne!(hw & LR_GROUP1, 0);
        assert_eq!(state(hw), 0b01);
        let level = lrs[1];
        assert_eq!(vintid(level), 23);
        assert_eq!(level & LR_HW, 0);
        assert_ne!(level & LR_EOI, 0, "level: EOI maintenance");
        let edge = lrs[2];
        assert_eq!(vintid(edge), 33);
        assert_eq!(edge & (LR_EOI | LR_HW), 0);
        assert_eq!(edge, 33 | 0x60 << 48 | LR_GROUP1 | LR_PENDING);
    }

    #[test]
    fn a_raised_level_ppi_needs_no_eoi_maintenance_and_comes_back_when_raised_again() {
        let mut g = two();
        ppi(&mut g, 0, 31, 0);
        assert_ne!(g.raise(0, 31), 0);
        let (lrs, f) = fill(&mut g, 0, 4);
        assert_eq!(f.used, 1);
        assert_eq!(state(lrs[0]), 0b01);
        assert_eq!(lrs[0] & LR_EOI, 0, "latch only: no maintenance exit");
        // Raised again while the guest has it active: the LR keeps it
        // active and asks for the EOI maintenance interrupt, after which
        // the latched state is delivered.
        g.sync_lrs(0, &[ack(lrs[0])]);
        g.raise(0, 31);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(state(lrs[0]), 0b10, "active; the new pending state waits");
        assert_ne!(lrs[0] & LR_EOI, 0, "maintenance at EOI");
        g.sync_lrs(0, &[deact(lrs[0])]);
        let (lrs, f) = fill(&mut g, 0, 4);
        assert_eq!((f.used, state(lrs[0])), (1, 0b01));
        assert_eq!(lrs[0] & LR_EOI, 0);
    }

    #[test]
    fn inject_hw_rejects_bad_numbers() {
        let mut g = two();
        ppi(&mut g, 0, 27, 0);
        assert_eq!(g.inject_hw(0, 27, 1020), 0);
        assert_eq!(g.inject_hw(0, 27, 3), 0);
        assert_eq!(g.inject_hw(0, 5, 27), 0, "never an SGI");
        assert_eq!(g.inject_hw(2, 27, 27), 0);
        assert_eq!(g.inject_hw(0, 200, 27), 0);
        assert!(!g.has_deliverable(0));
        // A second physical interrupt on the same INTID: drained at once.
        g.inject_hw(0, 27, 27);
        g.inject_hw(0, 27, 30);
        assert_eq!(drained(&mut g, 0), ([30, 0, 0, 0, 0, 0, 0, 0], 1));
    }

    #[test]
    fn fill_active_first_then_priority_then_intid() {
        let mut g = two();
        for (intid, prio) in [(32, 0x80), (33, 0x40), (34, 0x40), (35, 0x10), (36, 0xf0)] {
            spi(&mut g, intid, prio, 0);
            pend_spi(&mut g, intid);
        }
        // 36 is active (lowest urgency, but active goes first).
        let (off, b) = reg_bit(GICD_ICPENDR, 36);
        dw(&mut g, off, b);
        let (off, b) = reg_bit(GICD_ISACTIVER, 36);
        dw(&mut g, off, b);
        ppi(&mut g, 0, 1, 0x40);
        rw(&mut g, 0, SGI + 0x200, 1 << 1);
        let (lrs, f) = fill(&mut g, 0, 16);
        assert_eq!(
            f,
            Fill {
                used: 6,
                underflow: false
            }
        );
        let order: [u32; 6] = core::array::from_fn(|i| vintid(lrs[i]));
        assert_eq!(order, [36, 35, 1, 33, 34, 32]);
        assert_eq!(state(lrs[0]), 0b10);
        g.sync_lrs(0, &lrs[..6]);
        // Only three LRs: the active one and the two most urgent.
        let (lrs, f) = fill(&mut g, 0, 3);
        assert_eq!(
            f,
            Fill {
                used: 3,
                underflow: true
            }
        );
        assert_eq!(
            [vintid(lrs[0]), vintid(lrs[1]), vintid(lrs[2])],
            [36, 35, 1]
        );
        g.sync_lrs(0, &lrs[..3]);
        // Exactly as many as LRs: no underflow.
        let (lrs, f) = fill(&mut g, 0, 6);
        assert_eq!(
            f,
            Fill {
                used: 6,
                underflow: false
            }
        );
        g.sync_lrs(0, &lrs[..6]);
        // Nothing pending or active: nothing.
        let mut h = two();
        assert_eq!(fill(&mut h, 0, 4).1, Fill::default());
    }

    #[test]
    fn fill_handles_odd_lr_counts_and_bad_vcpu() {
        let mut g = two();
        for i in 0..20 {
            spi(&mut g, 32 + i, i as u8, 0);
            pend_spi(&mut g, 32 + i);
        }
        let mut big = [7u64; 20];
        let f = g.fill_lrs(0, &mut big);
        assert_eq!(
            f,
            Fill {
                used: 16,
                underflow: true
            }
        );
        assert_eq!(&big[16..], &[0; 4]);
        g.sync_lrs(0, &big[..16]);
        let mut none: [u64; 0] = [];
        assert_eq!(g.fill_lrs(0, &mut none), Fill::default());
        let mut lrs = [5u64; 4];
        assert_eq!(g.fill_lrs(9, &mut lrs), Fill::default());
        assert_eq!(lrs, [0; 4]);
        g.sync_lrs(9, &lrs);
        assert!(!g.has_deliverable(9));
    }

    #[test]
    fn refill_without_sync_takes_lrs_back_unchanged() {
        let mut g = two();
        spi(&mut g, 32, 0, 0);
        pend_spi(&mut g, 32);
        let (a, _) = fill(&mut g, 0, 4);
        let (b, f) = fill(&mut g, 0, 4);
        assert_eq!(f.used, 1);
        assert_eq!(a[0], b[0]);
        // A short or mismatching sync keeps the rest as filled.
        g.sync_lrs(0, &[0x1234]);
        assert!(g.has_deliverable(0));
    }

    #[test]
    fn sync_keeps_re_pend_while_in_lr() {
        let mut g = two();
        spi(&mut g, 40, 0, 0);
        set_edge(&mut g, 40);
        pend_spi(&mut g, 40);
        let (lrs, _) = fill(&mut g, 0, 4);
        // While vCPU 0 runs, vCPU 1 pends it again: vCPU 0 is kicked.
        assert_eq!(pend_spi(&mut g, 40), 1);
        // The guest had already taken and completed the first one.
        g.sync_lrs(0, &[deact(ack(lrs[0]))]);
        let (lrs, f) = fill(&mut g, 0, 4);
        assert_eq!(f.used, 1);
        assert_eq!(state(lrs[0]), 0b01, "second edge not lost");
        // Acked, and re-pended while active: pending+active.
        let lr = ack(lrs[0]);
        pend_spi(&mut g, 40);
        g.sync_lrs(0, &[lr]);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(state(lrs[0]), 0b11);
        // Guest deactivates; pending remains in the LR and survives sync.
        g.sync_lrs(0, &[deact(lrs[0])]);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(state(lrs[0]), 0b01);
        g.sync_lrs(0, &[deact(ack(lrs[0]))]);
        assert!(!g.has_deliverable(0));
        assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    }

    #[test]
    fn clear_pending_while_in_lr_wins_unless_re_pended() {
        let mut g = two();
        spi(&mut g, 40, 0, 0);
        pend_spi(&mut g, 40);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(dr(&mut g, 0x204) & 1 << 8, 1 << 8, "reads see the LR copy");
        let (off, b) = reg_bit(GICD_ICPENDR, 40);
        assert_eq!(dw(&mut g, off, b), 1, "holder kicked");
        assert_eq!(dr(&mut g, 0x204) & 1 << 8, 0);
        g.sync_lrs(0, &lrs[..1]);
        assert!(!g.has_deliverable(0));
        // Clear then set: pending.
        pend_spi(&mut g, 40);
        let (lrs, _) = fill(&mut g, 0, 4);
        dw(&mut g, off, b);
        pend_spi(&mut g, 40);
        g.sync_lrs(0, &lrs[..1]);
        assert!(g.has_deliverable(0));
        // Active cleared while in an LR.
        let (lrs, _) = fill(&mut g, 0, 4);
        let (coff, cb) = reg_bit(GICD_ICACTIVER, 40);
        dw(&mut g, coff, cb);
        g.sync_lrs(0, &[ack(lrs[0])]);
        assert_eq!(dr(&mut g, 0x304), 0);
        assert!(!g.has_deliverable(0));
    }

    #[test]
    fn level_line_re_pends_after_eoi_while_high() {
        let mut g = two();
        spi(&mut g, 33, 0x10, 0); // level by default
        assert_eq!(g.set_line(0, 33, true), 1);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_ne!(lrs[0] & LR_EOI, 0);
        // Guest takes it; the line stays high.
        g.sync_lrs(0, &[ack(lrs[0])]);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(state(lrs[0]), 0b10, "level: active only, never P+A");
        assert_ne!(lrs[0] & LR_EOI, 0);
        // Deactivation → EOI maintenance → sync: line still high.
        g.sync_lrs(0, &[deact(lrs[0])]);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(state(lrs[0]), 0b01);
        // This time the device is serviced before the EOI.
        let lr = ack(lrs[0]);
        g.set_line(0, 33, false);
        g.sync_lrs(0, &[deact(lr)]);
        assert!(!g.has_deliverable(0));
        assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    }

    #[test]
    fn level_line_dropped_while_pending_is_withdrawn() {
        let mut g = two();
        spi(&mut g, 33, 0, 1);
        g.set_line(0, 33, true);
        let (lrs, _) = fill(&mut g, 1, 4);
        assert_eq!(g.set_line(0, 33, false), 0b10, "holder kicked");
        g.sync_lrs(1, &lrs[..1]);
        assert!(!g.has_deliverable(1));
        assert_eq!(fill(&mut g, 1, 4).1.used, 0);
        assert_eq!(dr(&mut g, 0x200 + 4) & 2, 0);
        // A software latch (ISPENDR) on a level interrupt survives the line
        // and is consumed by the acknowledge; ICPENDR clears only the latch.
        pend_spi(&mut g, 33);
        let (lrs, _) = fill(&mut g, 1, 4);
        g.sync_lrs(1, &lrs[..1]);
        assert!(g.has_deliverable(1), "unacked latch kept");
        let (lrs, _) = fill(&mut g, 1, 4);
        g.sync_lrs(1, &[deact(ack(lrs[0]))]);
        assert!(!g.has_deliverable(1), "ack consumed the latch");
        g.set_line(0, 33, true);
        pend_spi(&mut g, 33);
        let (off, b) = reg_bit(GICD_ICPENDR, 33);
        dw(&mut g, off, b);
        assert!(g.has_deliverable(1), "line still high");
    }

    #[test]
    fn edge_line_pends_on_rising_only() {
        let mut g = two();
        spi(&mut g, 34, 0, 0);
        dw(&mut g, ICFGR + 8, 0x20); // INTID 34 edge
        assert_eq!(g.set_line(0, 34, true), 1);
        let (lrs, _) = fill(&mut g, 0, 4);
        g.sync_lrs(0, &[deact(ack(lrs[0]))]);
        assert_eq!(g.set_line(0, 34, true), 0, "no new edge");
        assert!(!g.has_deliverable(0));
        g.set_line(0, 34, false);
        g.set_line(0, 34, true);
        assert!(g.has_deliverable(0));
    }

    #[test]
    fn hw_interrupt_deactivated_by_guest_needs_no_drain() {
        let mut g = two();
        ppi(&mut g, 1, 27, 0);
        g.inject_hw(1, 27, 27);
        let (lrs, _) = fill(&mut g, 1, 4);
        g.sync_lrs(1, &[ack(lrs[0])]);
        let (lrs, _) = fill(&mut g, 1, 4);
        assert_eq!(state(lrs[0]), 0b10);
        assert_ne!(lrs[0] & LR_HW, 0);
        g.sync_lrs(1, &[deact(lrs[0])]);
        assert_eq!(drained(&mut g, 1).1, 0);
        assert_eq!(fill(&mut g, 1, 4).1.used, 0);
        // The next one is forwarded afresh.
        g.inject_hw(1, 27, 27);
        let (lrs, _) = fill(&mut g, 1, 4);
        assert_ne!(lrs[0] & LR_HW, 0);
    }

    #[test]
    fn hw_pending_cleared_outside_lr_is_drained() {
        let mut g = two();
        ppi(&mut g, 0, 27, 0);
        g.inject_hw(0, 27, 27);
        assert_eq!(rr(&mut g, 0, SGI + 0x200), 1 << 27);
        assert_eq!(rw(&mut g, 0, SGI + 0x280, 1 << 27), 1);
        assert_eq!(drained(&mut g, 1).1, 0);
        assert_eq!(drained(&mut g, 0), ([27, 0, 0, 0, 0, 0, 0, 0], 1));
        assert_eq!(drained(&mut g, 0).1, 0, "forgotten once drained");
        assert_eq!(fill(&mut g, 0, 4).1.used, 0);
        // Disabled and pending: kept (not dropped) until cleared.
        g.inject_hw(0, 27, 27);
        rw(&mut g, 0, SGI + 0x180, 1 << 27);
        assert_eq!(drained(&mut g, 0).1, 0);
        rw(&mut g, 0, SGI + 0x280, 1 << 27);
        assert_eq!(drained(&mut g, 0).1, 1);
        // Active outside an LR, cleared with ICACTIVER.
        rw(&mut g, 0, SGI + 0x100, 1 << 27);
        g.inject_hw(0, 27, 27);
        let (lrs, _) = fill(&mut g, 0, 4);
        g.sync_lrs(0, &[ack(lrs[0])]);
        rw(&mut g, 0, SGI + 0x380, 1 << 27);
        assert_eq!(drained(&mut g, 0).1, 1);
        drained(&mut g, 7);
    }

    #[test]
    fn hw_spi_cleared_while_in_lr_is_drained_at_sync() {
        let mut g = two();
        spi(&mut g, 48, 0, 0);
        g.inject_hw(0, 48, 100);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!((lrs[0] >> 32) & LR_PINTID_MASK, 100);
        // vCPU 1 clears it while vCPU 0 still holds it in an LR.
        let (off, b) = reg_bit(GICD_ICPENDR, 48);
        assert_eq!(dw(&mut g, off, b), 1);
        assert_eq!(drained(&mut g, 0).1, 0, "not yet: the LR has it");
        g.sync_lrs(0, &lrs[..1]);
        assert_eq!(drained(&mut g, 0), ([100, 0, 0, 0, 0, 0, 0, 0], 1));
    }

    #[test]
    fn hw_active_with_sw_pend_is_active_only_in_lr() {
        let mut g = two();
        ppi(&mut g, 0, 27, 0);
        g.inject_hw(0, 27, 27);
        let (lrs, _) = fill(&mut g, 0, 4);
        g.sync_lrs(0, &[ack(lrs[0])]);
        rw(&mut g, 0, SGI + 0x200, 1 << 27); // guest pends it by hand
        let (lrs, f) = fill(&mut g, 0, 4);
        assert_eq!(f.used, 1);
        assert_eq!(state(lrs[0]), 0b10, "HW: never pending+active");
        g.sync_lrs(0, &[deact(lrs[0])]);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(state(lrs[0]), 0b01);
        assert_eq!(lrs[0] & LR_HW, 0, "the physical one is done; virtual only");
        assert_eq!(
            lrs[0] & LR_EOI,
            0,
            "level, pending by its latch only: done at EOI, no maintenance"
        );
    }

    #[test]
    fn spi_rerouted_while_in_lr_stays_then_moves() {
        let mut g = two();
        spi(&mut g, 45, 0, 0);
        pend_spi(&mut g, 45);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(
            g.dist_write(GICD_IROUTER + 8 * 45, 8, 1).unwrap(),
            1,
            "holder kicked"
        );
        assert_eq!(fill(&mut g, 1, 4).1.used, 0, "vCPU 1 must not have it yet");
        assert!(!g.has_deliverable(1));
        g.sync_lrs(0, &lrs[..1]);
        assert_eq!(g.take_kicks(), 0b10);
        assert_eq!(g.take_kicks(), 0);
        let (lrs, f) = fill(&mut g, 1, 4);
        assert_eq!((f.used, vintid(lrs[0])), (1, 45));
        assert_eq!(fill(&mut g, 0, 4).1.used, 0);
        g.sync_lrs(1, &lrs[..1]);
    }

    #[test]
    fn active_spi_returns_to_the_vcpu_that_took_it() {
        let mut g = two();
        spi(&mut g, 45, 0, 0);
        set_edge(&mut g, 45);
        pend_spi(&mut g, 45);
        let (lrs, _) = fill(&mut g, 0, 4);
        g.dist_write(GICD_IROUTER + 8 * 45, 8, 1).unwrap();
        g.sync_lrs(0, &[ack(lrs[0])]);
        assert_eq!(g.take_kicks(), 0, "active: nothing for vCPU 1");
        let (lrs, f) = fill(&mut g, 0, 4);
        assert_eq!((f.used, state(lrs[0])), (1, 0b10));
        assert_eq!(fill(&mut g, 1, 4).1.used, 0);
        // Re-pended while active on vCPU 0: the pending half waits there.
        pend_spi(&mut g, 45);
        g.sync_lrs(0, &lrs[..1]);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(state(lrs[0]), 0b11);
        g.sync_lrs(0, &[deact(lrs[0])]);
        // Now inactive: the pending one goes where IROUTER says.
        assert_eq!(g.take_kicks(), 0b10);
        assert_eq!(fill(&mut g, 1, 4).1.used, 1);
    }

    #[test]
    fn unforward_keeps_the_virtual_state() {
        let mut g = two();
        ppi(&mut g, 0, 27, 0);
        rw(&mut g, 0, GICR_WAKER, 0);
        assert_eq!(g.unforward(0, 27), None, "nothing forwarded yet");
        g.inject_hw(0, 27, 27);
        let (lrs, _) = fill(&mut g, 0, 4);
        assert_eq!(g.unforward(0, 27), None, "in an LR");
        // The guest acknowledged it: active in the LR when the vCPU left.
        let active = (lrs[0] & !LR_PENDING) | LR_ACTIVE;
        g.sync_lrs(0, &[active]);
        assert_eq!(g.unforward(0, 27), Some(27));
        assert_eq!(g.unforward(0, 27), None, "only once");
        assert_eq!(g.unforward(5, 27), None);
        // Back in: still active, now without the HW bit, with an EOI request.
        let (lrs, fill_) = fill(&mut g, 0, 4);
        assert_eq!(fill_.used, 1);
        assert_eq!(lrs[0] & LR_HW, 0);
        assert_ne!(lrs[0] & LR_ACTIVE, 0);
        assert_eq!(
            drained(&mut g, 0).1,
            0,
            "the caller deactivates, not the drain list"
        );
    }

    #[test]
    fn reset_clears_state_and_drains_hw() {
        let mut g = two();
        spi(&mut g, 40, 0x30, 1);
        pend_spi(&mut g, 40);
        ppi(&mut g, 0, 27, 0);
        g.inject_hw(0, 27, 27);
        rw(&mut g, 0, GICR_WAKER, 0);
        let (_lrs, _) = fill(&mut g, 0, 4);
        g.reset();
        assert_eq!(drained(&mut g, 0), ([27, 0, 0, 0, 0, 0, 0, 0], 1));
        assert_eq!(dr(&mut g, GICD_CTLR), 0x50);
        assert_eq!(dr(&mut g, 0x104), 0);
        assert_eq!(dr(&mut g, 0x204), 0);
        assert_eq!(dr(&mut g, IPRIORITYR + 40), 0);
        assert_eq!(rr(&mut g, 0, GICR_WAKER), 0b110);
        assert_eq!(rr(&mut g, 0, SGI + 0xc00), 0xaaaa_aaaa);
        assert_eq!(g.nr_vcpus(), 2);
        assert_eq!(g.nr_spis(), 64);
        assert_eq!(dr(&mut g, GICD_TYPER) & 0x1f, 2);
        // A stale sync from before the reset is ignored.
        g.sync_lrs(0, &[27 | LR_PENDING]);
        assert!(!g.has_deliverable(0));
        assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    }

    #[test]
    fn model_size_is_modest() {
        // The caller may keep one per domain; it holds no pointers.
        assert!(core::mem::size_of::<VGic>() <= 16 * 1024);
    }

    #[test]
    fn new_clamps_its_arguments() {
        let g = VGic::new(&[0; 12], 1000);
        assert_eq!((g.nr_vcpus(), g.nr_spis()), (MAX_VCPUS, MAX_SPIS));
        let g = VGic::new(&[0], 47);
        assert_eq!(g.nr_spis(), 32);
        let mut g = VGic::new(&[], 32);
        assert_eq!(g.nr_vcpus(), 0);
        assert_eq!(g.redist_read(0, 0, 4), Err(MmioError::OutOfRange));
        assert_eq!(dw(&mut g, GICD_CTLR, 3), 0);
        assert_eq!(
            g.dist_write(GICD_IROUTER + 8 * 32, 8, IROUTER_IRM).unwrap(),
            0
        );
        assert_eq!(pend_spi(&mut g, 32), 0);
        assert_eq!(g.send_sgi(0, 1 << 40), 0);
        assert!(!g.has_deliverable(0));
    }

    // ---- hostile input ----

    #[test]
    fn access_errors() {
        let mut g = two();
        assert_eq!(g.dist_read(GICD_CTLR, 8), Err(MmioError::BadWidth));
        assert_eq!(g.dist_read(GICD_CTLR, 2), Err(MmioError::BadWidth));
        assert_eq!(g.dist_read(GICD_CTLR, 1), Err(MmioError::BadWidth));
        assert_eq!(g.dist_read(0, 3), Err(MmioError::BadWidth));
        assert_eq!(g.dist_read(0, 0), Err(MmioError::BadWidth));
        assert_eq!(g.dist_read(2, 4), Err(MmioError::Unaligned));
        assert_eq!(g.dist_read(0x1_0000, 4), Err(MmioError::OutOfRange));
        assert_eq!(g.dist_read(0xfffe, 4), Err(MmioError::OutOfRange));
        assert_eq!(g.dist_read(u64::MAX, 8), Err(MmioError::OutOfRange));
        assert_eq!(g.dist_write(u64::MAX - 3, 4, 0), Err(MmioError::OutOfRange));
        assert_eq!(g.redist_read(0, 0x2_0000, 4), Err(MmioError::OutOfRange));
        assert_eq!(g.redist_read(0, GICR_STATUSR, 8), Err(MmioError::BadWidth));
        assert_eq!(g.redist_read(0, GICR_WAKER, 8), Err(MmioError::Unaligned));
        assert_eq!(g.redist_read(0, SGI + 0x100, 8), Err(MmioError::BadWidth));
        assert_eq!(
            g.redist_read(0, GICR_TYPER + 4, 8),
            Err(MmioError::Unaligned)
        );
        assert_eq!(g.redist_read(2, GICR_TYPER, 8), Err(MmioError::OutOfRange));
        // Reserved space reads zero at 32 and 64 bits.
        assert_eq!(g.dist_read(0x5000, 8), Ok(0));
        assert_eq!(g.redist_read(1, 0x9000, 4), Ok(0));
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Invariants that must hold whatever a guest did.
    fn check_invariants(g: &VGic) {
        assert!(
            g.candidates_cover_work(),
            "an interrupt with work is not marked"
        );
        let mut holders = [[0u8; 32 + MAX_SPIS as usize]; 1];
        for v in 0..g.nr_vcpus {
            let sh = g.shadow[v];
            assert!(sh.used <= MAX_LRS);
            for &lr in &sh.vals[..sh.used] {
                let intid = vintid(lr) as usize;
                assert!(intid < 32 + g.nr_spis as usize);
                if intid >= 32 {
                    holders[0][intid] += 1;
                    assert!(holders[0][intid] <= 1, "SPI in two vCPUs' LRs");
                }
                let s = g.slot(v, intid as u32).unwrap();
                assert_eq!(g.irq(s).lr_vcpu, Some(v as u8));
            }
        }
        for v in 0..g.nr_vcpus {
            for irq in &g.private[v] {
                assert!(irq.lr_vcpu.is_none() || irq.lr_vcpu == Some(v as u8));
                if irq.hw.is_some() {
                    assert!(irq.lr_vcpu.is_some() || irq.pending() || irq.is_active());
                }
            }
        }
        for irq in &g.spis[..g.nr_spis as usize] {
            if irq.hw.is_some() {
                assert!(irq.lr_vcpu.is_some() || irq.pending() || irq.is_active());
            }
        }
    }

    #[test]
    fn every_distributor_offset_and_width_is_safe() {
        let mut g = four();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for off in 0..DIST_FRAME_SIZE {
            for size in [0u8, 1, 2, 3, 4, 5, 8, 16, 255] {
                let r = g.dist_read(off, size);
                let w = g.dist_write(off, size, rng.next());
                assert_eq!(
                    r.is_ok(),
                    w.is_ok(),
                    "read and write agree at {off:#x}/{size}"
                );
                if let Ok(mask) = w {
                    assert_eq!(mask & !0b1111, 0, "mask within vCPUs");
                }
                if matches!(size, 1 | 2 | 4 | 8) && off % u64::from(size) == 0 {
                    assert_ne!(r, Err(MmioError::OutOfRange));
                    assert_ne!(r, Err(MmioError::Unaligned));
                }
            }
            if off % 0x400 == 0 {
                churn(&mut g, &mut rng);
            }
        }
        check_invariants(&g);
    }

    #[test]
    fn every_redistributor_offset_and_width_is_safe() {
        let mut g = four();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for off in 0..REDIST_FRAME_SIZE {
            let vcpu = (rng.next() % 5) as usize;
            for size in [0u8, 1, 2, 4, 8, 9] {
                let r = g.redist_read(vcpu, off, size);
                let w = g.redist_write(vcpu, off, size, rng.next());
                assert_eq!(r.is_ok(), w.is_ok());
                if vcpu == 4 {
                    assert!(r.is_err());
                }
                if let Ok(mask) = w {
                    assert_eq!(mask & !0b1111, 0);
                }
            }
            if off % 0x800 == 0 {
                churn(&mut g, &mut rng);
            }
        }
        for off in [u64::MAX, u64::MAX - 7, 1 << 63, REDIST_FRAME_SIZE] {
            assert!(g.redist_read(usize::MAX, off, 8).is_err());
            assert!(g.redist_write(0, off, 4, 0).is_err());
        }
        check_invariants(&g);
    }

    /// Random sources, fills and guest LR changes.
    fn churn(g: &mut VGic, rng: &mut Rng) {
        for _ in 0..8 {
            let r = rng.next();
            let vcpu = (r % 6) as usize;
            let intid = ((r >> 8) % 400) as u32;
            match (r >> 20) % 6 {
                0 => {
                    g.send_sgi(vcpu, rng.next());
                }
                1 => {
                    g.set_line(vcpu, intid, r & (1 << 40) != 0);
                }
                2 => {
                    g.inject_hw(vcpu, intid, ((r >> 32) % 1100) as u32);
                }
                3 => {
                    let mut lrs = [0u64; MAX_LRS];
                    let n = 1 + (r >> 44) as usize % MAX_LRS;
                    let f = g.fill_lrs(vcpu, &mut lrs[..n]);
                    // The guest does anything the hardware allows to State.
                    for lr in &mut lrs[..f.used] {
                        *lr = (*lr & !(3 << 62)) | (rng.next() & (3 << 62));
                    }
                    if r & (1 << 50) != 0 {
                        g.sync_lrs(vcpu, &lrs[..f.used]);
                    }
                }
                4 => {
                    let mut n = 0;
                    g.drain_hw_deactivations(vcpu, &mut |p| {
                        assert!(p < 1020);
                        n += 1;
                    });
                }
                _ => {
                    let _ = g.has_deliverable(vcpu);
                    let _ = g.take_kicks();
                }
            }
            check_invariants(g);
        }
    }

    #[test]
    fn random_sources_and_lrs_keep_invariants() {
        let mut g = VGic::new(
            &[mpidr(0, 0, 0, 0), mpidr(0, 0, 0, 1), mpidr(0, 0, 0, 2)],
            MAX_SPIS,
        );
        dw(&mut g, GICD_CTLR, 3);
        for n in 1..9 {
            dw(&mut g, GICD_IGROUPR + 4 * n, u64::MAX);
            dw(&mut g, GICD_ISENABLER + 4 * n, u64::MAX);
            dw(&mut g, ICFGR + 8 * n, 0xaaaa_aaaa);
        }
        for v in 0..3 {
            rw(&mut g, v, SGI + 0x80, u64::MAX);
            rw(&mut g, v, SGI + 0x100, u64::MAX);
        }
        let mut rng = Rng(42);
        for i in 0..4000u64 {
            let r = rng.next();
            if i % 3 == 0 {
                let intid = 32 + (r % u64::from(MAX_SPIS));
                g.dist_write(GICD_IROUTER + 8 * intid, 8, (r >> 16) & 0x8000_0003)
                    .unwrap();
                let (off, b) = reg_bit(GICD_ISPENDR + 0x80 * ((r >> 40) % 4), intid as u32);
                dw(&mut g, off, b);
            }
            churn(&mut g, &mut rng);
        }
        // Drain everything: every vCPU syncs what it holds unchanged.
        for v in 0..3 {
            let sh = g.shadow[v];
            g.sync_lrs(v, &sh.vals[..sh.used]);
        }
        check_invariants(&g);
    }
}
