//! A domain: its memory, stage-2 translation, virtual devices and vCPUs,
//! and the lifecycle around them (build, reboot, power-off, crash).
//!
//! The domain owns guest RAM as one contiguous, 2 MiB-aligned piece of host
//! memory, mapped at the fixed guest address `armvm::layout::RAM0_BASE`.
//! It is scrubbed before every (re)build, so nothing from a previous life or
//! from the host reaches the guest. Boot modules stay where the boot loader
//! put them (the heap never hands them out), so a reboot reloads them.
//!
//! vCPUs are pinned 1:1 to physical CPUs: vCPU n runs on CPU n. A vCPU's
//! power state moves OFF → ON_PENDING (PSCI CPU_ON, or the build for vCPU 0)
//! → ON (its CPU picked it up) → OFF (CPU_OFF, or the domain stopping).
//! Stopping (SYSTEM_OFF, SYSTEM_RESET, a crash) is a request every vCPU
//! sees at its next exit; the last vCPU to stop carries it out.

use alloc::alloc::{Layout, alloc};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::arch::Lock as Mutex;
use armvm::layout;
use armvm::pl011::Pl011;
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

/// One virtual CPU.
pub struct Vcpu {
    /// Index in the domain (also its Aff0/Aff1, see `layout::vcpu_mpidr`).
    pub id: u32,
    /// The physical CPU it is pinned to (logical id).
    pub pcpu: usize,
    /// MPIDR of that physical CPU (to send it SGIs).
    pub pcpu_mpidr: u64,
    power: AtomicU8,
    /// Entry point and context id for the next power-on.
    boot: Mutex<(u64, u64)>,
}

impl Vcpu {
    /// Its power state.
    pub fn power(&self) -> u8 {
        self.power.load(Ordering::Acquire)
    }
}

/// What a domain is built from.
pub struct DomainConfig {
    /// Name for messages.
    pub name: String,
    /// Guest RAM in bytes (multiple of 2 MiB).
    pub ram_size: u64,
    /// vCPUs, pinned to physical CPUs 0..n with these MPIDRs.
    pub pcpu_mpidrs: Vec<u64>,
    /// The kernel module.
    pub kernel: PhysRange,
    /// The ramdisk module.
    pub initrd: Option<PhysRange>,
    /// The kernel command line.
    pub bootargs: String,
}

/// A guest.
pub struct Domain {
    /// Domain id (1-based; a capability model replaces "domid 0" later).
    pub id: u16,
    cfg: DomainConfig,
    ram_pa: u64,
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
    /// No vCPU.
    NoVcpus,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::Image(e) => write!(f, "kernel: {}", e),
            BuildError::NoMemory(n) => {
                write!(f, "no {} MiB block of memory for the guest", n >> 20)
            }
            BuildError::Stage2(e) => write!(f, "stage 2: {:?}", e),
            BuildError::Dt(e) => write!(f, "guest device tree: {:?}", e),
            BuildError::TooBig(what) => write!(f, "{} does not fit in guest RAM", what),
            BuildError::BadMemory(n) => write!(
                f,
                "guest RAM of {:#x} bytes: it must be a multiple of 2 MiB from 4 MiB to 3 GiB",
                n
            ),
            BuildError::NoVcpus => write!(f, "no vcpus"),
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
        if cfg.pcpu_mpidrs.is_empty() {
            return Err(BuildError::NoVcpus);
        }
        let layout = Layout::from_size_align(cfg.ram_size as usize, 2 << 20)
            .map_err(|_| BuildError::NoMemory(cfg.ram_size))?;
        // SAFETY: non-zero size; the block is scrubbed before any use.
        let ram = unsafe { alloc(layout) };
        if ram.is_null() {
            return Err(BuildError::NoMemory(cfg.ram_size));
        }
        let mut stage2 = Stage2::new(id).map_err(BuildError::Stage2)?;
        stage2
            .map(
                layout::RAM0_BASE,
                ram as u64,
                cfg.ram_size,
                Access::ReadWrite,
            )
            .map_err(BuildError::Stage2)?;
        let mpidrs: Vec<u64> = (0..cfg.pcpu_mpidrs.len() as u32)
            .map(layout::vcpu_mpidr)
            .collect();
        let vcpus = cfg
            .pcpu_mpidrs
            .iter()
            .enumerate()
            .map(|(i, &m)| Vcpu {
                id: i as u32,
                pcpu: i,
                pcpu_mpidr: m,
                power: AtomicU8::new(OFF),
                boot: Mutex::new((0, 0)),
            })
            .collect();
        let d = Box::new(Domain {
            id,
            ram_pa: ram as u64,
            stage2,
            vgic: Mutex::new(Box::new(VGic::new(&mpidrs, layout::VGIC_SPIS))),
            uart: Mutex::new(Pl011::new()),
            vcpus,
            cntvoff: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            stop: AtomicU8::new(Stop::None as u8),
            active: AtomicU32::new(0),
            entry: AtomicU64::new(0),
            dtb: AtomicU64::new(0),
            first_entry_logged: AtomicBool::new(false),
            cfg,
        });
        d.load()?;
        Ok(d)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// VTTBR_EL2 of this domain.
    pub fn vttbr(&self) -> u64 {
        self.stage2.vttbr()
    }

