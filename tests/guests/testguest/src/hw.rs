//! The guest's view of its virtual machine: system registers, the device
//! frames (UART, GIC), the generic timer and PSCI.
//!
//! Every MMIO access is one `ldr`/`str` of the register's own width with a
//! plain base register, so the hypervisor gets a complete syndrome (ISV = 1)
//! and can emulate it; nothing here ever uses a pair or a writeback form on
//! a device. The MMU stays off, so RAM is Device memory too: only aligned
//! accesses (the target's `+strict-align` default) and no exclusives.

use core::arch::asm;
use core::fmt;

include!(concat!(env!("OUT_DIR"), "/layout.rs"));

/// Reads a system register by name.
macro_rules! sysreg_read {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading a system register at EL1 changes no state and
        // touches no memory.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Writes a system register by name and synchronizes the context. Callers
/// only ever name registers whose effects this module owns (timer, GIC CPU
/// interface); memory ordering is kept (no `nomem`) so that a write that
/// signals another vCPU (an SGI) comes after the stores before it.
macro_rules! sysreg_write {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: the registers written through this macro (timer, GIC CPU
        // interface) control interrupts only; none changes memory or the
        // translation regime Rust code runs under.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) v, options(nostack, preserves_flags)) };
    }};
}

pub(crate) use {sysreg_read, sysreg_write};

/// The vCPU index this code runs on (Aff0; the guest has two vCPUs).
pub fn cpu_index() -> usize {
    (sysreg_read!("mpidr_el1") & 0xff).min(1) as usize
}

/// Unmasks IRQs (PSTATE.I).
pub fn irqs_on() {
    // SAFETY: the vector table is installed before any caller runs, and the
    // IRQ handler saves every register it may change.
    unsafe { asm!("msr daifclr, #2", options(nostack)) };
}

/// Masks IRQs.
pub fn irqs_off() {
    // SAFETY: masking interrupts cannot break any invariant.
    unsafe { asm!("msr daifset, #2", options(nostack)) };
}

/// A device frame of the guest map. Only constructed from the constants
/// above, so an access can never land in RAM that Rust code owns.
#[derive(Clone, Copy)]
pub struct Dev(u64);

impl Dev {
    /// 32-bit read of the register at `off`.
    pub fn read32(self, off: u64) -> u32 {
        let v: u32;
        // SAFETY: `self.0 + off` is a register of a device frame of the
        // guest map (never RAM), read with one aligned `ldr`.
        unsafe {
            asm!("ldr {v:w}, [{a}]", v = out(reg) v, a = in(reg) self.0 + off, options(nostack, preserves_flags))
        };
        v
    }

    /// 64-bit read of the register at `off`.
    pub fn read64(self, off: u64) -> u64 {
        let v: u64;
        // SAFETY: as in `read32`.
        unsafe {
            asm!("ldr {v}, [{a}]", v = out(reg) v, a = in(reg) self.0 + off, options(nostack, preserves_flags))
        };
        v
    }

    /// 64-bit write of the register at `off`.
    pub fn write64(self, off: u64, v: u64) {
        // SAFETY: as in `read32`; a device frame or shared memory of the
        // guest map, not memory Rust owns.
        unsafe {
            asm!("str {v}, [{a}]", v = in(reg) v, a = in(reg) self.0 + off, options(nostack, preserves_flags))
        };
    }

    /// 32-bit write of the register at `off`.
    pub fn write32(self, off: u64, v: u32) {
        // SAFETY: as in `read32`; a device register, not memory Rust owns.
        unsafe {
            asm!("str {v:w}, [{a}]", v = in(reg) v, a = in(reg) self.0 + off, options(nostack, preserves_flags))
        };
    }

    /// 8-bit write of the register at `off` (GIC priority bytes).
    pub fn write8(self, off: u64, v: u8) {
        // SAFETY: as in `write32`.
        unsafe {
            asm!("strb {v:w}, [{a}]", v = in(reg) v as u32, a = in(reg) self.0 + off, options(nostack, preserves_flags))
        };
    }
}

/// Where scenarios/tmem-pair.toml and the tmem benchmark map 4 KiB of
/// static shared memory (`xen,domain-shared-memory-v1`) that both test
/// guests see: their mailbox, outside tmem, for taking turns.
pub const MAILBOX: Dev = Dev(0x2300_0000);

// ---------------------------------------------------------------- console

const UART: Dev = Dev(UART_BASE);
const UART_DR: u64 = 0x00;
const UART_FR: u64 = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// Writes one byte to the PL011, waiting (boundedly) while its FIFO is full.
fn put_byte(b: u8) {
    // A broken FR must not hang the guest: after this many polls the byte
    // is written anyway.
    for _ in 0..100_000 {
        if UART.read32(UART_FR) & FR_TXFF == 0 {
            break;
        }
        core::hint::spin_loop();
    }
    UART.write32(UART_DR, b as u32);
}

