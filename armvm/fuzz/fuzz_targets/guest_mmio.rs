//! What a guest can do to the models that face it, in any order and with
//! any values: the virtual GICv3 (distributor and redistributor MMIO, SGIs,
//! device lines, forwarded physical interrupts, list registers the guest
//! acknowledges and deactivates), the vPL011, and the decoders of the
//! values a trap hands the hypervisor (ESR, PSCI arguments), the kernel
//! Image header and the guest device tree.
//!
//! The input is a script: a few header bytes choose the vGIC's size and an
//! optional "everything enabled" set-up, then each operation takes an opcode
//! byte and its arguments. The harness drives the vGIC as hv-arm does (see
//! the module docs of `gic::vgic`): a vCPU's list registers are synced, and
//! kicks taken, whenever it leaves the guest (before any MMIO or SGI it
//! makes, before a refill, before a reset); physical interrupts to
//! deactivate are drained before every fill.
//!
//! Invariants, besides "nothing panics":
//! - register reads fit their width; reads and writes at one place agree on
//!   whether the access is allowed; refill masks name existing vCPUs only;
//! - `fill_lrs` never reports more LRs than the slice holds, zeroes the rest,
//!   puts no INTID twice, and never an SPI another vCPU holds right now;
//! - an LR carries the HW bit exactly when its interrupt forwards a physical
//!   one, and then the pINTID it was injected with; every forwarded physical
//!   interrupt ends exactly once (the guest deactivates it through a HW LR,
//!   or it is drained, to the vCPU it was first injected on), and nothing is
//!   left forwarded after a reset;
//! - `has_deliverable` agrees with what a fill would deliver;
//! - the vPL011 returns received bytes in order, sends exactly the bytes
//!   written to DR, and its line agrees with MIS;
//! - decoded syndromes and PSCI arguments stay inside their fields; an
//!   accepted Image header is one the boot protocol allows; every guest
//!   device tree that is built parses back and says what was asked.
#![no_main]

use std::collections::VecDeque;

use arbitrary::{Result, Unstructured};
use armvm::guest_dt::{self, DtError, GuestDtConfig};
use armvm::pl011::{self, Pl011};
use armvm::{esr, image, layout, psci};
use common::fdt::Fdt;
use gic::vgic::{
    DIST_FRAME_SIZE, LR_ACTIVE, LR_HW, LR_PENDING, LR_PINTID_MASK, LR_PINTID_SHIFT, MAX_LRS,
    MAX_SPIS, MAX_VCPUS, MmioError, REDIST_FRAME_SIZE, SGI_BASE, VGic, VcpuMask,
};
use libfuzzer_sys::fuzz_target;

/// Most operations one input runs.
const MAX_OPS: usize = 2048;
/// LR slices handed to `fill_lrs` go up to this (beyond 16 only zeroed).
const MAX_SLICE: usize = MAX_LRS + 4;
/// Number of interrupts that can forward a physical one: 16 PPIs per vCPU,
/// then the SPIs.
const HW_SLOTS: usize = 16 * MAX_VCPUS + MAX_SPIS as usize;
/// The harness forwards physical INTID `16 + slot` (primary) or
/// `ALT_PINTID + slot` (a second source on the same vINTID), so every
/// drained physical INTID names its slot. Both ranges lie in 16..1020.
const ALT_PINTID: u32 = 416;
const _: () = assert!(ALT_PINTID as usize + HW_SLOTS <= 1020 && 16 + HW_SLOTS <= 416);

// Distributor and redistributor registers the fuzzer should hit often.
const DIST_REGS: [u64; 13] = [
    0x0000, 0x0004, 0x0008, 0x0080, 0x0100, 0x0180, 0x0200, 0x0280, 0x0300, 0x0380, 0x0400, 0x0c00,
    0x6000,
];
const REDIST_REGS: [u64; 17] = [
    0x0000,
    0x0004,
    0x0008,
    0x000c,
    0x0010,
    0x0014,
    0xffe8,
    SGI_BASE + 0x0080,
    SGI_BASE + 0x0100,
    SGI_BASE + 0x0180,
    SGI_BASE + 0x0200,
    SGI_BASE + 0x0280,
    SGI_BASE + 0x0300,
    SGI_BASE + 0x0380,
    SGI_BASE + 0x0400,
    SGI_BASE + 0x0c00,
    SGI_BASE + 0x0c04,
];

/// LR state field (bits 63:62).
fn state(lr: u64) -> u64 {
    lr >> 62
}

