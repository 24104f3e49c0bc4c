//! VMX on this CPU, the domains built from the boot modules, and the loop
//! that runs them until none is left.
//!
//! Each boot module is one domain: an ELF image whose command line names
//! it and sets its options (`viridian=LIST`, `memory=MiB`); the whole line
//! is also handed to the guest. Domains get one vCPU each and share the
//! one physical CPU round robin: a domain gives the CPU up when it blocks,
//! yields, spins (pause-loop exiting) or uses up its time slice (the VMX
//! preemption timer), so a domain that never exits cannot keep the others
//! from running.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use arrayvec::{ArrayString, ArrayVec};
use common::xen::{self, DomainConfig, Xen};
use hv_x86::acpi;
use hv_x86::elf;
use hv_x86::ept::{Ept, Perm};
use hv_x86::multiboot::{BootInfo, MAX_MODULES, MAX_RSDP};
use hv_x86::viridian::{self, Viridian};
use hv_x86::vlapic::VLapic;
use hv_x86::vmx::{self, Caps, Controls, Wanted};

use crate::cpu::PerCpu;
use crate::domain::{Dom, RAM_ALIGN, Ram, State, Tables};
use crate::exits::{self, Outcome, Reason, XenEnv};
use crate::hw;
use crate::log::log;
use crate::vcpu::{self, Region, Start, Vcpu};
use crate::{EXIT_FAILURE, EXIT_NO_VMX, EXIT_SUCCESS, port};

/// Where the guest's command line is put (EBX at entry points at it).
const CMDLINE_GPA: u64 = 0x1000;
/// Longest command line handed to a guest, NUL excluded.
const GUEST_CMDLINE: usize = 255;
/// EAX at a guest's entry: the bytes "HV86".
const START_MAGIC: u32 = 0x3638_5648;
/// Guest RAM when the module does not say (MiB), and the bounds.
const DEFAULT_MEMORY_MIB: u64 = 16;
const MIN_MEMORY_MIB: u64 = 4;
const MAX_MEMORY_MIB: u64 = 1024;
/// Time slice of a domain when others are runnable.
const SLICE_MS: u64 = 10;
/// Xen's defaults for pause-loop exiting (cycles).
const PLE_GAP: u32 = 128;
const PLE_WINDOW: u32 = 4096;

/// One boot module, copied out of loader memory before the heap exists.
pub struct ModuleCopy {
    pub start: u64,
    pub end: u64,
    pub cmdline: ArrayString<256>,
}

/// What the hypervisor needs of the loader's information after the heap
/// takes over the memory it lies in.
pub struct BootCopy {
    pub cmdline: ArrayString<1024>,
    pub modules: ArrayVec<ModuleCopy, MAX_MODULES>,
    pub rsdp: Option<ArrayVec<u8, MAX_RSDP>>,
}

impl BootCopy {
    pub fn new(boot: Option<&BootInfo>) -> BootCopy {
        let mut c = BootCopy {
            cmdline: ArrayString::new(),
            modules: ArrayVec::new(),
            rsdp: None,
        };
        let Some(b) = boot else { return c };
        let _ = c.cmdline.try_push_str(b.cmdline.unwrap_or(""));
        for m in b.modules() {
            let mut line = ArrayString::new();
            // Longer lines are cut (the parser bounds them at 1 KiB; a
            // module line this long carries nothing the builder reads).
            for ch in m.cmdline.chars() {
                if line.try_push(ch).is_err() {
                    break;
                }
            }
            let _ = c.modules.try_push(ModuleCopy {
                start: m.start,
                end: m.end,
                cmdline: line,
            });
        }
        c.rsdp = b.rsdp.map(|r| r.iter().copied().take(MAX_RSDP).collect());
        c
    }

    /// `key=value` from the hypervisor's command line.
    fn option(&self, key: &str) -> Option<&str> {
        option(&self.cmdline, key)
    }
}