/// Writes a string, `\n` as CR LF. Needs no formatting machinery, so it
/// works even before the load address is known to be right.
pub fn put_str(s: &str) {
    for b in s.bytes() {
        if b == b'\n' {
            put_byte(b'\r');
        }
        put_byte(b);
    }
}

/// The console as a `fmt::Write`. Only vCPU 0 prints, so no lock.
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put_str(s);
        Ok(())
    }
}

/// Prints one line on the console.
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::hw::Console, $($arg)*);
    }};
}
pub(crate) use say;

// ------------------------------------------------------------------ time

/// Counter ticks per second (CNTFRQ_EL0, or QEMU's 62.5 MHz if it reads 0).
pub fn counter_hz() -> u64 {
    match sysreg_read!("cntfrq_el0") & 0xffff_ffff {
        0 => 62_500_000,
        f => f,
    }
}

/// The virtual counter.
pub fn now() -> u64 {
    let v: u64;
    // SAFETY: `isb` then reading CNTVCT_EL0 touches no memory; the barrier
    // keeps the read from being taken early.
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Polls `done` until it holds or `ms` milliseconds of counter time have
/// passed; true if it held. Every wait in the guest goes through here, so a
/// hypervisor that never delivers gives a FAIL line, not a hang.
pub fn wait_for(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = now() + counter_hz() / 1000 * ms;
    loop {
        if done() {
            return true;
        }
        if now() > end {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Busy-waits `ms` milliseconds.
pub fn delay_ms(ms: u64) {
    wait_for(ms, || false);
}

/// Arms the virtual timer to fire in `ticks` counter ticks, unmasked.
pub fn timer_arm(ticks: u64) {
    sysreg_write!("cntv_tval_el0", ticks);
    sysreg_write!("cntv_ctl_el0", 1);
}

/// Stops the virtual timer.
pub fn timer_stop() {
    sysreg_write!("cntv_ctl_el0", 0);
}

// ------------------------------------------------------------------ PSCI

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
pub const PSCI_CPU_ON: u32 = 0xc400_0003;
pub const PSCI_AFFINITY_INFO: u32 = 0xc400_0004;
pub const PSCI_MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
pub const PSCI_FEATURES: u32 = 0x8400_000a;

pub const PSCI_NOT_SUPPORTED: i64 = -1;
pub const PSCI_INVALID_PARAMETERS: i64 = -2;
pub const PSCI_ALREADY_ON: i64 = -4;
pub const PSCI_ON_PENDING: i64 = -5;

/// An SMCCC call through `hvc #0`: function id in w0, arguments in x1..x3,
/// result in x0 (sign-extended from 32 bits for the SMC32 functions, whose
/// results live in w0). x4..x17 may be clobbered (SMCCC 1.0).
pub fn smccc(fid: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let r: u64;
    // SAFETY: the call is serviced by the hypervisor, which reads only
    // registers. The one call that starts code (CPU_ON) is only ever given
    // this image's secondary entry point.
    unsafe {
        asm!("hvc #0",
            inout("x0") fid as u64 => r, inout("x1") a1 => _, inout("x2") a2 => _,
            inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
            out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack));
    }
    if fid & 0x4000_0000 == 0 {
        r as u32 as i32 as i64
    } else {
        r as i64
    }
}

// ------------------------------------------------------------------- GIC

pub const GICD: Dev = Dev(GICD_BASE);
const GICD_CTLR: u64 = 0x0000;
const GICD_PIDR2: u64 = 0xffe8;
const CTLR_RWP: u32 = 1 << 31;
/// ARE (bit 4) and EnableGrp1 (bit 1; EnableGrp1NS in a two-state view).
const CTLR_ARE_GRP1: u32 = 0x12;

const GICR_TYPER: u64 = 0x0008;
const GICR_WAKER: u64 = 0x0014;
const GICR_PIDR2: u64 = 0xffe8;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// SGI_base registers (the second 64 KiB frame).
const SGI_BASE: u64 = 0x1_0000;
const GICR_IGROUPR0: u64 = SGI_BASE + 0x080;
const GICR_ISENABLER0: u64 = SGI_BASE + 0x100;
const GICR_IPRIORITYR: u64 = SGI_BASE + 0x400;

/// The SGI vCPU 0 sends to vCPU 1.
pub const TEST_SGI: u32 = 1;
/// Priority of both enabled interrupts (any value below the PMR's 0xff).
const PRIORITY: u8 = 0xa0;

/// Architecture revision from a PIDR2 value (3 = GICv3, 4 = GICv4).
fn arch_rev(pidr2: u32) -> u32 {
    (pidr2 >> 4) & 0xf
}

/// Enables affinity routing and group 1 at the distributor (vCPU 0 only,
/// before any redistributor is used).
pub fn gic_distributor_init() -> Result<(), crate::Msg> {
    let rev = arch_rev(GICD.read32(GICD_PIDR2));
    if rev != 3 && rev != 4 {
        return Err(crate::msg!("GICD_PIDR2 ArchRev {rev}, want 3 or 4"));
    }
    GICD.write32(GICD_CTLR, CTLR_ARE_GRP1);
    if !wait_for(2000, || GICD.read32(GICD_CTLR) & CTLR_RWP == 0) {
        return Err(crate::msg!("GICD_CTLR.RWP stuck at 1"));
    }
    let ctlr = GICD.read32(GICD_CTLR);
    if ctlr & CTLR_ARE_GRP1 != CTLR_ARE_GRP1 {
        return Err(crate::msg!("GICD_CTLR reads {ctlr:#x} after writing 0x12"));
    }
    Ok(())
}

/// Brings up this vCPU's redistributor and CPU interface: wakes the
/// redistributor, makes the virtual timer PPI and the test SGI group 1 at
/// priority 0xa0 and enabled, turns on the system-register interface with
/// group 1 and every priority unmasked. IRQs stay masked at PSTATE.
pub fn gic_cpu_init(cpu: usize) -> Result<(), crate::Msg> {
    let rd = Dev(GICR_BASE + cpu as u64 * GICR_STRIDE);
    let rev = arch_rev(rd.read32(GICR_PIDR2));
    if rev != 3 && rev != 4 {
        return Err(crate::msg!("GICR_PIDR2 ArchRev {rev}, want 3 or 4"));
    }
    // GICR_TYPER[63:32] is the affinity of the CPU this frame serves,
    // Aff3.Aff2.Aff1.Aff0 (MPIDR keeps Aff3 at bits 39:32).
    let typer = rd.read64(GICR_TYPER);
    let mpidr = MPIDR[cpu];
    let want = (((mpidr >> 32) & 0xff) << 24) | (mpidr & 0xff_ffff);
    if typer >> 32 != want {
        return Err(crate::msg!(
            "GICR_TYPER {typer:#x} of frame {cpu}: affinity {:#x}, want {want:#x}",
            typer >> 32
        ));
    }
    let waker = rd.read32(GICR_WAKER);
    rd.write32(GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
    if !wait_for(2000, || rd.read32(GICR_WAKER) & WAKER_CHILDREN_ASLEEP == 0) {
        return Err(crate::msg!(
            "GICR_WAKER.ChildrenAsleep stuck (reads {:#x})",
            rd.read32(GICR_WAKER)
        ));
    }
    rd.write32(GICR_IGROUPR0, 0xffff_ffff);
    rd.write8(GICR_IPRIORITYR + VTIMER_INTID as u64, PRIORITY);
    rd.write8(GICR_IPRIORITYR + TEST_SGI as u64, PRIORITY);
    let bits = (1 << VTIMER_INTID) | (1 << TEST_SGI);
    rd.write32(GICR_ISENABLER0, bits);
    let enabled = rd.read32(GICR_ISENABLER0);
    if enabled & bits != bits {
        return Err(crate::msg!(
            "GICR_ISENABLER0 reads {enabled:#x} after enabling {bits:#x}"
        ));
    }
    // ICC_SRE_EL1.SRE: the system-register interface (RAO/WI when the
    // hypervisor only offers that).
    sysreg_write!("icc_sre_el1", sysreg_read!("icc_sre_el1") | 1);
    let sre = sysreg_read!("icc_sre_el1");
    if sre & 1 == 0 {
        return Err(crate::msg!("ICC_SRE_EL1 reads {sre:#x}: SRE did not stick"));
    }
    sysreg_write!("icc_pmr_el1", 0xff);
    sysreg_write!("icc_igrpen1_el1", 1);
    Ok(())
}

/// Sends SGI `intid` to vCPU `target` (Aff3..Aff1 = 0) through ICC_SGI1R_EL1.
pub fn send_sgi(intid: u32, target: usize) {
    let v = ((intid as u64 & 0xf) << 24) | (1 << target);
    // The DSB makes the sender's earlier stores visible before the SGI.
    // SAFETY: a barrier changes no state Rust relies on.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
    sysreg_write!("icc_sgi1r_el1", v);
}