fn vintid(lr: u64) -> u32 {
    lr as u32
}

fn pintid(lr: u64) -> u32 {
    ((lr >> LR_PINTID_SHIFT) & LR_PINTID_MASK) as u32
}

/// What a guest does to one LR while it runs: acknowledge (pending →
/// active), then deactivate (active → inactive, or pending+active →
/// pending). Nothing else the hardware would do to the State field.
fn guest_step(lr: u64, act: u8) -> u64 {
    let mut st = state(lr);
    if act & 1 != 0 && st == 0b01 {
        st = 0b10;
    }
    if act & 2 != 0 && st & 0b10 != 0 {
        st &= 0b01;
    }
    (lr & !(LR_PENDING | LR_ACTIVE)) | st << 62
}

struct Harness {
    gic: VGic,
    nr: usize,
    nr_spis: u32,
    /// Per vCPU in the guest: the LRs the last fill gave it, as the guest
    /// has left them so far, and how many are valid.
    held: [Option<([u64; MAX_LRS], usize)>; MAX_VCPUS],
    /// Per HW slot: the physical INTID it forwards now, and the vCPU whose
    /// drain list gets it if the model drops it.
    hw: [Option<(u32, usize)>; HW_SLOTS],
    /// (vCPU, pINTID) drains the current operation must produce.
    extra: Vec<(usize, u32)>,
    /// Refill requests not yet honoured.
    kicks: VcpuMask,
    uart: Pl011,
    /// What the vPL011's receive FIFO should hold.
    rx: VecDeque<u8>,
}

impl Harness {
    fn new(nr: usize, nr_spis: u32) -> Self {
        let mpidrs: Vec<u64> = (0..nr as u32).map(layout::vcpu_mpidr).collect();
        let gic = VGic::new(&mpidrs, nr_spis);
        assert_eq!(gic.nr_vcpus(), nr);
        assert!(gic.nr_spis() <= MAX_SPIS && gic.nr_spis().is_multiple_of(32));
        for (n, &m) in mpidrs.iter().enumerate() {
            assert_eq!(layout::vcpu_of_mpidr(m, nr as u32), Some(n as u32));
        }
        Harness {
            nr_spis: gic.nr_spis(),
            gic,
            nr,
            held: [None; MAX_VCPUS],
            hw: [None; HW_SLOTS],
            extra: Vec::new(),
            kicks: 0,
            uart: Pl011::new(),
            rx: VecDeque::new(),
        }
    }

    fn all(&self) -> VcpuMask {
        (1 << self.nr) - 1
    }

    fn mask(&mut self, m: VcpuMask) {
        assert_eq!(
            m & !self.all(),
            0,
            "refill mask {m:#x} names a missing vCPU"
        );
        self.kicks |= m;
    }

    /// The HW slot of `intid` as seen from `vcpu`, if it can forward one.
    fn slot(&self, vcpu: usize, intid: u32) -> Option<usize> {
        match intid {
            16..32 if vcpu < self.nr => Some(vcpu * 16 + intid as usize - 16),
            32.. if intid - 32 < self.nr_spis => Some(16 * MAX_VCPUS + (intid - 32) as usize),
            _ => None,
        }
    }

    fn slot_of_pintid(p: u32) -> usize {
        let p = p as usize;
        if p >= ALT_PINTID as usize {
            p - ALT_PINTID as usize
        } else {
            p - 16
        }
    }

    /// The vCPU leaves the guest: sync what it holds, take kicks.
    fn exit(&mut self, v: usize) {
        let Some((vals, n)) = self.held.get_mut(v).and_then(Option::take) else {
            return;
        };
        self.gic.sync_lrs(v, &vals[..n]);
        for &lr in &vals[..n] {
            if lr & LR_HW != 0 && state(lr) == 0 {
                // The guest deactivated it; so did the hardware.
                let s = self.slot(v, vintid(lr)).expect("HW LR on a slot");
                assert_eq!(self.hw[s].map(|h| h.0), Some(pintid(lr)));
                self.hw[s] = None;
            }
        }
        let k = self.gic.take_kicks();
        self.mask(k);
    }

    fn exit_all(&mut self) {
        for v in 0..MAX_VCPUS {
            self.exit(v);
        }
    }