fn option<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_ascii_whitespace()
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Reads the ACPI tables (before the heap exists: they are firmware
/// memory the heap never gets) and logs what they say.
pub fn acpi_report(boot: &BootCopy) {
    let mem = crate::boot::LoaderMemory;
    let rsdp = match &boot.rsdp {
        Some(bytes) => acpi::rsdp_from_bytes(bytes),
        None => acpi::find_rsdp(&mem),
    };
    let rsdp = match rsdp {
        Ok(r) => r,
        Err(e) => {
            log!("acpi: no usable RSDP: {e}");
            return;
        }
    };
    match acpi::parse(&mem, &rsdp) {
        // Its Display is the log lines, each with its own prefix.
        Ok(a) => log!("{a}"),
        Err(e) => log!("acpi: tables rejected: {e}"),
    }
}

/// Facts about this CPU and the VMX setup every exit handler needs.
pub struct Hv {
    pub controls: Controls,
    pub tsc_hz: u64,
    pub maxphyaddr: u8,
    pub rdtscp: bool,
    pub vpid: bool,
    /// TSC ticks per preemption-timer tick (log2), when the timer is used.
    pub timer_shift: Option<u32>,
}

impl Hv {
    /// Nanoseconds since the TSC started.
    pub fn now_ns(&self) -> u64 {
        (u128::from(hw::rdtsc()) * 1_000_000_000 / u128::from(self.tsc_hz.max(1))) as u64
    }

    /// A domain's VPID (its id), when VPIDs are used.
    pub fn vpid_of(&self, dom: u16) -> Option<u16> {
        self.vpid.then_some(dom)
    }
}

/// What viridian reads from the machine and the domain's local APIC.
pub struct Platform<'a> {
    pub hv: &'a Hv,
    pub lapic: &'a mut VLapic,
}

impl viridian::Platform for Platform<'_> {
    fn tsc_hz(&self) -> u64 {
        self.hv.tsc_hz
    }
    fn apic_hz(&self) -> u64 {
        // The bus clock a Xen guest is told (10 ns per APIC bus cycle).
        100_000_000
    }
    fn now_100ns(&self) -> u64 {
        self.hv.now_ns() / 100
    }
    fn lapic(&mut self, _vcpu: u32) -> Option<&mut VLapic> {
        Some(self.lapic)
    }
}

/// TSC ticks per second, measured against the PIT (10 ms on channel 2);
/// 1 GHz when the PIT does not answer.
fn calibrate_tsc() -> u64 {
    // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT's channel 2 and the
    // speaker gate, which nothing else in the hypervisor uses; programming
    // them moves no memory.
    unsafe {
        let gate = port::inb(0x61);
        port::outb(0x61, (gate & !0x02) | 0x01);
        port::outb(0x43, 0xb0); // channel 2, lobyte/hibyte, mode 0
        let count: u16 = 11_932; // 10 ms at 1.193182 MHz
        port::outb(0x42, count as u8);
        port::outb(0x42, (count >> 8) as u8);
        let t0 = hw::rdtsc();
        let mut done = false;
        for _ in 0..50_000_000u32 {
            if port::inb(0x61) & 0x20 != 0 {
                done = true;
                break;
            }
        }
        let t1 = hw::rdtsc();
        port::outb(0x61, gate);
        if done && t1 > t0 {
            (t1 - t0) * 100
        } else {
            1_000_000_000
        }
    }
}

/// Turns VMX on: the refusal when this CPU cannot host domains.
fn vmx_on(caps: &Caps) -> Result<(), &'static str> {
    use vmx::msr::IA32_FEATURE_CONTROL;
    // SAFETY: the MSR exists on every CPU with VMX (Caps::read succeeded).
    let fc = unsafe { hw::rdmsr(IA32_FEATURE_CONTROL) };
    if fc & 1 == 0 {
        // Unlocked: allow VMXON outside SMX and lock, as firmware would.
        // SAFETY: setting bits 0 and 2 only enables VMXON.
        unsafe { hw::wrmsr(IA32_FEATURE_CONTROL, fc | 1 | (1 << 2)) };
    } else if fc & (1 << 2) == 0 {
        return Err("firmware locked VMX off (IA32_FEATURE_CONTROL)");
    }
    // SAFETY: only the VMX-fixed bits change (NE in CR0, VMXE in CR4);
    // paging and protection stay as they are (fixed bits are set on any
    // CPU running in long mode already, except these two).
    unsafe {
        // Caches on (firmware may leave CD/NW set), NE as VMX requires.
        hw::write_cr0(
            (hw::cr0() | caps.cr0_fixed0) & (caps.cr0_fixed1 | !0xffff_ffff) & !(3 << 29),
        );
        // OSFXSR (bit 9): FXSAVE/FXRSTOR switch the guests' SSE registers.
        hw::write_cr4(
            (hw::cr4() | caps.cr4_fixed0 | (1 << 13) | (1 << 9)) & (caps.cr4_fixed1 | !0xffff_ffff),
        );
    }
    let region = Box::leak(Region::new(caps.revision));
    // SAFETY: the region is leaked (never freed), holds the revision id and
    // is this CPU's VMXON region; CR0/CR4 now meet the fixed bits.
    unsafe { hw::vmxon(region.phys()) }.map_err(|_| "VMXON failed")
}

