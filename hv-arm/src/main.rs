//! hv-arm: the aarch64 EL2 hypervisor.
//!
//! Boot path: the Image header hands over to aarch64-rt's entry, which turns
//! on the EL2 MMU and caches through our `enable_mmu` (see [`boot`]), zeroes
//! the bss and calls [`main`] with x0 = the DTB. From there: the banner, the
//! device tree parsed once into a [`Platform`], the boot modules under
//! `/chosen`, the heap from the memory the DT describes less everything
//! reserved (modules included), the GIC in EOImode 1 and every CPU through
//! PSCI CPU_ON. With a kernel module, a domain is built from it ([`domain`])
//! and every CPU serves the vCPU pinned to it ([`run`]) until the domain
//! powers off. Without one, each CPU takes ten EL2 timer ticks and the
//! machine powers off.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod boot;
mod console;
mod cpus;
mod domain;
mod exceptions;
mod guest_entry;
mod heap;
mod irq;
mod log;
mod mem;
mod run;
mod sched;
mod semihost;
mod stage2;
mod sysregs;
mod time;
mod xen;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use armvm::layout;
use arrayvec::ArrayVec;
use boards::{Attr, SELECTED};
use common::dom0less::{self, Boot, OnCrash};
use common::memory::{PhysRange, RangeSet};
use common::modules::Modules;
use common::platform::{Conduit, Gic, Platform, UartKind as DtUartKind};
use gic::host::HostGic;

use crate::cpus::CpuSlot;
use crate::domain::{Domain, DomainConfig, ShmMap};

/// Per-CPU tables are sized by the board's CPU bound.
pub const MAX_CPUS: usize = SELECTED.max_cpus;

/// Exit status under an emulator when the device tree or board is refused.
pub const EXIT_REFUSED: i32 = 2;
/// Exit status after a panic or an unexpected exception.
const EXIT_FAULT: i32 = 1;
/// Exit status when the last domain crashed (the hypervisor itself is fine).
pub const EXIT_DOMAIN_CRASHED: i32 = 3;

/// What the CPUs do once all are up: 0 undecided, then one of these.
static MODE: AtomicU8 = AtomicU8::new(0);
const MODE_TICKS: u8 = 1;
const MODE_GUESTS: u8 = 2;
/// PSCI conduit of the board, for powering off from any CPU.
static PSCI_SMC: AtomicU8 = AtomicU8::new(0);
/// Guest interrupts the CPUs enable: maintenance and virtual timer INTIDs.
static GUEST_INTIDS: spin::Once<(u32, u32)> = spin::Once::new();

/// Guest RAM when `dom0_mem=` does not say.
const DEFAULT_GUEST_MEM: u64 = 512 << 20;
/// vCPUs when `dom0_max_vcpus=` does not say (and CPUs allow).
const DEFAULT_GUEST_VCPUS: usize = 2;

aarch64_rt::entry!(main, 64);