    /// Physical interrupts to deactivate, from every vCPU's list (and from
    /// some that do not exist); checked against what was forwarded.
    fn drain(&mut self) {
        let mut got = Vec::new();
        for v in [0, 1, 2, 3, 4, 5, 6, 7, 8, usize::MAX] {
            self.gic
                .drain_hw_deactivations(v, &mut |p| got.push((v, p)));
        }
        for (v, p) in got {
            assert!((16..1020).contains(&p), "drained pINTID {p}");
            if let Some(i) = self.extra.iter().position(|&e| e == (v, p)) {
                self.extra.swap_remove(i);
                continue;
            }
            let s = Self::slot_of_pintid(p);
            assert_eq!(
                self.hw[s],
                Some((p, v)),
                "drained pINTID {p} on vCPU {v}, not forwarded from there"
            );
            self.hw[s] = None;
        }
        assert!(
            self.extra.is_empty(),
            "a second physical source was not drained: {:?}",
            self.extra
        );
    }

    /// Guest entry of `v` with an LR slice of `len`.
    fn enter(&mut self, v: usize, len: usize) {
        self.exit(v);
        self.drain();
        assert!(
            self.gic.candidates_cover_work(),
            "an interrupt with work is not a fill candidate"
        );
        let mut lrs = [0x5a5a_5a5a_5a5a_5a5a_u64; MAX_SLICE];
        let f = self.gic.fill_lrs(v, &mut lrs[..len]);
        assert!(f.used <= len && f.used <= MAX_LRS, "{f:?} for {len} LRs");
        assert!(
            lrs[f.used..len].iter().all(|&lr| lr == 0),
            "unused LRs not zeroed"
        );
        if v >= self.nr || len == 0 {
            assert_eq!(f.used, 0);
            assert!(!f.underflow);
            return;
        }
        let filled = &lrs[..f.used];
        for (i, &lr) in filled.iter().enumerate() {
            let id = vintid(lr);
            assert!(id < 32 + self.nr_spis, "LR {lr:#x}: no such INTID");
            assert_ne!(state(lr), 0, "LR {lr:#x} filled invalid");
            assert!(
                filled[..i].iter().all(|&o| vintid(o) != id),
                "INTID {id} twice in vCPU {v}'s LRs"
            );
            if id >= 32 {
                for (w, h) in self.held.iter().enumerate() {
                    if let Some((vals, n)) = h {
                        assert!(
                            vals[..*n].iter().all(|&o| vintid(o) != id),
                            "SPI {id} in the LRs of vCPUs {w} and {v}"
                        );
                    }
                }
            }
            let fwd = self.slot(v, id).and_then(|s| self.hw[s]);
            match fwd {
                Some((p, _)) => {
                    assert_ne!(lr & LR_HW, 0, "LR {lr:#x}: forwarded pINTID {p} lost");
                    assert_eq!(pintid(lr), p, "LR {lr:#x}: wrong pINTID");
                    assert_ne!(state(lr), 0b11, "HW LR pending+active");
                }
                None => assert_eq!(lr & LR_HW, 0, "LR {lr:#x}: HW bit with nothing forwarded"),
            }
        }
        let mut vals = [0; MAX_LRS];
        vals[..f.used].copy_from_slice(filled);
        self.held[v] = Some((vals, f.used));
    }

    /// The guest runs on `v` and acknowledges/deactivates what it holds.
    fn run_guest(&mut self, u: &mut Unstructured, v: usize) -> Result<()> {
        if let Some(Some((vals, n))) = self.held.get_mut(v) {
            let mut acts = u.arbitrary::<u32>()?;
            for lr in &mut vals[..*n] {
                *lr = guest_step(*lr, acts as u8 & 3);
                acts = acts.rotate_right(2);
            }
        }
        Ok(())
    }

    /// Writes that make every interrupt deliverable somewhere.
    fn enable_everything(&mut self, u: &mut Unstructured) -> Result<()> {
        let ok = |r: core::result::Result<VcpuMask, MmioError>| r.expect("set-up write");
        let m = ok(self.gic.dist_write(0, 4, 3));
        self.mask(m);
        for n in 1..=self.nr_spis as u64 / 32 {
            for reg in [0x080, 0x100] {
                let m = ok(self.gic.dist_write(reg + 4 * n, 4, 0xffff_ffff));
                self.mask(m);
            }
            for half in [0, 4] {
                let cfg = u.arbitrary::<u32>()? as u64;
                let m = ok(self.gic.dist_write(0xc00 + 8 * n + half, 4, cfg));
                self.mask(m);
            }
        }
        for i in 0..self.nr_spis as u64 {
            let v = u.int_in_range(0..=self.nr as u32)?;
            let route = if v as usize == self.nr {
                1 << 31
            } else {
                layout::vcpu_mpidr(v) & 0xff_00ff_ffff
            };
            let m = ok(self.gic.dist_write(0x6000 + 8 * (32 + i), 8, route));
            self.mask(m);
        }
        for v in 0..self.nr {
            for (off, val) in [(0x14, 0), (SGI_BASE + 0x80, !0), (SGI_BASE + 0x100, !0)] {
                let m = ok(self.gic.redist_write(v, off, 4, val));
                self.mask(m);
            }
        }
        Ok(())
    }