/// Runs everything; the exit code for the debug-exit device.
pub fn run(percpu: &'static PerCpu, boot: &BootCopy) -> u8 {
    let cpuid_vmx = hw::cpuid(1, 0)[2] & (1 << 5) != 0;
    // SAFETY: Caps::read asks only for MSRs that exist given what it read
    // before (CPUID's VMX bit first, then IA32_VMX_BASIC, ...).
    let caps = match Caps::read(cpuid_vmx, |m| Some(unsafe { hw::rdmsr(m) })) {
        Ok(c) => c,
        Err(refusal) => {
            log!("vmx: unavailable: {refusal}");
            log!("hv-x86: no domain can run without VMX; halting");
            return EXIT_NO_VMX;
        }
    };
    let ple = match (boot.option("ple_gap"), boot.option("ple_window")) {
        (Some("0"), _) | (_, Some("0")) => None,
        (g, w) => Some((
            g.and_then(|v| v.parse().ok()).unwrap_or(PLE_GAP),
            w.and_then(|v| v.parse().ok()).unwrap_or(PLE_WINDOW),
        )),
    };
    let want = Wanted {
        ple: ple.is_some(),
        preemption_timer: true,
    };
    let controls = match vmx::compute(&caps, &want) {
        Ok(c) => c,
        Err(refusal) => {
            log!("vmx: unusable: {refusal}");
            log!("hv-x86: no domain can run; halting");
            return EXIT_NO_VMX;
        }
    };
    if !controls.preemption_timer {
        log!(
            "vmx: unusable: no VMX preemption timer, so a domain that never exits would keep the CPU from the others"
        );
        return EXIT_NO_VMX;
    }
    if let Err(why) = vmx_on(&caps) {
        log!("vmx: {why}");
        return EXIT_NO_VMX;
    }
    // The legacy PIC's lines stay masked: the hypervisor takes no
    // interrupts, and one pending at the PIC would make every VM entry
    // exit again at once (external-interrupt exiting).
    // SAFETY: 0x21 and 0xa1 are the two 8259s' mask registers; masking
    // every line moves no memory.
    unsafe {
        port::outb(0x21, 0xff);
        port::outb(0xa1, 0xff);
    }
    let tsc_hz = calibrate_tsc();
    let hv = Hv {
        maxphyaddr: (hw::cpuid(0x8000_0008, 0)[0] & 0xff).clamp(32, 52) as u8,
        rdtscp: controls.proc2 & vmx::proc2::ENABLE_RDTSCP != 0,
        vpid: controls.vpid,
        timer_shift: controls
            .preemption_timer
            .then_some(caps.preemption_timer_shift()),
        tsc_hz,
        controls,
    };
    let ple = ple.filter(|_| hv.controls.ple);
    log!(
        "vmx: on (VMCS revision {:#x}); EPT 4-level write-back, {}; unrestricted guest; VPID {}; pause-loop exiting {}; preemption timer {}",
        caps.revision,
        if hv.controls.ept_2mib {
            "2 MiB pages"
        } else {
            "4 KiB pages only"
        },
        if hv.vpid { "on" } else { "off" },
        match ple {
            Some((g, w)) => format!("gap {g} window {w}"),
            None => String::from("off"),
        },
        if hv.timer_shift.is_some() {
            "on"
        } else {
            "off"
        },
    );
    log!("tsc: {} MHz", tsc_hz / 1_000_000);

    // Bitmaps with every bit set: every MSR and port access exits.
    let all_ones = || Box::leak(Box::new(Region([u32::MAX; 1024]))).phys();
    let msr_bitmap = all_ones();
    let io_bitmaps = (all_ones(), all_ones());

    let mut xen = Xen::with_layout(common::xen::abi::Layout::X86_64);
    let mut doms: Vec<Option<Dom>> = Vec::new();
    for (n, m) in boot.modules.iter().enumerate() {
        let id = (n + 1) as u16;
        match build(
            id, m, &caps, &hv, percpu, &mut xen, ple, msr_bitmap, io_bitmaps,
        ) {
            Ok(d) => doms.push(Some(d)),
            Err(why) => {
                log!("d{id}: not built: {why}");
                let _ = xen_remove(&mut xen, &doms, id, &hv);
                doms.push(None);
            }
        }
    }
    log!(
        "hv-x86: {} domain(s) built; heap {} KiB in use of {} KiB",
        doms.iter().flatten().count(),
        crate::heap::allocated() >> 10,
        crate::heap::total() >> 10
    );
    if doms.iter().flatten().next().is_none() {
        log!("hv-x86: no domains to run (no boot modules, or none could be built)");
        return EXIT_SUCCESS;
    }
    schedule(&mut doms, &mut xen, &hv);
    log!("hv-x86: all domains are gone; stopping");
    EXIT_SUCCESS
}