fn main(dtb: u64, _x1: u64, _x2: u64, _x3: u64) -> ! {
    time::mark_entry();
    arch::set_cpu_id(0);
    guest_entry::install_vectors();
    let boot_mpidr = arch::mpidr();
    println!(
        "hv-arm {} (board {}), entered at EL{} on mpidr {:#x}",
        env!("CARGO_PKG_VERSION"),
        SELECTED.name,
        arch::current_el(),
        boot_mpidr
    );
    if arch::current_el() != 2 {
        fatal(
            EXIT_REFUSED,
            format_args!(
                "entered at EL{}, but a hypervisor needs EL2",
                arch::current_el()
            ),
        );
    }
    log::init();
    info!(
        "entered at EL2, dtb at {:#x}, image {:#x}-{:#x}",
        dtb,
        boot::image_range().start,
        boot::image_range().end
    );

    let dtb_bytes = dtb_slice(dtb);
    let platform = match Platform::from_fdt(dtb_bytes) {
        Ok(p) => p,
        Err(e) => fatal(EXIT_REFUSED, format_args!("device tree rejected: {}", e)),
    };
    if platform.timer.clock_frequency.is_some() && time::frequency() == 0 {
        time::set_frequency(u64::from(platform.timer.clock_frequency.unwrap_or(0)));
    }
    report_platform(&platform);
    selftest(&platform);
    if matches!(platform.psci.map(|x| x.conduit), Some(Conduit::Smc)) {
        PSCI_SMC.store(1, Ordering::Relaxed);
    }
    // Memory: the DT's banks inside the boot map's normal windows, less the
    // image, the DTB and every reservation. Boot modules must lie inside it.
    let dtb_range = PhysRange::from_base_size(dtb, dtb_bytes.len() as u64);
    let ram = usable_memory(&platform, dtb_range, None);
    let ram: ArrayVec<PhysRange, 32> = ram.iter().copied().collect();
    let boot = match dom0less::parse(dtb_bytes, &ram) {
        Ok(b) => b,
        Err(e) => fatal(EXIT_REFUSED, format_args!("boot modules: {}", e)),
    };
    for m in boot.modules.iter() {
        println!(
            "module: {:?} at {:#x}-{:#x} ({} bytes), /chosen/{}",
            m.kind,
            m.range.start,
            m.range.end,
            m.range.size(),
            m.node
        );
    }
    if let Some(e) = &boot.dom0_error {
        println!("boot modules: {}; no domain from the top-level modules", e);
    }
    for e in boot.errors.iter() {
        println!("dom0less: {}", e);
    }
    if boot.errors_dropped > 0 {
        println!(
            "dom0less: {} more domains refused (messages dropped)",
            boot.errors_dropped
        );
    }

    // The heap: that memory less the modules and the static shared
    // memory, whose host pages belong to the domains naming them.
    let mut free = usable_memory(&platform, dtb_range, Some(&boot.modules));
    let shm = reserve_shared_memory(&boot, &mut free);
    let added = heap::init(&free);
    println!("heap: {} MiB in {} ranges", added >> 20, free.len());
    info!("heap: {} bytes from {} free ranges", added, free.len());
    if added == 0 {
        fatal(
            EXIT_REFUSED,
            format_args!("no usable memory left for the heap"),
        );
    }

    // Interrupt controller.
    let Gic::V3 { gicd, gicr, .. } = &platform.gic else {
        fatal(
            EXIT_REFUSED,
            format_args!("this board's GIC is GICv2; hv-arm drives GICv3 only (see README)"),
        )
    };
    let Some(gicr0) = gicr.first() else {
        fatal(EXIT_REFUSED, format_args!("GICv3 without redistributors"))
    };
    if !boot::in_device_window(gicd.start, gicd.size())
        || !boot::in_device_window(gicr0.start, gicr0.size())
    {
        fatal(
            EXIT_REFUSED,
            format_args!("GIC registers lie outside the board profile's device windows"),
        );
    }
    // GICv3 frames are 128 KiB; GICv4 ones 256 KiB: this is an upper bound.
    let frames = (gicr0.size() / 0x2_0000).clamp(1, 4096) as usize;
    // SAFETY: the DT names these as the GICv3 distributor and first
    // redistributor region, they lie in device-mapped windows, and this is
    // the only driver instance.
    let mut host_gic =
        match unsafe { HostGic::new(gicd.start as usize, gicr0.start as usize, frames) } {
            Ok(g) => g,
            Err(e) => fatal(EXIT_REFUSED, format_args!("GIC: {}", e)),
        };
    let slots = cpu_slots(&platform, boot_mpidr, &mut host_gic);
    let Some(boot_slot) = slots.first().copied() else {
        fatal(
            EXIT_REFUSED,
            format_args!("boot CPU {:#x} has no redistributor", boot_mpidr),
        )
    };
    host_gic.init_global(boot_slot.frame);
    irq::configure_timer(platform.timer.hyp_phys.intid, time::frequency());
    if let Err(e) = host_gic.enable_private(irq::hyp_timer_intid(), boot_slot.frame, true) {
        fatal(
            EXIT_FAULT,
            format_args!("cannot enable the EL2 timer interrupt: {}", e),
        );
    }
    println!(
        "gic: EOImode {} (EOI drops priority, DIR deactivates)",
        if HostGic::eoimode1() { 1 } else { 0 }
    );
    irq::GIC.call_once(|| arch::Lock::new(host_gic));

    // Every CPU up.
    let started = cpus::start_secondaries(&platform, &slots);
    let expected = 1 + started;
    let online = cpus::wait_online(expected, time::frequency().max(1_000_000));
    let up_ticks = time::ticks_since_entry();
    if online == slots.len() {
        println!(
            "all {} cpus up in {} ticks ({} us)",
            online,
            up_ticks,
            time::ticks_to_us(up_ticks)
        );
    } else {
        println!(
            "{} of {} cpus up in {} ticks ({} us)",
            online,
            slots.len(),
            up_ticks,
            time::ticks_to_us(up_ticks)
        );
    }
    info!(
        "cpus online: {} of {}, {} counter ticks after entry",
        online,
        slots.len(),
        up_ticks
    );

    let maintenance = match &platform.gic {
        Gic::V3 { maintenance, .. } | Gic::V2 { maintenance, .. } => {
            maintenance.map_or(25, |m| m.intid)
        }
    };
    GUEST_INTIDS.call_once(|| (maintenance, platform.timer.virt.intid));
    let hv_args = boot.xen_bootargs.or(platform.bootargs).unwrap_or("");
    console::set_timestamps(bootarg(hv_args, "hv.console_timestamps").is_some_and(|v| v != "0"));
    let domains = build_domains(&boot, &shm, hv_args, &slots, online);
    setup_tmem(hv_args);
    if !domains.is_empty() {
        let slice = bootarg(hv_args, "sched_slice_ms")
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&v| (1..=1000).contains(&v))
            .unwrap_or(sched::DEFAULT_SLICE_MS);
        sched::install(domains, slice);
        if let Some(uart) = platform.uart.and_then(|u| u.irq) {
            irq::enable_console_input(uart.intid, boot_mpidr, uart.level);
        }
        console::move_focus(0);
        MODE.store(MODE_GUESTS, Ordering::Release);
        irq::kick_others();
        irq::enable_guest_interrupts(boot_slot.frame, maintenance, platform.timer.virt.intid);
        for d in sched::domains() {
            d.start();
        }
        sched::cpu_loop();
    }
    if boot.dom0.is_some() || !boot.domains.is_empty() {
        fatal(EXIT_REFUSED, format_args!("no domain could be built"));
    }
    println!("no guest: no multiboot,kernel module under /chosen");
    MODE.store(MODE_TICKS, Ordering::Release);
    irq::kick_others();

    // Every CPU takes its timer ticks; then power off.
    irq::start_ticking();
    arch::irq_enable();
    // WFE, not WFI: the last CPU to finish may be another one, and it
    // signals with SEV rather than an interrupt.
    while irq::cpus_done_ticking() < online {
        aarch64_cpu::asm::wfe();
    }
    info!(
        "heap in use: {} of {} bytes; unclaimed interrupts: {}",
        heap::allocated(),
        heap::total(),
        irq::spurious()
    );
    println!("all cpus ticking; powering off");
    power_off(&platform)
}