    fn vcpu(&self, u: &mut Unstructured) -> Result<usize> {
        Ok(match u.arbitrary::<u8>()? {
            0xff => usize::MAX,
            0xf0.. => MAX_VCPUS,
            b => b as usize % self.nr,
        })
    }

    fn intid(&self, u: &mut Unstructured) -> Result<u32> {
        Ok(match u.arbitrary::<u8>()? % 8 {
            0 => u.arbitrary::<u32>()?,
            1 => u.int_in_range(0..=31)?,
            2 => layout::VPL011_INTID,
            _ => u.int_in_range(0..=32 + self.nr_spis + 4)?,
        })
    }

    fn op(&mut self, u: &mut Unstructured) -> Result<()> {
        match u.arbitrary::<u8>()? % 28 {
            0 | 1 => {
                let a = self.vcpu(u)?;
                self.exit(a);
                let (off, size) = dist_access(u)?;
                let value = value(u)?;
                let r = self.gic.dist_read(off, size);
                if let Ok(x) = r
                    && size < 8
                {
                    assert!(x >> (8 * size) == 0, "{size}-byte read at {off:#x}: {x:#x}");
                }
                let w = self.gic.dist_write(off, size, value);
                assert_eq!(r.err(), w.err(), "dist {off:#x}/{size}");
                if let Ok(m) = w {
                    self.mask(m);
                }
                if !matches!(size, 1 | 2 | 4 | 8) {
                    assert_eq!(w, Err(MmioError::BadWidth));
                }
                if off >= DIST_FRAME_SIZE {
                    assert!(w.is_err());
                }
            }
            2..=4 => {
                let v = self.vcpu(u)?;
                self.exit(v);
                let (off, size) = redist_access(u)?;
                let value = value(u)?;
                let r = self.gic.redist_read(v, off, size);
                if let Ok(x) = r
                    && size < 8
                {
                    assert!(x >> (8 * size) == 0, "{size}-byte read at {off:#x}: {x:#x}");
                }
                let w = self.gic.redist_write(v, off, size, value);
                assert_eq!(r.err(), w.err(), "redist {v} {off:#x}/{size}");
                if v >= self.nr || off >= REDIST_FRAME_SIZE {
                    assert!(w.is_err());
                }
                if let Ok(m) = w {
                    self.mask(m);
                }
            }
            5 => {
                let v = self.vcpu(u)?;
                self.exit(v);
                let sgi1r = match u.arbitrary::<u8>()? % 4 {
                    0 => u.arbitrary::<u64>()?,
                    1 => 1 << 40 | u64::from(u.arbitrary::<u8>()? & 15) << 24,
                    _ => {
                        u64::from(u.arbitrary::<u8>()? & 15) << 24
                            | u64::from(u.arbitrary::<u16>()? & 0xff)
                    }
                };
                let m = self.gic.send_sgi(v, sgi1r);
                self.mask(m);
            }
            6 => {
                let v = self.vcpu(u)?;
                let intid = self.intid(u)?;
                let level = u.arbitrary()?;
                let m = self.gic.set_line(v, intid, level);
                self.mask(m);
            }
            7 | 8 => self.inject(u)?,
            9..=11 => {
                let v = self.vcpu(u)?;
                let len = match u.arbitrary::<u8>()? {
                    0 => 0,
                    b => 1 + b as usize % MAX_SLICE,
                };
                self.enter(v, len);
            }
            12 | 13 => {
                let v = self.vcpu(u)?;
                self.run_guest(u, v)?;
            }
            14 => {
                let v = self.vcpu(u)?;
                self.exit(v);
            }
            15 => {
                // Honour the kicks: those vCPUs leave the guest and refill.
                let kicks = core::mem::take(&mut self.kicks);
                let refill = u.arbitrary::<bool>()?;
                for v in 0..self.nr {
                    if kicks & 1 << v != 0 {
                        self.exit(v);
                        if refill {
                            self.enter(v, 4);
                        }
                    }
                }
            }
            16 => {
                let v = self.vcpu(u)?;
                self.check_deliverable(v);
            }
            17 => {
                self.exit_all();
                self.gic.reset();
                self.kicks = 0;
                assert_eq!(self.gic.take_kicks(), 0);
                self.drain();
                let left: Vec<_> = self.hw.iter().flatten().collect();
                assert!(left.is_empty(), "forwarded after reset: {left:?}");
            }
            18 | 19 => self.uart_op(u)?,
            20 => check_esr(u.arbitrary()?),
            21 => check_psci(
                u.arbitrary()?,
                u.arbitrary()?,
                u.arbitrary()?,
                u.arbitrary()?,
            ),
            22 => check_image(u)?,
            23 => check_guest_dt(u)?,
            24..=27 => self.driver_write(u)?,
            _ => unreachable!(),
        }
        self.drain();
        Ok(())
    }

