//! A domain: its memory, stage-2 translation, virtual devices and vCPUs,
//! and the lifecycle around them (build, reboot, power-off, crash,
//! destroy).
//!
//! Guest RAM is one contiguous range of guest addresses from
//! `armvm::layout::RAM0_BASE`, backed by a few power-of-two pieces of host
//! memory taken from the heap (so a 192 MiB domain costs 192 MiB, not the
//! 256 MiB one buddy block would), each mapped by stage 2. It is scrubbed
//! before every (re)build and when the domain is destroyed, so nothing from
//! a previous life, another domain or the host reaches a guest. Boot
//! modules stay where the boot loader put them (the heap never hands them
//! out), so a reboot or a restart after a crash reloads them.
//!
//! Each vCPU is placed on one physical CPU for its life (see [`crate::sched`]).
//! Its power state moves OFF → ON_PENDING (PSCI CPU_ON, or the build for
//! vCPU 0) → ON (its CPU picked it up) → OFF (CPU_OFF, or the domain
//! stopping). Stopping (SYSTEM_OFF, SYSTEM_RESET, a crash) is a request
//! every vCPU sees at its next exit; the last vCPU to stop carries it out:
//! a rebuild (reboot, or a crash under `hv,on-crash = "restart"`) or the
//! domain's destruction (power-off, or a crash under "destroy"), which
//! scrubs its memory and returns it to the heap.

use alloc::alloc::{Layout, alloc, dealloc};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::arch::Lock as Mutex;
use crate::guest_entry::GuestRegs;
use crate::sysregs::El1Regs;
use armvm::layout;
use armvm::pl011::Pl011;
use common::dom0less::OnCrash;
use common::memory::PhysRange;
use gic::vgic::{VGic, VcpuMask};

use crate::stage2::{Access, Stage2};
use crate::{arch, info, mem, println, warn};

/// vCPU power states.
pub const OFF: u8 = 0;
/// CPU_ON accepted; the vCPU's CPU has not picked it up yet.
pub const ON_PENDING: u8 = 1;
/// Running (or blocked in WFI).
pub const ON: u8 = 2;

/// Why a domain stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    /// Not stopping.
    None = 0,
    /// PSCI SYSTEM_OFF.
    PowerOff = 1,
    /// PSCI SYSTEM_RESET.
    Reboot = 2,
    /// An exception the hypervisor could not handle for it.
    Crash = 3,
}

impl Stop {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Stop::PowerOff,
            2 => Stop::Reboot,
            3 => Stop::Crash,
            _ => Stop::None,
        }
    }
}

/// What a vCPU's physical CPU keeps of it while it is not running.
pub struct VcpuCtx {
    /// General-purpose and FP/SIMD registers, PC and PSTATE.
    pub regs: GuestRegs,
    /// EL1 system registers, virtual timer and vGIC interface state.
    pub el1: El1Regs,
    /// It executed WFI with nothing to take and left its CPU to another
    /// vCPU; it runs again when an interrupt is deliverable or its timer
    /// is due.
    pub blocked: bool,
}

/// One virtual CPU.
pub struct Vcpu {
    /// Index in the domain (also its Aff0/Aff1, see `layout::vcpu_mpidr`).
    pub id: u32,
    /// The physical CPU it is placed on (logical id).
    pub pcpu: usize,
    /// MPIDR of that physical CPU (to send it SGIs).
    pub pcpu_mpidr: u64,
    power: AtomicU8,
    /// Entry point and context id for the next power-on.
    boot: Mutex<(u64, u64)>,
    /// Its saved state; only its own physical CPU takes this lock.
    pub ctx: Mutex<Box<VcpuCtx>>,
}

impl Vcpu {
    /// Its power state.
    pub fn power(&self) -> u8 {
        self.power.load(Ordering::Acquire)
    }
}