/// The DTB at `addr` as a slice, after checking its header and that it lies
/// in memory the boot page table maps.
fn dtb_slice(addr: u64) -> &'static [u8] {
    const HEADER: u64 = 40;
    if addr == 0 || !addr.is_multiple_of(8) || !boot::in_normal_window(addr, HEADER) {
        fatal(
            EXIT_REFUSED,
            format_args!(
                "no usable device tree: x0 = {:#x} is not an aligned address in RAM",
                addr
            ),
        );
    }
    // SAFETY: the header lies in a normal-memory window of the boot map and
    // the boot loader placed the DTB there; it is only read.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, HEADER as usize) };
    let size = match common::platform::dtb_total_size(header) {
        Ok(s) => s as u64,
        Err(e) => fatal(EXIT_REFUSED, format_args!("device tree rejected: {}", e)),
    };
    if !boot::in_normal_window(addr, size) {
        fatal(
            EXIT_REFUSED,
            format_args!(
                "device tree at {:#x} (+{:#x}) runs past mapped RAM",
                addr, size
            ),
        );
    }
    // SAFETY: as above, for the size the validated header gives.
    unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) }
}

fn report_platform(p: &Platform) {
    println!("model: {}", p.model);
    for bank in p.memory.iter() {
        println!(
            "memory: {:#x}-{:#x} ({} MiB)",
            bank.start,
            bank.end,
            bank.size() >> 20
        );
    }
    for r in p.reserved.iter() {
        println!("reserved: {:#x}-{:#x}", r.start, r.end);
    }
    let conduit = match p.psci.map(|x| x.conduit) {
        Some(Conduit::Smc) => "psci via smc",
        Some(Conduit::Hvc) => "psci via hvc",
        None => "no psci",
    };
    println!("cpus: {} ({})", p.cpus.len(), conduit);
    match &p.gic {
        Gic::V3 {
            gicd,
            gicr,
            maintenance,
            ..
        } => {
            let gicr0 = gicr
                .first()
                .copied()
                .unwrap_or(PhysRange { start: 0, end: 0 });
            println!(
                "gic: v3, distributor {:#x}, redistributors {:#x} (+{:#x}), maintenance intid {}",
                gicd.start,
                gicr0.start,
                gicr0.size(),
                maintenance.map_or(0, |m| m.intid)
            );
        }
        Gic::V2 { gicd, gicc, .. } => println!(
            "gic: v2, distributor {:#x}, cpu interface {:#x}",
            gicd.start, gicc.start
        ),
    }
    println!(
        "timer: el2 physical intid {}, virtual intid {}, counter {} Hz{}",
        p.timer.hyp_phys.intid,
        p.timer.virt.intid,
        time::frequency(),
        if p.timer.described {
            ""
        } else {
            " (not in the DT: Arm BSA defaults)"
        }
    );
    match p.uart {
        Some(u) => {
            let kind = match u.kind {
                DtUartKind::Pl011 => "pl011",
                DtUartKind::Cadence => "cadence",
                DtUartKind::Ns16550 => "ns16550",
                DtUartKind::Other => "unsupported",
            };
            println!("uart: {} at {:#x}", kind, u.regs.start);
            let same_kind = matches!(
                (u.kind, SELECTED.console.kind),
                (DtUartKind::Pl011, boards::UartKind::Pl011)
                    | (DtUartKind::Cadence, boards::UartKind::Cadence)
            );
            if same_kind
                && u.regs.start != SELECTED.console.base
                && boot::in_device_window(u.regs.start, 0x1000)
            {
                console::switch_to(boards::Uart {
                    kind: SELECTED.console.kind,
                    base: u.regs.start,
                });
                println!(
                    "console: moved to the DT's stdout-path UART at {:#x}",
                    u.regs.start
                );
            }
        }
        None => println!(
            "uart: none in the device tree (console stays at {:#x})",
            SELECTED.console.base
        ),
    }
    match p.smmu {
        Some(s) => probe_smmu(s.regs.start),
        None => println!("smmu: none"),
    }
    info!(
        "platform: {} cpus, {} memory banks, {} reserved ranges",
        p.cpus.len(),
        p.memory.len(),
        p.reserved.len()
    );
}