fn xen_remove(xen: &mut Xen, doms: &[Option<Dom>], id: u16, hv: &Hv) -> Option<()> {
    let env = XenEnv {
        doms,
        caller: usize::MAX,
        paging: hv_x86::gwalk::Paging::new(0, 0, 0, 0),
        hv,
    };
    xen.domain(id)?;
    xen.remove_domain(&env, id);
    Some(())
}

#[allow(clippy::too_many_arguments)]
fn build(
    id: u16,
    m: &ModuleCopy,
    caps: &Caps,
    hv: &Hv,
    percpu: &PerCpu,
    xen: &mut Xen,
    ple: Option<(u32, u32)>,
    msr_bitmap: u64,
    io_bitmaps: (u64, u64),
) -> Result<Dom, String> {
    let line = m.cmdline.as_str();
    let name = line
        .split_ascii_whitespace()
        .next()
        .filter(|t| !t.contains('='))
        .unwrap_or("domain");
    let mask = match option(line, "viridian") {
        Some(list) => viridian::parse_list(list).map_err(|e| format!("viridian={list}: {e}"))?,
        None => 0,
    };
    let mib = match option(line, "memory") {
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(n))
            .ok_or(format!(
                "memory={v}: not a number of MiB in {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}"
            ))?,
        None => DEFAULT_MEMORY_MIB,
    };
    let len = usize::try_from(mib << 20).map_err(|_| String::from("memory too large"))?;
    let len = len.next_multiple_of(RAM_ALIGN);
    let ram = Ram::new(len).ok_or(format!("{mib} MiB of RAM: out of memory"))?;
    let image_len =
        usize::try_from(m.end - m.start).map_err(|_| String::from("module too large"))?;
    let image = match crate::boot::LoaderMemory::read_module(m.start, image_len) {
        Some(b) => b,
        None => {
            return Err(format!(
                "module at {:#x}..{:#x} is not readable",
                m.start, m.end
            ));
        }
    };
    let info = elf::load(image, 0, ram.len(), &mut |gpa, bytes| ram.write(gpa, bytes))
        .map_err(|e| format!("image refused: {e}"))?;
    let entry = u16::try_from(info.entry).map_err(|_| {
        format!(
            "entry {:#x} is not reachable in real mode (must be below 0x10000)",
            info.entry
        )
    })?;
    if info.low < CMDLINE_GPA + 0x1000 && info.high > CMDLINE_GPA {
        return Err(format!(
            "image at {:#x}..{:#x} overlaps the command line page",
            info.low, info.high
        ));
    }
    let mut text: ArrayVec<u8, { GUEST_CMDLINE + 1 }> = line.bytes().take(GUEST_CMDLINE).collect();
    text.push(0);
    ram.write(CMDLINE_GPA, &text)
        .map_err(|()| String::from("no room for the command line"))?;

    let mut tables = Tables::new(hv.controls.invept as u64, ram.len());
    let mut ept = Ept::with_2mib_leaves(&mut tables, hv.controls.ept_2mib)
        .map_err(|e| format!("EPT: {e}"))?;
    // From here on a failure frees the EPT and the ABI state again.
    match finish_build(
        id,
        name,
        mask,
        entry,
        &info,
        &mut ept,
        &mut tables,
        &ram,
        caps,
        hv,
        percpu,
        xen,
        ple,
        msr_bitmap,
        io_bitmaps,
    ) {
        Ok((vcpu, viridian)) => Ok(Dom::new(id, ram, ept, tables, vcpu, viridian)),
        Err(why) => {
            crate::domain::destroy_ept(ept, &mut tables);
            let _ = xen_remove(xen, &[], id, hv);
            Err(why)
        }
    }
}