/// What a domain is built from.
pub struct DomainConfig {
    /// Name for messages and the console prefix.
    pub name: String,
    /// Guest RAM in bytes (multiple of 2 MiB).
    pub ram_size: u64,
    /// Per vCPU: the physical CPU (logical id) and its MPIDR.
    pub placement: Vec<(usize, u64)>,
    /// The kernel module.
    pub kernel: PhysRange,
    /// The ramdisk module.
    pub initrd: Option<PhysRange>,
    /// The kernel command line.
    pub bootargs: String,
    /// Whether the guest gets a virtual PL011 (its console).
    pub vpl011: bool,
    /// What a crash leads to.
    pub on_crash: OnCrash,
    /// It speaks Xen's guest ABI (`xen,enhanced`): its tree gets the
    /// `/hypervisor` node.
    pub xen: bool,
    /// Static shared memory (xen,domain-shared-memory-v1) mapped into it:
    /// host pages kept out of the heap at boot, writable by every domain
    /// that names the region.
    pub shm: Vec<ShmMap>,
}

/// One static shared-memory region as a domain sees it.
#[derive(Clone, Debug)]
pub struct ShmMap {
    /// `xen,shm-id`.
    pub id: String,
    /// Host physical address (page aligned, outside the heap).
    pub host: u64,
    /// Guest physical address (page aligned, free in the guest's map).
    pub guest: u64,
    /// Bytes (page multiple).
    pub size: u64,
}

/// One piece of a domain's RAM: `size` bytes at host `pa`, seen by the
/// guest at RAM offset `off`.
#[derive(Clone, Copy)]
struct Piece {
    off: u64,
    pa: u64,
    size: u64,
}

/// A domain's RAM: host pieces covering guest offsets 0..size in order.
pub struct GuestRam {
    pieces: Vec<Piece>,
    size: u64,
}

/// The smallest piece: stage 2 maps 2 MiB blocks.
const PIECE_MIN: u64 = 2 << 20;

impl GuestRam {
    /// Takes `size` bytes (a multiple of 2 MiB) from the heap in
    /// power-of-two pieces, largest first; a piece the heap cannot give is
    /// split in two, down to 2 MiB. Everything is given back on failure.
    fn alloc(size: u64) -> Result<Self, BuildError> {
        let mut ram = GuestRam {
            pieces: Vec::new(),
            size: 0,
        };
        let mut want: Vec<u64> = (0..64)
            .rev()
            .map(|b| 1u64 << b)
            .filter(|&p| size & p != 0)
            .collect();
        // `want` is used as a stack: the next piece is at its end.
        want.reverse();
        while let Some(piece) = want.pop() {
            let layout = Layout::from_size_align(piece as usize, PIECE_MIN as usize)
                .map_err(|_| BuildError::NoMemory(size))?;
            // SAFETY: non-zero size; the piece is scrubbed before any use.
            let p = unsafe { alloc(layout) };
            if !p.is_null() {
                ram.pieces.push(Piece {
                    off: ram.size,
                    pa: p as u64,
                    size: piece,
                });
                ram.size += piece;
            } else if piece > PIECE_MIN {
                want.push(piece / 2);
                want.push(piece / 2);
            } else {
                ram.free();
                return Err(BuildError::NoMemory(size));
            }
        }
        Ok(ram)
    }

    /// Calls `f(host address, length)` for each host range backing guest
    /// RAM offsets `off..off+len` (clipped to the RAM), in order.
    fn for_range(&self, off: u64, len: u64, mut f: impl FnMut(u64, u64)) {
        let end = off.saturating_add(len).min(self.size);
        for p in &self.pieces {
            let s = off.max(p.off);
            let e = end.min(p.off + p.size);
            if s < e {
                f(p.pa + (s - p.off), e - s);
            }
        }
    }

    /// Zeroes guest RAM `off..off+len` (512-byte aligned) to the point of
    /// coherency.
    fn scrub(&self, off: u64, len: u64) {
        self.for_range(off, len, |pa, n| {
            // SAFETY: a range of this domain's own pieces, which no vCPU
            // runs on while the domain is built or torn down.
            unsafe { mem::scrub(pa as usize, n as usize) }
        });
    }