/// Reads an SMMUv3's ID registers and says what it can do.
fn probe_smmu(base: u64) {
    if !boot::in_device_window(base, 0x1000) {
        println!(
            "smmu: smmuv3 at {:#x}, outside the board profile's device windows; ignored",
            base
        );
        return;
    }
    let read = |off: usize| {
        // SAFETY: the DT names this as an SMMUv3 register page, mapped as
        // device memory; the ID registers are read-only and side-effect free.
        unsafe { ((base as usize + off) as *const u32).read_volatile() }
    };
    let f = smmu::Features::decode(
        read(smmu::regs::IDR0),
        read(smmu::regs::IDR1),
        read(smmu::regs::IDR5),
        read(smmu::regs::AIDR),
    );
    let verdict = match f.check_assignable() {
        Ok(()) => "usable for stage-2 device assignment",
        Err(smmu::Unsuitable::NoStage2) => "no stage-2: not usable for device assignment",
        Err(smmu::Unsuitable::NoAArch64Tables) => {
            "no AArch64 tables: not usable for device assignment"
        }
        Err(smmu::Unsuitable::No4kGranule) => "no 4 KiB granule: not usable for device assignment",
    };
    println!(
        "smmu: smmuv3.{} at {:#x}, {}-bit stream ids, {}-bit output, {}",
        f.minor_revision, base, f.sid_bits, f.oas_bits, verdict
    );
}

