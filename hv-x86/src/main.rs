//! hv-x86: the x86_64 VMX hypervisor binary.
//!
//! Entered by a Multiboot2 loader (GRUB, under Bochs or on a PC) or by
//! QEMU's `-kernel` through Multiboot1, it reaches long mode (boot.rs),
//! gives itself a heap and its own descriptor tables, reads the ACPI
//! tables, turns VMX on and runs every boot module as a domain: each an
//! ELF image started in real mode under EPT with unrestricted guest, its
//! hypercalls answered by the common Xen core (see `exits.rs`). When the
//! last domain is gone it stops (QEMU's isa-debug-exit or Bochs' shutdown
//! port when present, else a halt).
//!
//! Without VMX (QEMU's TCG, a CPU with VMX locked off) it says why and
//! halts cleanly: that is a supported outcome, not a panic.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod cpu;
mod domain;
mod exits;
mod heap;
mod hw;
mod log;
mod port;
mod serial;
mod vcpu;
mod vmm;

use core::fmt::Write;

use hv_x86::multiboot::{self, BootInfo, MemoryTotal, Protocol};
use log::log;
use serial::Com1;

/// isa-debug-exit (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`): QEMU
/// exits with status (value << 1) | 1, so 33 is success, 35 a panic and 37
/// "no VMX". None can be confused with QEMU's own 0 (guest reset or triple
/// fault under `-no-reboot`) or 1 (QEMU's own errors).
const DEBUG_EXIT_PORT: u16 = 0xf4;
const EXIT_SUCCESS: u8 = 0x10;
const EXIT_FAILURE: u8 = 0x11;
const EXIT_NO_VMX: u8 = 0x12;
/// Bochs powers off when "Shutdown" is written here byte by byte.
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// Called from the long-mode entry with the loader's magic and info pointer.
extern "C" fn main(magic: u32, info: u32) -> ! {
    let mut com1 = Com1::init();
    let _ = writeln!(
        com1,
        "hv-x86 {} (board {})",
        env!("CARGO_PKG_VERSION"),
        boards::PC.name
    );
    // Everything kept of the loader's information and the firmware tables
    // is read (and copied) before the heap exists; `boot`, which borrows
    // loader memory, ends with this block.
    let (copy, heap) = {
        let boot = report_loader(magic, info);
        let copy = vmm::BootCopy::new(boot.as_ref());
        vmm::acpi_report(&copy);
        (copy, heap::init(boot.as_ref()))
    };
    log!("heap: {} MiB", heap >> 20);
    if heap < (8 << 20) {
        log!("hv-x86: less than 8 MiB of heap; nothing can run; halting");
        stop(EXIT_FAILURE);
    }
    let percpu = cpu::init();
    log!("cpu0: GDT, TSS and IDT loaded");
    if cfg!(feature = "selftest-panic") {
        panic!("selftest-panic feature: checking the panic path");
    }
    let code = vmm::run(percpu, &copy);
    stop(code)
}

/// Which loader entered us and what it says; refusals are lines, not faults.
fn report_loader(magic: u32, info: u32) -> Option<BootInfo<'static>> {
    let Some(protocol) = Protocol::from_magic(magic) else {
        log!("loader: not Multiboot (eax {magic:#x}); no boot information");
        return None;
    };
    let boot = match multiboot::parse(protocol, info.into(), &boot::LoaderMemory) {
        Ok(boot) => boot,
        Err(e) => {
            log!("loader: {protocol} information rejected: {e}");
            return None;
        }
    };
    log!(
        "loader: {} ({protocol})",
        boot.loader_name.unwrap_or("unnamed")
    );
    match boot.memory {
        Some(m @ MemoryTotal::Map { ranges, .. }) => log!(
            "memory: {} MiB usable ({ranges} ranges in the memory map)",
            m.mib()
        ),
        Some(
            m @ MemoryTotal::Basic {
                lower_kib,
                upper_kib,
            },
        ) => log!(
            "memory: {} MiB (lower {lower_kib} KiB + upper {upper_kib} KiB; no memory map)",
            m.mib()
        ),
        None => log!("memory: not reported by the loader"),
    }
    if let Some(c) = boot.cmdline.filter(|c| !c.is_empty()) {
        log!("cmdline: {c}");
    }
    if boot.dropped > 0 {
        log!(
            "loader: {} modules or memory ranges beyond what is kept",
            boot.dropped
        );
    }
    Some(boot)
}

/// Ends the run: QEMU's debug-exit device or Bochs' shutdown port if
/// present, else halt for good.
fn stop(code: u8) -> ! {
    // SAFETY: writing a byte to a port touches no memory. Port 0xf4 is the
    // exit device when the machine has one; 0x8900 is Bochs' shutdown
    // port. On PCs without them no device claims the ports and the writes
    // are dropped.
    unsafe { port::outb(DEBUG_EXIT_PORT, code) };
    for b in b"Shutdown" {
        // SAFETY: as above.
        unsafe { port::outb(BOCHS_SHUTDOWN_PORT, *b) };
    }
    loop {
        // SAFETY: stops this CPU with interrupts off; nothing follows.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut out = log::Log;
    let _ = write!(out, "hv-x86: panic: {}", info.message());
    if let Some(at) = info.location() {
        let _ = write!(out, " (at {}:{})", at.file(), at.line());
    }
    let _ = writeln!(out);
    stop(EXIT_FAILURE)
}