    /// Copies `bytes` to guest RAM offset `off` (the caller checked it fits).
    fn load(&self, off: u64, bytes: &[u8]) {
        let mut done = 0usize;
        self.for_range(off, bytes.len() as u64, |pa, n| {
            let n = n as usize;
            if let Some(chunk) = bytes.get(done..done + n) {
                // SAFETY: inside this domain's own pieces; `bytes` is a boot
                // module, which never overlaps heap memory.
                unsafe { mem::load(pa as usize, chunk) };
            }
            done += n;
        });
    }

    /// Maps every piece into `stage2` at `RAM0_BASE + off`.
    fn map(&self, stage2: &mut Stage2) -> Result<(), BuildError> {
        for p in &self.pieces {
            stage2
                .map(layout::RAM0_BASE + p.off, p.pa, p.size, Access::ReadWrite)
                .map_err(BuildError::Stage2)?;
        }
        Ok(())
    }

    /// Host address of RAM page `off` (page aligned, inside the RAM).
    fn host_of(&self, off: u64) -> Option<u64> {
        if off >= self.size {
            return None;
        }
        self.pieces
            .iter()
            .find(|p| off >= p.off && off - p.off < p.size)
            .map(|p| p.pa + (off - p.off))
    }

    /// Returns every piece to the heap.
    fn free(&mut self) {
        for p in self.pieces.drain(..) {
            if let Ok(layout) = Layout::from_size_align(p.size as usize, PIECE_MIN as usize) {
                // SAFETY: allocated in `alloc` with this layout, freed once
                // (drained from the list).
                unsafe { dealloc(p.pa as *mut u8, layout) };
            }
        }
        self.size = 0;
    }
}

/// Lifecycle of a domain.
const LIVE: u8 = 0;
const DEAD: u8 = 1;

/// A guest.
pub struct Domain {
    /// Domain id, also its stage-2 VMID (1-based, in build order).
    pub id: u16,
    cfg: DomainConfig,
    ram: Mutex<GuestRam>,
    stage2: Stage2,
    /// The virtual GIC (on the heap: it is about 15 KiB).
    pub vgic: Mutex<Box<VGic>>,
    /// The virtual PL011.
    pub uart: Mutex<Pl011>,
    /// Its vCPUs.
    pub vcpus: Vec<Vcpu>,
    cntvoff: AtomicU64,
    restarts: AtomicU32,
    stop: AtomicU8,
    state: AtomicU8,
    /// vCPUs not OFF.
    active: AtomicU32,
    /// Where the kernel starts (IPA).
    entry: AtomicU64,
    /// Guest DTB (IPA).
    dtb: AtomicU64,
    first_entry_logged: AtomicBool,
}

/// Why a domain could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The kernel module is not an arm64 Image.
    Image(armvm::image::ImageError),
    /// Guest RAM could not be allocated.
    NoMemory(u64),
    /// Stage 2 could not be set up.
    Stage2(crate::stage2::MapError),
    /// The guest DT could not be written.
    Dt(armvm::guest_dt::DtError),
    /// Kernel, ramdisk and DTB do not fit the guest RAM.
    TooBig(&'static str),
    /// Guest RAM not a multiple of 2 MiB between 4 MiB and 3 GiB.
    BadMemory(u64),
    /// No vCPU, or more than the vGIC serves.
    BadVcpus(usize),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::Image(e) => write!(f, "kernel: {}", e),
            BuildError::NoMemory(n) => write!(
                f,
                "{} MiB of memory asked for, {} MiB free: memory does not fit",
                n >> 20,
                crate::heap::free() >> 20
            ),
            BuildError::Stage2(e) => write!(f, "stage 2: {:?}", e),
            BuildError::Dt(e) => write!(f, "guest device tree: {:?}", e),
            BuildError::TooBig(what) => write!(f, "{} does not fit in guest RAM", what),
            BuildError::BadMemory(n) => write!(
                f,
                "guest RAM of {:#x} bytes: it must be a multiple of 2 MiB from 4 MiB to 3 GiB",
                n
            ),
            BuildError::BadVcpus(n) => write!(
                f,
                "{} vcpus: from 1 to {} are served",
                n,
                gic::vgic::MAX_VCPUS
            ),
        }
    }
}