/// Deliberate faults for the boot tests, chosen by `hv.selftest=` in the
/// bootargs: they prove the exception vectors report instead of hanging.
fn selftest(p: &Platform) {
    let Some(args) = p.bootargs else { return };
    if args.split_whitespace().any(|a| a == "hv.selftest=fault") {
        println!("selftest: reading an unmapped address");
        // 512 GiB: beyond the 39-bit space the boot map covers.
        let addr = 0x80_0000_0000usize as *const u64;
        // SAFETY: deliberately faulting read, requested by the boot
        // arguments; the exception handler reports it and stops.
        let v = unsafe { addr.read_volatile() };
        println!("selftest: read {:#x} without a fault", v);
    }
}

fn usable_memory(p: &Platform, dtb: PhysRange, modules: Option<&Modules>) -> RangeSet<32> {
    let mut windows: RangeSet<8> = RangeSet::new();
    for w in SELECTED.windows.iter().filter(|w| w.attr == Attr::Normal) {
        if windows
            .add(PhysRange {
                start: w.start(),
                end: w.end(),
            })
            .is_err()
        {
            warn!("too many normal windows in the board profile");
        }
    }
    let mut free: RangeSet<32> = RangeSet::new();
    for bank in p.memory.iter() {
        if free.add(*bank).is_err() {
            warn!("memory bank {:#x} dropped: too many ranges", bank.start);
        }
    }
    let described = free.total();
    if free.clip_to(&windows).is_err() {
        warn!("memory ranges dropped while clipping to the boot map");
    }
    if free.total() < described {
        println!(
            "memory: {} MiB lie outside the board profile's RAM windows and stay unused",
            (described - free.total()) >> 20
        );
    }
    let mut carve = |r: PhysRange, what: &str| {
        if free.remove(r).is_err() {
            println!(
                "memory: cannot carve out {} {:#x}-{:#x}: too many ranges",
                what, r.start, r.end
            );
        }
    };
    carve(boot::image_range(), "the image");
    carve(dtb, "the dtb");
    for r in p.reserved.iter() {
        carve(*r, "a reservation");
    }
    for m in modules.iter().flat_map(|m| m.iter()) {
        carve(m.range, "a boot module");
    }
    free
}

/// Builds the domains the boot modules describe: the top-level kernel (a
/// domain named d1, sized by `dom0_mem=` and `dom0_max_vcpus=`), then each
/// `xen,domain` node in tree order, named after its node. One that cannot
/// be built is reported and left out; the others still boot.
fn build_domains(
    boot: &Boot,
    shm: &Shm,
    hv_args: &str,
    slots: &[CpuSlot],
    online: usize,
) -> Vec<&'static Domain> {
    let mut built: Vec<&'static Domain> = Vec::new();
    let mut load = [0u32; MAX_CPUS];
    let online = online.min(slots.len());
    let mut next_id: u16 = 1;
    let mut build = |node: &str,
                     name: &str,
                     mem: u64,
                     nr: usize,
                     affinity: &[u64],
                     make: &dyn Fn(Vec<(usize, u64)>) -> DomainConfig| {
        if built.iter().any(|d| d.name() == name) {
            println!("/chosen/{}: the name {} is taken: not built", node, name);
            return;
        }
        let mut trial = load;
        let cpus = match sched::place(nr, affinity, online, &mut trial) {
            Ok(c) => c,
            Err(v) => {
                println!(
                    "/chosen/{}: vcpu {}: its hard affinity names no online cpu: not built",
                    node, v
                );
                return;
            }
        };
        let placement: Vec<(usize, u64)> = cpus
            .iter()
            .filter_map(|&c| slots.get(c).map(|s| (c, s.mpidr)))
            .collect();
        let t0 = time::ticks_since_entry();
        match Domain::create(next_id, make(placement)) {
            Ok(d) => {
                load = trial;
                let d: &'static Domain = alloc::boxed::Box::leak(d);
                let t1 = time::ticks_since_entry();
                let mut on = String::new();
                for (i, c) in cpus.iter().enumerate() {
                    if i > 0 {
                        on.push(',');
                    }
                    let _ = core::fmt::Write::write_fmt(&mut on, format_args!("{}", c));
                }
                println!(
                    "{}: domain {}, {} MiB, {} vcpus on cpus {}, built in {} us",
                    name,
                    d.id,
                    mem >> 20,
                    nr,
                    on,
                    time::ticks_to_us(t1 - t0)
                );
                next_id += 1;
                built.push(d);
            }
            Err(e) => println!("/chosen/{}: cannot build: {}; not built", node, e),
        }
    };
    if let Some((kernel, ramdisk)) = boot.dom0 {
        let mem = bootarg(hv_args, "dom0_mem")
            .and_then(parse_size)
            .unwrap_or(DEFAULT_GUEST_MEM);
        let want = bootarg(hv_args, "dom0_max_vcpus")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_GUEST_VCPUS)
            .clamp(1, gic::vgic::MAX_VCPUS);
        let nr = want.min(online);
        if nr < want {
            println!(
                "d1: {} vcpus asked for, {} cpus online: {} vcpus",
                want, online, nr
            );
        }
        let bootargs = String::from(kernel.bootargs.unwrap_or(""));
        build(kernel.node, "d1", mem, nr, &[], &|placement| DomainConfig {
            name: String::from("d1"),
            ram_size: mem,
            placement,
            kernel: kernel.range,
            initrd: ramdisk.map(|m| m.range),
            bootargs: bootargs.clone(),
            vpl011: true,
            on_crash: OnCrash::Destroy,
            xen: false,
            shm: Vec::new(),
        });
    }
    for spec in boot.domains.iter() {
        let Some(maps) = shm.maps_for(spec) else {
            continue;
        };
        let bootargs = String::from(spec.bootargs.unwrap_or(""));
        build(
            spec.node,
            spec.node,
            spec.memory,
            spec.cpus as usize,
            &spec.affinity,
            &|placement| DomainConfig {
                name: String::from(spec.node),
                ram_size: spec.memory,
                placement,
                kernel: spec.kernel.range,
                initrd: spec.ramdisk.map(|m| m.range),
                bootargs: bootargs.clone(),
                vpl011: spec.vpl011,
                on_crash: spec.on_crash,
                xen: spec.xen_interfaces(),
                shm: maps.clone(),
            },
        );
    }
    connect_xen(boot, &built);
    if !built.is_empty() {
        let held: u64 = built.iter().map(|d| d.ram_size()).sum();
        println!(
            "memory: {} domains hold {} MiB; {} MiB left in the heap",
            built.len(),
            held >> 20,
            heap::free() >> 20
        );
    }
    built
}

