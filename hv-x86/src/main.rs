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
mod multiboot;
mod serial;

use core::fmt::Write;

use serial::Com1;

/// Written to the isa-debug-exit port: QEMU exits with (value << 1) | 1,
/// so 33 means success and 35 failure.
const EXIT_SUCCESS: u8 = 0x10;
const EXIT_FAILURE: u8 = 0x11;
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Called from the long-mode entry with the loader's magic and info pointer.
extern "C" fn main(magic: u32, info: u32) -> ! {
    let mut com1 = Com1::init();
    let _ = writeln!(
        com1,
        "hv-x86 {} (board {})",
        env!("CARGO_PKG_VERSION"),
        boards::PC.name
    );
    match multiboot::describe(magic, info) {
        Ok(boot) => {
            let _ = writeln!(com1, "loader: {} ({})", boot.loader_name, boot.protocol);
            match boot.memory_kib {
                Some(kib) => {
                    let _ = writeln!(com1, "memory: {} MiB", kib / 1024);
                }
                None => {
                    let _ = writeln!(com1, "memory: not reported by the loader");
                }
            }
        }
        Err(e) => {
            let _ = writeln!(com1, "loader: boot information rejected: {e}");
        }
    }
    let _ = writeln!(
        com1,
        "vmx: {}",
        if has_vmx() { "present" } else { "absent" }
    );
    let _ = writeln!(com1, "hv-x86: nothing more to do yet; stopping");
    stop(EXIT_SUCCESS)
}

/// CPUID.1:ECX[5].
fn has_vmx() -> bool {
    let r = core::arch::x86_64::__cpuid(1);
    r.ecx & (1 << 5) != 0
}

/// Ends the run: QEMU's debug-exit device if present, else halt for good.
fn stop(code: u8) -> ! {
    serial::outb(DEBUG_EXIT_PORT, code);
    loop {
        // SAFETY: stops this CPU with interrupts off; nothing follows.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut com1 = Com1::new();
    let _ = writeln!(com1, "hv-x86: panic: {info}");
    stop(EXIT_FAILURE)
}