/// Guest DTB space at the top of RAM (Linux accepts at most 2 MiB).
const DTB_SPACE: u64 = 2 << 20;

/// Views a host module as bytes.
fn module_bytes(r: PhysRange) -> &'static [u8] {
    // SAFETY: module ranges come from the boot DT, lie in RAM the boot map
    // covers (checked by the caller of `Domain::create`) and are kept out
    // of the heap for the hypervisor's lifetime; they are only read.
    unsafe { core::slice::from_raw_parts(r.start as *const u8, r.size() as usize) }
}

impl Domain {
    /// Allocates and maps the domain's memory and loads it for a first boot.
    pub fn create(id: u16, cfg: DomainConfig) -> Result<Box<Self>, BuildError> {
        if cfg.ram_size < 2 * DTB_SPACE
            || !cfg.ram_size.is_multiple_of(2 << 20)
            || cfg.ram_size > layout::RAM0_MAX
        {
            return Err(BuildError::BadMemory(cfg.ram_size));
        }
        let nr = cfg.placement.len();
        if nr == 0 || nr > gic::vgic::MAX_VCPUS {
            return Err(BuildError::BadVcpus(nr));
        }
        let mut ram = GuestRam::alloc(cfg.ram_size)?;
        let mut stage2 = match Stage2::new(id) {
            Ok(s) => s,
            Err(e) => {
                ram.free();
                return Err(BuildError::Stage2(e));
            }
        };
        if let Err(e) = ram.map(&mut stage2) {
            ram.free();
            return Err(e);
        }
        for m in &cfg.shm {
            // Never executable: a region another domain writes is not code.
            if let Err(e) = stage2.map(m.guest, m.host, m.size, Access::DataReadWrite) {
                ram.free();
                return Err(BuildError::Stage2(e));
            }
        }
        let mpidrs: Vec<u64> = (0..nr as u32).map(layout::vcpu_mpidr).collect();
        let vcpus = cfg
            .placement
            .iter()
            .enumerate()
            .map(|(i, &(pcpu, mpidr))| Vcpu {
                id: i as u32,
                pcpu,
                pcpu_mpidr: mpidr,
                power: AtomicU8::new(OFF),
                boot: Mutex::new((0, 0)),
                ctx: Mutex::new(Box::new(VcpuCtx {
                    regs: GuestRegs::new(0, 0),
                    el1: El1Regs::reset(),
                    blocked: false,
                })),
            })
            .collect();
        let d = Box::new(Domain {
            id,
            ram: Mutex::new(ram),
            stage2,
            vgic: Mutex::new(Box::new(VGic::new(&mpidrs, layout::VGIC_SPIS))),
            uart: Mutex::new(Pl011::new()),
            vcpus,
            cntvoff: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            stop: AtomicU8::new(Stop::None as u8),
            state: AtomicU8::new(LIVE),
            active: AtomicU32::new(0),
            entry: AtomicU64::new(0),
            dtb: AtomicU64::new(0),
            first_entry_logged: AtomicBool::new(false),
            cfg,
        });
        if let Err(e) = d.load() {
            d.ram.lock().free();
            return Err(e);
        }
        Ok(d)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Its RAM in bytes.
    pub fn ram_size(&self) -> u64 {
        self.cfg.ram_size
    }

    /// Whether it speaks Xen's guest ABI.
    pub fn has_xen(&self) -> bool {
        self.cfg.xen
    }

    /// Whether it has a virtual PL011.
    pub fn has_vpl011(&self) -> bool {
        self.cfg.vpl011
    }

    /// Whether it has been destroyed (its memory is back in the heap).
    pub fn is_dead(&self) -> bool {
        self.state.load(Ordering::Acquire) == DEAD
    }

    /// Host address of guest RAM frame `gfn`, if it is one.
    pub fn ram_host(&self, gfn: u64) -> Option<u64> {
        let off = gfn.checked_mul(4096)?.checked_sub(layout::RAM0_BASE)?;
        self.ram.lock().host_of(off)
    }

    /// Whether guest-physical `ipa` lies in one of its static shared-memory
    /// regions (which the Xen ABI must not map over).
    pub fn in_shm(&self, ipa: u64) -> bool {
        self.cfg
            .shm
            .iter()
            .any(|m| ipa >= m.guest && ipa - m.guest < m.size)
    }

    /// Its stage-2 translation.
    pub fn stage2(&self) -> &Stage2 {
        &self.stage2
    }

    /// VTTBR_EL2 of this domain.
    pub fn vttbr(&self) -> u64 {
        self.stage2.vttbr()
    }

    /// CNTVOFF_EL2: the guest's virtual counter starts near 0 at each build.
    pub fn cntvoff(&self) -> u64 {
        self.cntvoff.load(Ordering::Relaxed)
    }

    /// Times this domain has been rebooted or restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Scrubs RAM, loads kernel, ramdisk and a fresh DTB, resets the
    /// devices and makes vCPU 0 ready to start at the kernel.
    fn load(&self) -> Result<(), BuildError> {
        let ram_size = self.cfg.ram_size;
        let kernel = module_bytes(self.cfg.kernel);
        let hdr = armvm::image::parse(kernel).map_err(BuildError::Image)?;
        let footprint = hdr
            .footprint(kernel.len() as u64)
            .ok_or(BuildError::TooBig("the kernel"))?;
        let kernel_off = hdr.text_offset;
        let kernel_end = kernel_off
            .checked_add(footprint)
            .ok_or(BuildError::TooBig("the kernel"))?;
        let dtb_off = ram_size - DTB_SPACE;
        if kernel_end > dtb_off {
            return Err(BuildError::TooBig("the kernel"));
        }
        let ram = self.ram.lock();
        // Everything but the bytes the kernel's file covers is scrubbed
        // (the kernel's own bss included); the kernel is copied over the
        // rest. No vCPU runs (first build, or every vCPU has stopped).
        let below = kernel_off & !511;
        let above = (kernel_off + kernel.len() as u64) & !511;
        ram.scrub(0, below);
        ram.scrub(above, ram_size - above);
        ram.load(kernel_off, kernel);

        let initrd = match self.cfg.initrd {
            Some(r) => {
                let bytes = module_bytes(r);
                let size = bytes.len() as u64;
                // Just below the DTB, page aligned.
                let start = dtb_off
                    .checked_sub(size)
                    .map(|s| s & !0xfff)
                    .filter(|&s| s >= kernel_end)
                    .ok_or(BuildError::TooBig("the ramdisk"))?;
                ram.load(start, bytes);
                Some((layout::RAM0_BASE + start, layout::RAM0_BASE + start + size))
            }
            None => None,
        };

        let shm: Vec<(u64, u64, &str)> = self
            .cfg
            .shm
            .iter()
            .map(|m| (m.guest, m.size, m.id.as_str()))
            .collect();
        let extended = armvm::guest_dt::extended_regions(&shm);
        let dt = armvm::guest_dt::build(&armvm::guest_dt::GuestDtConfig {
            ram_size,
            nr_vcpus: self.vcpus.len() as u32,
            bootargs: &self.cfg.bootargs,
            initrd,
            restart_count: self.restarts(),
            vpl011: self.cfg.vpl011,
            xen: self.cfg.xen.then_some(armvm::guest_dt::XenNode {
                grant_table: (layout::GNTTAB_BASE, layout::GNTTAB_SIZE),
                extended: &extended,
                evtchn_ppi: layout::EVTCHN_INTID,
            }),
            shm: &shm,
        })
        .map_err(BuildError::Dt)?;
        if dt.len() as u64 > DTB_SPACE {
            return Err(BuildError::TooBig("the device tree"));
        }
        ram.load(dtb_off, &dt);
        drop(ram);

        self.vgic.lock().reset();
        *self.uart.lock() = Pl011::new();
        self.cntvoff.store(arch::counter(), Ordering::Relaxed);
        self.entry
            .store(layout::RAM0_BASE + kernel_off, Ordering::Relaxed);
        self.dtb
            .store(layout::RAM0_BASE + dtb_off, Ordering::Relaxed);
        self.stage2.flush();
        info!(
            "d{}: kernel {} bytes at ipa {:#x}, dtb {} bytes at {:#x}, ramdisk {} bytes",
            self.id,
            kernel.len(),
            layout::RAM0_BASE + kernel_off,
            dt.len(),
            layout::RAM0_BASE + dtb_off,
            initrd.map_or(0, |(s, e)| e - s)
        );
        Ok(())
    }

    /// Powers vCPU 0 on at the kernel entry with x0 = the DTB.
    pub fn start(&self) {
        self.first_entry_logged.store(false, Ordering::Relaxed);
        let Some(v0) = self.vcpus.first() else { return };
        *v0.boot.lock() = (
            self.entry.load(Ordering::Relaxed),
            self.dtb.load(Ordering::Relaxed),
        );
        self.active.fetch_add(1, Ordering::AcqRel);
        v0.power.store(ON_PENDING, Ordering::Release);
        self.kick_vcpu(0);
    }

    /// Logs the first guest instruction of this boot, once.
    pub fn note_first_entry(&self) {
        if !self.first_entry_logged.swap(true, Ordering::Relaxed) {
            let t = crate::time::ticks_since_entry();
            info!(
                "d{}: first guest instruction {} ticks ({} us) after hypervisor entry",
                self.id,
                t,
                crate::time::ticks_to_us(t)
            );
        }
    }

    /// PSCI CPU_ON: Ok, or the PSCI error code.
    pub fn cpu_on(&self, target: u32, entry: u64, context: u64) -> Result<(), i32> {
        use armvm::psci::{ALREADY_ON, INVALID_ADDRESS, INVALID_PARAMETERS, ON_PENDING as PENDING};
        let v = self.vcpus.get(target as usize).ok_or(INVALID_PARAMETERS)?;
        if !layout::in_ram(entry, 4, self.cfg.ram_size) || !entry.is_multiple_of(4) {
            return Err(INVALID_ADDRESS);
        }
        if self.stopping() != Stop::None {
            return Err(armvm::psci::DENIED);
        }
        let mut boot = v.boot.lock();
        match v
            .power
            .compare_exchange(OFF, ON_PENDING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                *boot = (entry, context);
                self.active.fetch_add(1, Ordering::AcqRel);
                drop(boot);
                self.kick_vcpu(target);
                Ok(())
            }
            Err(ON_PENDING) => Err(PENDING),
            Err(_) => Err(ALREADY_ON),
        }
    }