    /// A well-formed write a guest's GIC driver makes to one interrupt:
    /// group, enable, pending, active (set or clear), priority, trigger,
    /// routing. Reaches states raw MMIO finds only slowly.
    fn driver_write(&mut self, u: &mut Unstructured) -> Result<()> {
        let v = u.arbitrary::<u8>()? as usize % self.nr;
        self.exit(v);
        let intid = u.int_in_range(0..=31 + self.nr_spis)?;
        let what = u.arbitrary::<u8>()?;
        let spi = intid >= 32;
        let n = u64::from(intid);
        let (off, size, value) = match what % 10 {
            k @ 0..=6 => (0x80 * (k as u64 + 1) + 4 * (n / 32), 4, 1 << (n % 32)),
            7 => (0x400 + n, 1, u64::from(u.arbitrary::<u8>()?)),
            8 => {
                // Flip the trigger bit of this interrupt, keep the others.
                let off = 0xc00 + 4 * (n / 16);
                let old = if spi {
                    self.gic.dist_read(off, 4)
                } else {
                    self.gic.redist_read(v, SGI_BASE + off, 4)
                };
                (off, 4, old.unwrap_or(0) ^ 2 << (2 * (n % 16)))
            }
            _ => {
                if !spi {
                    return Ok(());
                }
                let t = u.int_in_range(0..=self.nr as u32)?;
                let route = if t as usize == self.nr {
                    1 << 31
                } else {
                    layout::vcpu_mpidr(t) & 0xff_00ff_ffff
                };
                (0x6000 + 8 * n, 8, route)
            }
        };
        let r = if spi {
            self.gic.dist_write(off, size, value)
        } else {
            self.gic.redist_write(v, SGI_BASE + off, size, value)
        };
        let m = r.unwrap_or_else(|e| panic!("driver write {off:#x}/{size}: {e:?}"));
        self.mask(m);
        Ok(())
    }

    fn inject(&mut self, u: &mut Unstructured) -> Result<()> {
        let v = self.vcpu(u)?;
        let intid = self.intid(u)?;
        let how = u.arbitrary::<u8>()?;
        let raw = u.arbitrary::<u32>()?;
        let slot = self.slot(v, intid);
        let p = match (how % 4, slot) {
            // Out of range or not a slot: must be refused.
            (0, _) | (_, None) => raw,
            (1, Some(s)) => ALT_PINTID + s as u32,
            (_, Some(s)) => 16 + s as u32,
        };
        let accepted = (16..1020).contains(&p) && slot.is_some() && v < self.nr;
        let p = match slot {
            Some(s) if accepted && p != 16 + s as u32 && p != ALT_PINTID + s as u32 => {
                16 + s as u32
            }
            _ => p,
        };
        let m = self.gic.inject_hw(v, intid, p);
        self.mask(m);
        if !accepted {
            assert_eq!(m, 0, "inject_hw({v}, {intid}, {p}) accepted");
            return Ok(());
        }
        let s = slot.expect("accepted");
        match self.hw[s] {
            None => self.hw[s] = Some((p, v)),
            Some((q, _)) if q == p => {}
            Some(_) => self.extra.push((v, p)),
        }
        Ok(())
    }