/// tmem's budget when `hv.tmem_budget=` does not say.
const DEFAULT_TMEM_BUDGET: u64 = 64 << 20;

/// tmem from the hypervisor's command line, once the domains are built:
/// `tmem=0` (also `off`, `no`, `false`) turns it off (budget 0, every put
/// fails with ENOMEM), `hv.tmem_budget=SIZE` sizes it (default 64 MiB),
/// `tmem_compress=1` compresses every domain's pages (Xen's two options,
/// our budget). Decision: the budget is at most half the heap left after
/// the domains, so the store's own bookkeeping and the ABI's allocations
/// always find memory.
fn setup_tmem(hv_args: &str) {
    let off = bootarg(hv_args, "tmem").is_some_and(|v| matches!(v, "0" | "off" | "no" | "false"));
    let asked = if off {
        0
    } else {
        bootarg(hv_args, "hv.tmem_budget")
            .and_then(parse_size)
            .unwrap_or(DEFAULT_TMEM_BUDGET)
    };
    let budget = asked.min(heap::free() as u64 / 2);
    let compress = bootarg(hv_args, "tmem_compress").is_some_and(|v| v != "0");
    if xen::configure_tmem(budget as usize, compress) {
        println!(
            "tmem: {} KiB budget{}{}",
            budget >> 10,
            if budget < asked {
                " (half the free heap)"
            } else {
                ""
            },
            if compress {
                ", every domain compressed"
            } else {
                ""
            }
        );
    }
}