    /// Takes the boot request of a vCPU in ON_PENDING: its entry and
    /// context id, and marks it ON. None if it is not pending, or if the
    /// domain is stopping (then the request is dropped and the stop may
    /// complete: see [`Domain::vcpu_stopped`]).
    pub fn take_boot(&self, vcpu: u32) -> Option<(u64, u64)> {
        let v = self.vcpus.get(vcpu as usize)?;
        if v.power() != ON_PENDING {
            return None;
        }
        if self.stopping() != Stop::None {
            return None;
        }
        let b = *v.boot.lock();
        v.power.store(ON, Ordering::Release);
        Some(b)
    }

    /// PSCI AFFINITY_INFO for one vCPU: 0 on, 1 off, 2 on pending.
    pub fn affinity_info(&self, target: u32) -> Option<i32> {
        self.vcpus.get(target as usize).map(|v| match v.power() {
            ON => 0,
            ON_PENDING => 2,
            _ => 1,
        })
    }

    /// The stop request in force.
    pub fn stopping(&self) -> Stop {
        Stop::from_u8(self.stop.load(Ordering::Acquire))
    }

    /// Asks every vCPU to stop for `why` (the first request wins).
    pub fn request_stop(&self, why: Stop) {
        if self
            .stop
            .compare_exchange(
                Stop::None as u8,
                why as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            for v in &self.vcpus {
                self.kick_vcpu(v.id);
            }
        }
    }