    /// `has_deliverable` (the WFI check) against what a fill would do.
    fn check_deliverable(&mut self, v: usize) {
        let hd = self.gic.has_deliverable(v);
        if v >= self.nr {
            assert!(!hd);
            return;
        }
        if self.held[v].is_some() {
            return;
        }
        let mut g = self.gic.clone();
        let mut lrs = [0; MAX_LRS];
        let f = g.fill_lrs(v, &mut lrs);
        let pending = lrs[..f.used].iter().any(|&lr| lr & LR_PENDING != 0);
        if hd {
            assert!(f.used > 0, "vCPU {v}: deliverable but nothing filled");
        }
        if pending {
            assert!(
                hd,
                "vCPU {v}: a fill delivers {lrs:x?} but has_deliverable is false"
            );
        }
        if !f.underflow {
            assert_eq!(hd, pending);
        }
    }

    fn uart_op(&mut self, u: &mut Unstructured) -> Result<()> {
        let off = match u.arbitrary::<u8>()? {
            0xff => u.arbitrary::<u64>()?,
            0xf0.. => u.arbitrary::<u16>()? as u64,
            b => 4 * (b as u64 % 20) + if b >= 0xe0 { pl011::PERIPH_ID0 } else { 0 },
        };
        let size = match u.arbitrary::<u8>()? {
            0xf0.. => u.arbitrary::<u8>()?,
            b => [4, 1, 2][b as usize % 3],
        };
        let good = matches!(size, 1 | 2 | 4) && off < pl011::FRAME_SIZE && off % 4 == 0;
        match u.arbitrary::<u8>()? % 6 {
            0 | 1 => {
                let r = self.uart.read(off, size);
                assert_eq!(r.is_ok(), good);
                if let Ok(x) = r {
                    if size < 4 {
                        assert!(x >> (8 * size) == 0);
                    }
                    if off == pl011::DR {
                        assert_eq!(x, self.rx.pop_front().map_or(0, u32::from));
                    }
                    if off == pl011::FR {
                        assert_eq!(x & pl011::FR_RXFE != 0, self.rx.is_empty());
                    }
                }
            }
            2 => {
                let value = u.arbitrary::<u32>()?;
                let mut sent = Vec::new();
                let r = self.uart.write(off, size, value, &mut |b| sent.push(b));
                assert_eq!(r.is_ok(), good);
                if r.is_ok() && off == pl011::DR {
                    assert_eq!(sent, [value as u8]);
                } else {
                    assert!(sent.is_empty());
                }
            }
            3 | 4 => {
                let n = u.int_in_range(0..=40)?;
                for &b in u.bytes(n)? {
                    let room = self.rx.len() < pl011::RX_FIFO_DEPTH;
                    assert_eq!(self.uart.push_rx(b), room);
                    if room {
                        self.rx.push_back(b);
                    }
                }
            }
            _ => {
                self.uart.reset();
                self.rx.clear();
            }
        }
        assert_eq!(self.uart.rx_len(), self.rx.len());
        assert!(self.uart.rx_len() + self.uart.rx_free() == pl011::RX_FIFO_DEPTH);
        let level = self.uart.irq_level();
        assert_eq!(level, self.uart.read(pl011::MIS, 4) != Ok(0));
        // As hv-arm does: the UART's line drives its SPI.
        let m = self.gic.set_line(0, layout::VPL011_INTID, level);
        self.mask(m);
        Ok(())
    }

    /// The end of the domain: every forwarded interrupt must come back.
    fn teardown(&mut self) {
        self.exit_all();
        self.drain();
        self.gic.reset();
        self.drain();
        let leaked: Vec<_> = self.hw.iter().flatten().collect();
        assert!(
            leaked.is_empty(),
            "never deactivated (pINTID, vCPU): {leaked:?}"
        );
    }
}

fn dist_access(u: &mut Unstructured) -> Result<(u64, u8)> {
    let off = match u.arbitrary::<u8>()? % 8 {
        0 => u.arbitrary::<u64>()?,
        1 | 2 => u.arbitrary::<u16>()? as u64,
        3 => 0xffd0 + 4 * u64::from(u.arbitrary::<u8>()? % 12),
        _ => {
            let base = DIST_REGS[u.choose_index(DIST_REGS.len())?];
            base + 4 * u64::from(u.arbitrary::<u8>()? % 64)
        }
    };
    Ok((off, size(u)?))
}

fn redist_access(u: &mut Unstructured) -> Result<(u64, u8)> {
    let off = match u.arbitrary::<u8>()? % 8 {
        0 => u.arbitrary::<u64>()?,
        1 => u.arbitrary::<u32>()? as u64 % (REDIST_FRAME_SIZE + 16),
        _ => {
            let base = REDIST_REGS[u.choose_index(REDIST_REGS.len())?];
            base + 4 * u64::from(u.arbitrary::<u8>()? % 8)
        }
    };
    Ok((off, size(u)?))
}