/// The part of [`build`] after the EPT exists.
#[allow(clippy::too_many_arguments)]
fn finish_build(
    id: u16,
    name: &str,
    mask: u64,
    entry: u16,
    info: &elf::LoadInfo,
    ept: &mut Ept,
    tables: &mut Tables,
    ram: &Ram,
    caps: &Caps,
    hv: &Hv,
    percpu: &PerCpu,
    xen: &mut Xen,
    ple: Option<(u32, u32)>,
    msr_bitmap: u64,
    io_bitmaps: (u64, u64),
) -> Result<(Vcpu, Viridian), String> {
    ept.map(tables, 0, ram.host(), ram.len(), Perm::RWX)
        .map_err(|e| format!("EPT: {e}"))?;
    let mib = ram.len() >> 20;

    xen.add_domain(DomainConfig {
        id,
        name: String::from(name),
        nr_vcpus: 1,
        caps: 0,
        ram_base_gfn: 0,
        ram_pages: ram.len() / 4096,
        max_grant_frames: xen::DEFAULT_GRANT_FRAMES,
        max_evtchn_ports: xen::DEFAULT_EVTCHN_PORTS,
        tmem: Default::default(),
    })
    .map_err(|e| format!("Xen ABI state: errno {e}"))?;
    let env = XenEnv {
        doms: &[],
        caller: usize::MAX,
        paging: hv_x86::gwalk::Paging::new(0, 0, 0, 0),
        hv,
    };
    xen.set_viridian(&env, id, mask)
        .map_err(|e| format!("viridian mask {mask:#x}: errno {e}"))?;
    let viridian = Viridian::new(mask, 1, hv.now_ns() / 100)
        .map_err(|e| format!("viridian mask {mask:#x}: errno {e}"))?;

    let start = Start {
        ip: entry,
        eax: START_MAGIC,
        ebx: CMDLINE_GPA as u32,
        eptp: ept.eptp(),
        vpid: hv.vpid_of(id),
        ple,
        msr_bitmap,
        io_bitmaps,
    };
    let vcpu = Vcpu::new(caps.revision, &hv.controls, percpu, &start).map_err(|e| {
        format!(
            "VMCS setup failed ({e:?}, error {})",
            vcpu::instruction_error()
        )
    })?;
    log!(
        "d{id} ({name}): {mib} MiB, entry {entry:#x} in real mode, image {:#x}..{:#x}, viridian {mask:#x}{}",
        info.low,
        info.high,
        if mask == 0 { " (off)" } else { "" }
    );
    Ok((vcpu, viridian))
}