    /// CNTVOFF_EL2: the guest's virtual counter starts near 0 at each build.
    pub fn cntvoff(&self) -> u64 {
        self.cntvoff.load(Ordering::Relaxed)
    }

    /// Times this domain has been rebooted.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Scrubs RAM, loads kernel, ramdisk and a fresh DTB, resets the
    /// devices and makes vCPU 0 ready to start at the kernel.
    fn load(&self) -> Result<(), BuildError> {
        let ram = self.cfg.ram_size;
        let kernel = module_bytes(self.cfg.kernel);
        let hdr = armvm::image::parse(kernel).map_err(BuildError::Image)?;
        let footprint = hdr
            .footprint(kernel.len() as u64)
            .ok_or(BuildError::TooBig("the kernel"))?;
        let kernel_off = hdr.text_offset;
        let kernel_end = kernel_off
            .checked_add(footprint)
            .ok_or(BuildError::TooBig("the kernel"))?;
        let dtb_off = ram - DTB_SPACE;
        if kernel_end > dtb_off {
            return Err(BuildError::TooBig("the kernel"));
        }
        // Everything but the bytes the kernel's file covers is scrubbed
        // (the kernel's own bss included); the kernel is copied over the
        // rest. No vCPU runs (first build, or every vCPU has stopped).
        let below = kernel_off & !511;
        let above = (kernel_off + kernel.len() as u64) & !511;
        // SAFETY: both ranges lie in the domain's RAM, which it owns, and
        // are 512-byte aligned.
        unsafe {
            mem::scrub(self.ram_pa as usize, below as usize);
            mem::scrub((self.ram_pa + above) as usize, (ram - above) as usize);
        }
        // SAFETY: inside the domain's RAM (checked above), which it owns.
        unsafe { mem::load((self.ram_pa + kernel_off) as usize, kernel) };

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
                // SAFETY: inside the domain's RAM, above the kernel.
                unsafe { mem::load((self.ram_pa + start) as usize, bytes) };
                Some((layout::RAM0_BASE + start, layout::RAM0_BASE + start + size))
            }
            None => None,
        };

        let dt = armvm::guest_dt::build(&armvm::guest_dt::GuestDtConfig {
            ram_size: ram,
            nr_vcpus: self.vcpus.len() as u32,
            bootargs: &self.cfg.bootargs,
            initrd,
            restart_count: self.restarts(),
            vpl011: true,
        })
        .map_err(BuildError::Dt)?;
        if dt.len() as u64 > DTB_SPACE {
            return Err(BuildError::TooBig("the device tree"));
        }
        // SAFETY: the top 2 MiB of the domain's RAM.
        unsafe { mem::load((self.ram_pa + dtb_off) as usize, &dt) };

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
        let v0 = &self.vcpus[0];
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
    /// domain is stopping (then the request is dropped).
    pub fn take_boot(&self, vcpu: u32) -> Option<(u64, u64)> {
        let v = self.vcpus.get(vcpu as usize)?;
        if v.power() != ON_PENDING {
            return None;
        }
        if self.stopping() != Stop::None {
            self.vcpu_stopped(vcpu);
            return None;
        }
        let b = *v.boot.lock();
        v.power.store(ON, Ordering::Release);
        Some(b)
    }

    /// Whether a boot request waits for vCPU `vcpu`.
    pub fn take_boot_pending(&self, vcpu: u32) -> bool {
        self.vcpus
            .get(vcpu as usize)
            .is_some_and(|v| v.power() == ON_PENDING)
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
    /// stop is requested carries the stop out. Returns what happened.
    pub fn vcpu_stopped(&self, vcpu: u32) -> Option<Stop> {
        if let Some(v) = self.vcpus.get(vcpu as usize) {
            v.power.store(OFF, Ordering::Release);
        }
        let left = self.active.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        let why = self.stopping();
        if left != 0 || why == Stop::None {
            return None;
        }
        match why {
            Stop::Reboot => {
                self.restarts.fetch_add(1, Ordering::Relaxed);
                println!("({}) rebooting", self.name());
                info!("d{}: reboot {}", self.id, self.restarts());
                match self.load() {
                    Ok(()) => {
                        self.stop.store(Stop::None as u8, Ordering::Release);
                        self.start();
                    }
                    Err(e) => {
                        println!("({}) cannot rebuild: {}", self.name(), e);
                        return Some(Stop::Crash);
                    }
                }
            }
            Stop::PowerOff | Stop::Crash => {
                // SAFETY: every vCPU is off, so no guest touches the RAM.
                unsafe { mem::scrub(self.ram_pa as usize, self.cfg.ram_size as usize) };
            }
            Stop::None => {}
        }
        Some(why)
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