/// Gives the domains that speak Xen's ABI their ABI state, then the
/// policy between them (hv,xen-peers) and their static event channels.
/// A channel or peer naming a domain that was not built is skipped with a
/// line; the domain still runs.
fn connect_xen(boot: &Boot, built: &[&'static Domain]) {
    let id_of = |name: &str| {
        built
            .iter()
            .find(|d| d.name() == name && d.has_xen())
            .map(|d| d.id)
    };
    for spec in boot.domains.iter() {
        let Some(d) = built.iter().find(|d| d.name() == spec.node && d.has_xen()) else {
            continue;
        };
        let tmem = common::xen::TmemSetup {
            client: spec.tmem.client,
            shared: spec.tmem.shared.to_vec(),
        };
        if let Err(e) = xen::add_domain(d, spec.capabilities, tmem) {
            println!("{}: Xen interfaces not set up (errno {})", spec.node, e);
        }
    }
    // Two built domains may open channels and grants between them when the
    // DT links them: hv,xen-peers, a static event channel or a static
    // shared-memory region in common (DomainSpec::may_talk).
    for (i, a) in boot.domains.iter().enumerate() {
        for b in boot.domains.iter().skip(i + 1) {
            if let (Some(x), Some(y)) = (id_of(a.node), id_of(b.node))
                && a.may_talk(b)
            {
                xen::allow(x, y);
            }
        }
    }
    for spec in boot.domains.iter() {
        let Some(me) = id_of(spec.node) else { continue };
        for peer in spec.peers.iter() {
            match id_of(peer) {
                Some(_) => {}
                None => println!(
                    "{}: hv,xen-peers names {}, which was not built with Xen interfaces: skipped",
                    spec.node, peer
                ),
            }
        }
        for ch in spec.static_evtchns.iter() {
            let Some(peer) = id_of(ch.peer_domain) else {
                println!(
                    "{}: static event channel {} to {}, which was not built with Xen interfaces: skipped",
                    spec.node, ch.local_port, ch.peer_domain
                );
                continue;
            };
            // Each channel is declared at both ends: bound once.
            if me < peer {
                let c = xen::StaticChannel {
                    a: (me, ch.local_port),
                    b: (peer, ch.peer_port),
                };
                match xen::bind_static(c) {
                    Ok(()) => println!(
                        "{}: static event channel {} <-> {} port {}",
                        spec.node, ch.local_port, ch.peer_domain, ch.peer_port
                    ),
                    Err(e) => println!(
                        "{}: static event channel {}: errno {}: skipped",
                        spec.node, ch.local_port, e
                    ),
                }
            }
        }
    }
}

/// The static shared-memory regions kept out of the heap, and the ids
/// that could not be.
/// Built before the heap exists: no allocation (the ids borrow the DTB).
struct Shm<'a> {
    kept: ArrayVec<(&'a str, PhysRange), 32>,
    refused: ArrayVec<&'a str, 32>,
}

impl Shm<'_> {
    /// The mappings of `spec`'s regions, or None (with a line saying why)
    /// when one of them was refused or does not fit the guest's map.
    fn maps_for(&self, spec: &dom0less::DomainSpec) -> Option<Vec<ShmMap>> {
        let mut out = Vec::new();
        for m in spec.shared_mems.iter() {
            if self.refused.contains(&m.id) || !self.kept.iter().any(|(id, _)| *id == m.id) {
                println!(
                    "/chosen/{}: static shared memory {} was not set aside; not built",
                    spec.node, m.id
                );
                return None;
            }
            if let Some(why) = layout::shm_conflict(m.guest, m.size, spec.memory) {
                println!(
                    "/chosen/{}: static shared memory {} at guest {:#x} ({:#x} bytes) {}; not built",
                    spec.node, m.id, m.guest, m.size, why
                );
                return None;
            }
            out.push(ShmMap {
                id: String::from(m.id),
                host: m.host,
                guest: m.guest,
                size: m.size,
            });
        }
        Some(out)
    }
}

/// Takes each static shared-memory region (one per `xen,shm-id`) out of
/// `free` before the heap gets it, and zeroes it. The parser already
/// checked that the host range lies in RAM outside the image, the DTB,
/// the reservations and every module; a region that is not inside `free`
/// all the same is refused, and so are the domains naming it.
fn reserve_shared_memory<'a>(boot: &Boot<'a>, free: &mut RangeSet<32>) -> Shm<'a> {
    let mut shm = Shm {
        kept: ArrayVec::new(),
        refused: ArrayVec::new(),
    };
    for (id, r) in boot.shm_regions() {
        let inside = free
            .iter()
            .any(|f| f.start <= r.start && r.end <= f.end && r.start < r.end);
        if !inside || shm.kept.is_full() || free.remove(r).is_err() {
            println!(
                "shared memory {}: host {:#x}-{:#x} is not free RAM; domains naming it are not built",
                id, r.start, r.end
            );
            let _ = shm.refused.try_push(id);
            continue;
        }
        // SAFETY: `r` was just removed from the RAM the heap will get: it
        // is page-aligned RAM inside the boot map's normal windows that
        // nothing else owns, and no guest runs yet.
        unsafe { mem::scrub(r.start as usize, r.size() as usize) };
        println!(
            "shared memory {}: host {:#x}-{:#x} ({} KiB) set aside",
            id,
            r.start,
            r.end,
            r.size() >> 10
        );
        shm.kept.push((id, r));
    }
    shm
}