    /// A vCPU went OFF (CPU_OFF, or stopping). The last one to go while a
    /// stop is requested carries the stop out; returns what happened then.
    pub fn vcpu_stopped(&self, vcpu: u32) -> Option<Outcome> {
        let v = self.vcpus.get(vcpu as usize)?;
        if v.power.swap(OFF, Ordering::AcqRel) == OFF {
            return None;
        }
        let left = self.active.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        let why = self.stopping();
        if left != 0 || why == Stop::None {
            return None;
        }
        Some(self.finish(why))
    }

    /// Carries out a stop once every vCPU is off.
    fn finish(&self, why: Stop) -> Outcome {
        let rebuild = match why {
            Stop::Reboot => true,
            Stop::Crash => self.cfg.on_crash == OnCrash::Restart,
            Stop::PowerOff | Stop::None => false,
        };
        // The Xen ABI state lets go of everything first (grants others map
        // of this domain are revoked from their translations), before the
        // memory is reloaded or scrubbed and freed.
        crate::xen::domain_stopping(self.id, rebuild);
        if rebuild {
            self.restarts.fetch_add(1, Ordering::Relaxed);
            if why == Stop::Crash {
                println!(
                    "({}) restarting after its crash (hv,on-crash = \"restart\")",
                    self.name()
                );
            } else {
                println!("({}) rebooting", self.name());
            }
            info!("d{}: rebuild {}", self.id, self.restarts());
            match self.load() {
                Ok(()) => {
                    self.stop.store(Stop::None as u8, Ordering::Release);
                    self.start();
                    return Outcome::Restarted;
                }
                Err(e) => println!("({}) cannot rebuild: {}", self.name(), e),
            }
        }
        self.destroy();
        if why == Stop::PowerOff {
            Outcome::PoweredOff
        } else {
            Outcome::Destroyed
        }
    }