fn size(u: &mut Unstructured) -> Result<u8> {
    Ok(match u.arbitrary::<u8>()? {
        0xf0.. => u.arbitrary()?,
        b => [4, 8, 1, 2][b as usize % 4],
    })
}

fn value(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.arbitrary::<u8>()? % 4 {
        0 => u64::MAX,
        1 => 1 << (u.arbitrary::<u8>()? % 64),
        _ => u.arbitrary()?,
    })
}

fn check_esr(v: u64) {
    match esr::decode(v) {
        esr::Exit::DataAbort(d) => {
            assert_eq!(esr::ec(v), esr::EC_DABT_LOW);
            if d.isv {
                assert!(matches!(d.sas_bytes, 1 | 2 | 4 | 8));
                assert!(d.rt < 32);
            } else {
                assert_eq!(
                    (d.sas_bytes, d.rt, d.sf, d.sign_extend),
                    (0, 0, false, false)
                );
            }
            assert!(d.dfsc < 64);
            let _ = d.is_translation_fault();
        }
        esr::Exit::SysReg(s) => {
            assert_eq!(esr::ec(v), esr::EC_SYS64);
            assert!(s.op0 < 4 && s.op1 < 8 && s.op2 < 8 && s.crn < 16 && s.crm < 16 && s.rt < 32);
            assert_eq!(s.is(esr::ICC_SGI1R_EL1), s.encoding() == esr::ICC_SGI1R_EL1);
        }
        esr::Exit::InstructionAbort { ifsc } => assert!(ifsc < 64),
        esr::Exit::Other { ec } => {
            assert_eq!(ec, esr::ec(v));
            assert!(ec < 64);
        }
        esr::Exit::Wfx { .. } | esr::Exit::Hvc { .. } | esr::Exit::Smc { .. } => {}
    }
    for kind in [
        esr::VectorKind::Sync,
        esr::VectorKind::Irq,
        esr::VectorKind::Fiq,
        esr::VectorKind::SError,
    ] {
        let off = esr::vector_offset(v, kind);
        assert!(off < 0x800 && off.is_multiple_of(0x80));
    }
    let p = esr::injected_pstate(v);
    assert_eq!(p & !(1 << 24), esr::PSTATE_EL1H_MASKED);
}

fn check_psci(x0: u64, x1: u64, x2: u64, x3: u64) {
    let call = psci::decode(x0, x1, x2, x3);
    let fid = x0 as u32;
    let smc32 = fid & (1 << 30) == 0;
    let fits = |x: u64| !smc32 || x <= u64::from(u32::MAX);
    match call {
        psci::Call::CpuOn {
            target_mpidr,
            entry,
            context_id,
        } => assert!(fits(target_mpidr) && fits(entry) && fits(context_id)),
        psci::Call::CpuSuspend {
            entry, context_id, ..
        } => assert!(fits(entry) && fits(context_id)),
        psci::Call::AffinityInfo { target_mpidr, .. } => assert!(fits(target_mpidr)),
        psci::Call::Unknown(f) => {
            assert_eq!(f, fid);
            assert_eq!(psci::features(fid), psci::NOT_SUPPORTED);
        }
        _ => assert_eq!(psci::features(fid), psci::SUCCESS),
    }
    let _ = call.is_powerdown_suspend();
    let _ = psci::arch_features(fid);
    let r = psci::ret(x1 as i32);
    assert_eq!(r as i32, x1 as i32);
    assert_eq!(r as i64, i64::from(x1 as i32));
}