/// Assigns logical ids (boot CPU first, then DT order) and redistributor frames.
fn cpu_slots(p: &Platform, boot_mpidr: u64, gic: &mut HostGic) -> ArrayVec<CpuSlot, MAX_CPUS> {
    let mut slots = ArrayVec::new();
    let order = core::iter::once(boot_mpidr)
        .chain(p.cpus.iter().map(|c| c.mpidr).filter(|&m| m != boot_mpidr));
    for mpidr in order {
        if slots.is_full() {
            println!(
                "cpu {:#x}: beyond this image's {} CPUs; left off",
                mpidr, MAX_CPUS
            );
            continue;
        }
        match gic.frame_for(mpidr) {
            Ok(frame) => slots.push(CpuSlot {
                id: slots.len(),
                mpidr,
                frame,
            }),
            Err(e) => println!("cpu {:#x}: {}; left off", mpidr, e),
        }
    }
    slots
}

fn power_off(_p: &Platform) -> ! {
    machine_off(0)
}

/// Turns the machine off: under an emulator with semihosting the exit
/// status says how it ended; otherwise PSCI SYSTEM_OFF.
fn machine_off(code: i32) -> ! {
    if code != 0 {
        semihost::exit(code);
    }
    if PSCI_SMC.load(Ordering::Relaxed) != 0 {
        let r = smccc::psci::system_off::<smccc::Smc>();
        println!("PSCI SYSTEM_OFF returned {:?}", r);
    }
    semihost::exit(code);
    halt()
}

/// The last domain has gone: nothing is left to run.
pub fn all_domains_gone(code: i32) -> ! {
    println!("hv-arm: no domain left running; powering off");
    info!("all domains gone, exit status {}", code);
    machine_off(code)
}

/// What secondary CPUs do once online: take part in the tick check, or
/// serve the vCPU pinned to them.
pub fn secondary_work(slot: CpuSlot) -> ! {
    guest_entry::install_vectors();
    loop {
        match MODE.load(Ordering::Acquire) {
            MODE_TICKS => {
                irq::start_ticking();
                arch::irq_enable();
                loop {
                    arch::wait_for_interrupt();
                }
            }
            MODE_GUESTS => break,
            // Halted until the boot CPU decides and kicks (WFE would spin
            // under an emulator and steal time from the boot CPU).
            _ => arch::wait_for_interrupt(),
        }
    }
    if let Some(&(maintenance, vtimer)) = GUEST_INTIDS.get() {
        irq::enable_guest_interrupts(slot.frame, maintenance, vtimer);
        sched::cpu_loop();
    }
    // No vCPU here: this CPU idles for good.
    halt()
}

/// The value of `key=value` in a command line.
fn bootarg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split_whitespace().find_map(|a| {
        let (k, v) = a.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// "512M", "1G", "65536K" or bytes.
fn parse_size(v: &str) -> Option<u64> {
    let (num, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Stops this CPU for good.
fn halt() -> ! {
    arch::irq_save();
    loop {
        // WFI, not WFE: an emulator halts the CPU on WFI but spins on WFE.
        // Anything that wakes it is acknowledged and dropped.
        arch::wait_for_interrupt();
        irq::discard_pending();
    }
}

/// Prints why the hypervisor cannot go on, then stops: under an emulator
/// with semihosting it exits with `code`; otherwise the CPU halts.
pub fn fatal(code: i32, why: fmt::Arguments) -> ! {
    arch::irq_save();
    console::force();
    println!("hv-arm: fatal: {}", why);
    error!("fatal on cpu {}, exit status {}", arch::cpu_id(), code);
    semihost::exit(code);
    halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fatal(EXIT_FAULT, format_args!("panic: {}", info))
}