/// Round robin until no domain is left.
fn schedule(doms: &mut [Option<Dom>], xen: &mut Xen, hv: &Hv) {
    let mut current: Option<usize> = None;
    let mut last = 0usize;
    let slice_ticks = hv.tsc_hz / 1000 * SLICE_MS;
    loop {
        // Wake blocked domains that have an event.
        for d in doms.iter_mut().flatten() {
            if d.kicked.replace(false) && d.state == State::Blocked {
                d.state = State::Runnable;
            }
        }
        let n = doms.len();
        let next = (1..=n)
            .map(|k| (last + k) % n)
            .find(|&k| doms[k].as_ref().is_some_and(|d| d.state == State::Runnable));
        let Some(i) = next else {
            let stuck: Vec<usize> = (0..n).filter(|&k| doms[k].is_some()).collect();
            if stuck.is_empty() {
                return;
            }
            for k in stuck {
                if let Some(d) = doms[k].as_ref() {
                    log!("d{}: blocked with nothing left to wake it: destroyed", d.id);
                }
                end_domain(doms, k, xen, hv, &mut current);
            }
            return;
        };
        last = i;
        if current != Some(i) {
            switch(doms, current, i, hv);
            current = Some(i);
        }
        let started = hw::rdtsc();
        loop {
            // The slice holds whatever the domain does: checked before every
            // entry, and the timer gets only what is left of it.
            let others = doms.iter().enumerate().any(|(k, d)| {
                k != i
                    && d.as_ref()
                        .is_some_and(|d| d.state == State::Runnable || d.kicked.get())
            });
            let used = hw::rdtsc().wrapping_sub(started);
            if others && used >= slice_ticks {
                break;
            }
            let left = if others {
                slice_ticks - used
            } else {
                slice_ticks
            };
            exits::prepare_entry(doms, i, xen, hv);
            let Some(d2) = doms[i].as_mut() else { break };
            if let Some(shift) = hv.timer_shift {
                let _ = vcpu::vmwrite(vmx::field::PREEMPTION_TIMER_VALUE, (left >> shift).max(1));
            }
            let outcome = match d2.vcpu.run() {
                Ok(reason) => {
                    d2.count_exit(reason);
                    exits::handle(reason, i, doms, xen, hv)
                }
                Err(e) => {
                    log!(
                        "d{}: VM entry failed ({e:?}, VM-instruction error {})",
                        d2.id,
                        vcpu::instruction_error()
                    );
                    Outcome::Crash(Reason::EntryFailed(0, 0))
                }
            };
            match outcome {
                Outcome::Continue => {}
                Outcome::Yield => break,
                Outcome::Block => {
                    let ready = doms[i]
                        .as_ref()
                        .is_some_and(|d| exits::upcall_ready(d, xen, doms, i, hv).is_some());
                    if !ready {
                        if let Some(d) = doms[i].as_mut() {
                            d.state = State::Blocked;
                        }
                        break;
                    }
                }
                Outcome::Shutdown(reason) => {
                    if let Some(d) = doms[i].as_ref() {
                        log!("d{}: shut down ({})", d.id, shutdown_name(reason));
                    }
                    end_domain(doms, i, xen, hv, &mut current);
                    break;
                }
                Outcome::RemoteShutdown(target, reason) => {
                    if let Some(k) = doms
                        .iter()
                        .position(|d| d.as_ref().is_some_and(|d| d.id == target))
                    {
                        log!(
                            "d{target}: shut down by d{} ({})",
                            doms[i].as_ref().map_or(0, |d| d.id),
                            shutdown_name(reason)
                        );
                        end_domain(doms, k, xen, hv, &mut current);
                        if k == i {
                            break;
                        }
                        if let Some(d) = doms[i].as_ref() {
                            let _ = d.vcpu.load();
                        }
                    }
                }
                Outcome::Crash(why) => {
                    if let Some(d) = doms[i].as_ref() {
                        log!(
                            "d{}: {why} at rip {:#x}: domain crashed",
                            d.id,
                            vcpu::vmread(vmx::field::GUEST_RIP)
                        );
                    }
                    end_domain(doms, i, xen, hv, &mut current);
                    break;
                }
            }
        }
    }
}

/// Gives the CPU to domain `to`: the old vCPU's x87/SSE state saved, the
/// new one's loaded with its SYSCALL MSRs and VMCS.
fn switch(doms: &mut [Option<Dom>], from: Option<usize>, to: usize, hv: &Hv) {
    if let Some(d) = from.and_then(|f| doms.get_mut(f)).and_then(Option::as_mut) {
        hw::fxsave(&mut d.vcpu.fx);
        d.vcpu.debug = hw::read_debug();
    }
    if let Some(d) = doms.get_mut(to).and_then(Option::as_mut) {
        hw::fxrstor(&d.vcpu.fx);
        hw::write_debug(&d.vcpu.debug);
        d.vcpu.msrs.load(hv.rdtscp);
        if d.vcpu.load().is_err() {
            log!("d{}: VMPTRLD failed", d.id);
        }
    }
}

/// Removes domain `k` from the Xen core, then frees its hardware state.
fn end_domain(
    doms: &mut [Option<Dom>],
    k: usize,
    xen: &mut Xen,
    hv: &Hv,
    current: &mut Option<usize>,
) {
    let Some(id) = doms.get(k).and_then(Option::as_ref).map(|d| d.id) else {
        return;
    };
    let _ = xen_remove(xen, doms, id, hv);
    if let Some(d) = doms.get_mut(k).and_then(Option::take) {
        d.console_flush();
        d.log_exits();
        d.teardown();
    }
    if *current == Some(k) {
        *current = None;
    }
}

fn shutdown_name(reason: u32) -> String {
    match reason {
        0 => String::from("poweroff"),
        1 => String::from("reboot"),
        2 => String::from("suspend"),
        3 => String::from("crash"),
        4 => String::from("watchdog"),
        r => format!("reason {r}"),
    }
}

#[allow(dead_code)]
const _: u8 = EXIT_FAILURE;