    /// Scrubs the domain's memory, returns it to the heap and marks the
    /// domain dead. Every vCPU is off.
    fn destroy(&self) {
        let mut ram = self.ram.lock();
        let size = ram.size;
        ram.scrub(0, size);
        ram.free();
        drop(ram);
        // Physical interrupts still forwarded to it are released.
        let mut vgic = self.vgic.lock();
        vgic.reset();
        for v in &self.vcpus {
            if v.pcpu == arch::cpu_id() {
                vgic.drain_hw_deactivations(v.id as usize, &mut |p| {
                    gic::host::HostGic::deactivate(crate::run::intid_of(p))
                });
            }
        }
        drop(vgic);
        self.state.store(DEAD, Ordering::Release);
        println!(
            "({}) destroyed: {} MiB scrubbed and returned ({} MiB free)",
            self.name(),
            size >> 20,
            crate::heap::free() >> 20
        );
        info!("d{}: destroyed, {} bytes returned", self.id, size);
    }

    /// Makes vCPU `n` look at its state soon: an SGI to its CPU (leaves the
    /// guest or ends a WFI) and an event (ends an idle WFE).
    pub fn kick_vcpu(&self, n: u32) {
        if let Some(v) = self.vcpus.get(n as usize) {
            if v.pcpu != arch::cpu_id() {
                crate::irq::kick(v.pcpu_mpidr);
            }
            aarch64_cpu::asm::sev();
        }
    }

    /// Kicks every vCPU in `mask` except the caller's.
    pub fn kick_mask(&self, mask: VcpuMask, me: u32) {
        for v in &self.vcpus {
            if v.id != me && mask & (1 << v.id) != 0 {
                self.kick_vcpu(v.id);
            }
        }
    }

    /// Crashes the domain: logs why and stops it.
    pub fn crash(&self, vcpu: u32, why: core::fmt::Arguments) {
        println!("({}) crashed on vcpu {}: {}", self.name(), vcpu, why);
        warn!("d{}v{}: domain crashed", self.id, vcpu);
        self.request_stop(Stop::Crash);
    }
}

/// What became of a domain whose last vCPU stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Rebuilt from its modules and started again.
    Restarted,
    /// Powered off: destroyed, memory returned.
    PoweredOff,
    /// Crashed (or could not be rebuilt): destroyed, memory returned.
    Destroyed,
}