fn check_image(u: &mut Unstructured) -> Result<()> {
    let len = u.int_in_range(0..=96)?;
    let mut bytes = u.bytes(len)?.to_vec();
    if u.arbitrary::<bool>()? && bytes.len() >= 0x3c {
        bytes[0x38..0x3c].copy_from_slice(&image::MAGIC.to_le_bytes());
    }
    let file_len = u.arbitrary::<u64>()?;
    let base = u.arbitrary::<u64>()?;
    match image::parse(&bytes) {
        Ok(h) => {
            assert!(bytes.len() >= image::HEADER_SIZE);
            assert!(h.text_offset < image::BASE_ALIGN && h.text_offset % image::PAGE_SIZE == 0);
            assert!(h.image_size == 0 || h.image_size >= image::HEADER_SIZE as u64);
            assert_eq!(h.flags & image::FLAG_BE, 0);
            if let Some(f) = h.footprint(file_len) {
                assert!(f % image::PAGE_SIZE == 0 && f >= file_len && f >= h.image_size);
            }
            let _ = h.page_size();
            let _ = h.placement_anywhere();
            if let Some(a) = h.load_address(base) {
                assert_eq!(base % image::BASE_ALIGN, 0);
                assert_eq!(a, base + h.text_offset);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

fn check_guest_dt(u: &mut Unstructured) -> Result<()> {
    let ram_size = match u.arbitrary::<u8>()? % 4 {
        0 => u.arbitrary()?,
        _ => u64::from(u.int_in_range(0..=0x601u32)?) * guest_dt::RAM_ALIGN,
    };
    let nr_vcpus = match u.arbitrary::<u8>()? {
        0xff => u.arbitrary()?,
        b => u32::from(b) % (guest_dt::MAX_VCPUS + 2),
    };
    let initrd = match u.arbitrary::<u8>()? % 4 {
        0 => None,
        1 => Some((u.arbitrary()?, u.arbitrary()?)),
        _ => {
            let start = layout::RAM0_BASE + u64::from(u.arbitrary::<u32>()?);
            Some((start, start + u64::from(u.arbitrary::<u16>()?)))
        }
    };
    let len = u.int_in_range(0..=64)?;
    let mut bootargs = String::from_utf8_lossy(u.bytes(len)?).into_owned();
    if u.ratio(1, 64)? {
        bootargs = "x".repeat(guest_dt::MAX_BOOTARGS + u.int_in_range(0..=1)?);
    }
    let cfg = GuestDtConfig {
        ram_size,
        nr_vcpus,
        bootargs: &bootargs,
        initrd,
        restart_count: u.arbitrary()?,
        vpl011: u.arbitrary()?,
        xen: if u.arbitrary()? {
            Some(guest_dt::XenNode {
                grant_table: (armvm::layout::GNTTAB_BASE, armvm::layout::GNTTAB_SIZE),
                extended: &[(
                    armvm::layout::EXT_REGION_BASE,
                    armvm::layout::EXT_REGION_SIZE,
                )],
                evtchn_ppi: u.int_in_range(0..=40)?,
            })
        } else {
            None
        },
        shm: &[],
    };
    let blob = match guest_dt::build(&cfg) {
        Ok(b) => b,
        Err(e) => {
            assert!(!matches!(e, DtError::Writer(_)), "{cfg:?}: {e}");
            assert!(!e.to_string().is_empty());
            return Ok(());
        }
    };
    let fdt = Fdt::new(&blob).unwrap_or_else(|e| panic!("{cfg:?}: own tree refused: {e}"));
    let root = fdt.root();
    let child = |name: &str| root.children().find(|c| c.name() == name);
    let chosen = child("chosen").expect("/chosen");
    let mut want = bootargs.clone().into_bytes();
    want.push(0);
    assert_eq!(chosen.property("bootargs"), Some(&want[..]));
    assert_eq!(
        chosen.property("hv,restart-count"),
        Some(&cfg.restart_count.to_be_bytes()[..])
    );
    let cpus = child("cpus").expect("/cpus");
    assert_eq!(cpus.children().count(), nr_vcpus as usize);
    let memory = root
        .children()
        .find(|c| c.base_name() == "memory")
        .expect("/memory");
    let mut reg = layout::RAM0_BASE.to_be_bytes().to_vec();
    reg.extend_from_slice(&ram_size.to_be_bytes());
    assert_eq!(memory.property("reg"), Some(&reg[..]));
    let uart = guest_dt::pl011_path();
    assert_eq!(child(&uart[1..]).is_some(), cfg.vpl011);
    Ok(())
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let nr = 1 + usize::from(u.arbitrary::<u8>()?) % MAX_VCPUS;
    let nr_spis = match u.arbitrary::<u8>()? {
        0xff => u.arbitrary::<u32>()?,
        b => u32::from(b) * 4,
    };
    let mut h = Harness::new(nr, nr_spis);
    if u.arbitrary::<u8>()? & 1 != 0 {
        h.enable_everything(&mut u)?;
    }
    let mut ops = 0;
    while !u.is_empty() && ops < MAX_OPS {
        if let Err(e) = h.op(&mut u) {
            // Out of input halfway through an operation: stop there.
            h.drain();
            h.teardown();
            return Err(e);
        }
        ops += 1;
    }
    h.teardown();
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
