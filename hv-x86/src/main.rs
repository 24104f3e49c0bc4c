//! hv-x86: the x86_64 hypervisor binary.
//!
//! For now: entered by a Multiboot2 loader (GRUB, Bochs) or by QEMU's
//! `-kernel` through Multiboot1, it reaches long mode, prints its banner and
//! what the loader told it on COM1, says whether the CPU has VMX, and stops
//! (through QEMU's isa-debug-exit device when there is one). VMX, EPT and
//! the common hypercall core come with the x86 issue.
#![no_std]
#![no_main]

mod boot;
mod port;
mod serial;

use core::fmt::Write;

use hv_x86::multiboot::{self, MemoryTotal, Protocol};
use serial::Com1;

/// isa-debug-exit (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`): QEMU
/// exits with status (value << 1) | 1, so 33 is success and 35 a panic.
/// Neither can be confused with QEMU's own 0 (guest reset or triple fault
/// under `-no-reboot`) or 1 (QEMU's own errors, such as an image it refuses).
const DEBUG_EXIT_PORT: u16 = 0xf4;
const EXIT_SUCCESS: u8 = 0x10;
const EXIT_FAILURE: u8 = 0x11;

/// Called from the long-mode entry with the loader's magic and info pointer.
extern "C" fn main(magic: u32, info: u32) -> ! {
    let mut com1 = Com1::init();
    let _ = writeln!(
        com1,
        "hv-x86 {} (board {})",
        env!("CARGO_PKG_VERSION"),
        boards::PC.name
    );
    report_loader(&mut com1, magic, info);
    let _ = writeln!(
        com1,
        "vmx: {}",
        if has_vmx() { "present" } else { "absent" }
    );
    if cfg!(feature = "selftest-panic") {
        panic!("selftest-panic feature: checking the panic path");
    }
    let _ = writeln!(com1, "hv-x86: nothing more to do yet; stopping");
    stop(EXIT_SUCCESS)
}

/// Which loader entered us and what it says; refusals are lines, not faults.
fn report_loader(com1: &mut Com1, magic: u32, info: u32) {
    let Some(protocol) = Protocol::from_magic(magic) else {
        let _ = writeln!(
            com1,
            "loader: not Multiboot (eax {magic:#x}); no boot information"
        );
        return;
    };
    let boot = match multiboot::parse(protocol, info.into(), &boot::LoaderMemory) {
        Ok(boot) => boot,
        Err(e) => {
            let _ = writeln!(com1, "loader: {protocol} information rejected: {e}");
            return;
        }
    };
    let _ = writeln!(
        com1,
        "loader: {} ({protocol})",
        boot.loader_name.unwrap_or("unnamed")
    );
    let _ = match boot.memory {
        Some(m @ MemoryTotal::Map { ranges, .. }) => writeln!(
            com1,
            "memory: {} MiB usable ({ranges} ranges in the memory map)",
            m.mib()
        ),
        Some(
            m @ MemoryTotal::Basic {
                lower_kib,
                upper_kib,
            },
        ) => writeln!(
            com1,
            "memory: {} MiB (lower {lower_kib} KiB + upper {upper_kib} KiB; no memory map)",
            m.mib()
        ),
        None => writeln!(com1, "memory: not reported by the loader"),
    };
}

/// CPUID.1:ECX[5].
fn has_vmx() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 5) != 0
}

/// Ends the run: QEMU's debug-exit device if present, else halt for good.
fn stop(code: u8) -> ! {
    // SAFETY: writing a byte to a port touches no memory. Port 0xf4 is the
    // exit device when the machine has one; on PCs without it no device
    // claims the port and the write is dropped.
    unsafe { port::outb(DEBUG_EXIT_PORT, code) };
    loop {
        // SAFETY: stops this CPU with interrupts off; nothing follows.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut com1 = Com1::new();
    let _ = write!(com1, "hv-x86: panic: {}", info.message());
    if let Some(at) = info.location() {
        let _ = write!(com1, " (at {}:{})", at.file(), at.line());
    }
    let _ = writeln!(com1);
    stop(EXIT_FAILURE)
}
