//! The plain-text console: banner, board facts and (later) guest consoles.
//!
//! Owns the console UART. The hypervisor's own log never goes here unless
//! the `text-log` feature asks for it, so a terminal shows readable text and
//! the log channel carries defmt frames only.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::Lock as Mutex;
use boards::{Uart, UartKind};

/// A transmit-only UART driver for the kinds the profiles name.
pub struct UartTx {
    kind: UartKind,
    base: usize,
}

impl UartTx {
    /// A driver for the UART at `uart.base`.
    ///
    /// # Safety
    ///
    /// `uart.base` must be the device-mapped register block of a UART of
    /// `uart.kind` that nothing else drives.
    pub const unsafe fn new(uart: Uart) -> Self {
        Self {
            kind: uart.kind,
            base: uart.base as usize,
        }
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    pub fn put(&mut self, byte: u8) {
        let (data, status, full_bit) = match self.kind {
            // PL011: DR at 0x00, FR at 0x18, TXFF = bit 5.
            UartKind::Pl011 => (0x00, 0x18, 1 << 5),
            // Cadence: TX_RX_FIFO at 0x30, Channel_sts at 0x2c, TXFULL = bit 4.
            UartKind::Cadence => (0x30, 0x2c, 1 << 4),
            // No MMIO UART of this kind on aarch64 boards.
            UartKind::Pio16550 => return,
        };
        let status_reg = (self.base + status) as *const u32;
        let data_reg = (self.base + data) as *mut u32;
        let mut spins = 0u32;
        // SAFETY: `new`'s contract: these are the UART's own device-mapped
        // registers, read and written with single aligned 32-bit accesses.
        unsafe {
            while status_reg.read_volatile() & full_bit != 0 && spins < 1_000_000 {
                spins += 1;
                core::hint::spin_loop();
            }
            data_reg.write_volatile(u32::from(byte));
        }
    }

    /// Sends bytes, turning `\n` into `\r\n`.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
    }
}

impl fmt::Write for UartTx {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

// SAFETY: the console profile's UART is the board's console register block,
// mapped as device memory by the boot page table, and only this static
// drives it.
static CONSOLE: Mutex<UartTx> = Mutex::new(unsafe { UartTx::new(boards::SELECTED.console) });

/// Set once a fatal path has taken the console over for good.
static FORCED: AtomicBool = AtomicBool::new(false);

/// Base address of the console UART in use (its kind is the profile's).
static CONSOLE_BASE: AtomicU64 = AtomicU64::new(boards::SELECTED.console.base);

/// Moves the console to another UART of the same kind (the DT's stdout-path).
pub fn switch_to(uart: Uart) {
    // SAFETY: the caller checked the address lies in a device window and the
    // DT names it as the console.
    *CONSOLE.lock() = unsafe { UartTx::new(uart) };
    CONSOLE_BASE.store(uart.base, Ordering::SeqCst);
}

/// Writes formatted text to the console, atomically with respect to other
/// CPUs, with IRQs masked so a handler on this CPU cannot deadlock on it.
pub fn print(args: fmt::Arguments) {
    let irqs = crate::arch::irq_save();
    if FORCED.load(Ordering::Relaxed) {
        // A fatal path owns the console: write without the lock.
        // SAFETY: as for CONSOLE; only one CPU reaches a fatal path's output
        // at a time in practice, and interleaving is the worst outcome.
        let mut tx = unsafe {
            UartTx::new(Uart {
                kind: boards::SELECTED.console.kind,
                base: CONSOLE_BASE.load(Ordering::SeqCst),
            })
        };
        let _ = tx.write_fmt(args);
    } else {
        let _ = CONSOLE.lock().write_fmt(args);
    }
    crate::arch::irq_restore(irqs);
}

/// Takes the console for a fatal message even if another CPU (or this one,
/// interrupted) holds its lock.
pub fn force() {
    FORCED.store(true, Ordering::SeqCst);
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Whether guest console lines get a `[hv S.UUUUUU] ` prefix (time since
/// hypervisor entry), like Xen's `console_timestamps`.
static TIMESTAMPS: AtomicBool = AtomicBool::new(false);
/// Set when the last guest byte written ended a line.
static AT_LINE_START: AtomicBool = AtomicBool::new(true);

/// Turns the guest-console timestamps on or off.
pub fn set_timestamps(on: bool) {
    TIMESTAMPS.store(on, Ordering::Relaxed);
}

/// Writes a byte of guest console output as it is (the guest sends its
/// own `\r\n`).
pub fn guest_put(byte: u8) {
    let mut tx = CONSOLE.lock();
    if TIMESTAMPS.load(Ordering::Relaxed) && AT_LINE_START.load(Ordering::Relaxed) {
        let us = crate::time::uptime_us();
        let _ = write!(tx, "[hv {}.{:06}] ", us / 1_000_000, us % 1_000_000);
    }
    AT_LINE_START.store(byte == b'\n', Ordering::Relaxed);
    tx.put(byte);
}

/// Console input: unmasks the PL011's receive and receive-timeout
/// interrupts (the only UART kind with input here).
pub fn enable_input_irq() {
    if boards::SELECTED.console.kind != UartKind::Pl011 {
        return;
    }
    let base = CONSOLE_BASE.load(Ordering::SeqCst) as usize;
    // SAFETY: the console PL011's IMSC register (0x38), device-mapped and
    // driven only by this module; RXIM (bit 4) and RTIM (bit 6).
    unsafe { ((base + 0x38) as *mut u32).write_volatile((1 << 4) | (1 << 6)) };
}

/// Takes one received byte from the console UART, if one is waiting.
pub fn take_input() -> Option<u8> {
    if boards::SELECTED.console.kind != UartKind::Pl011 {
        return None;
    }
    let _guard = CONSOLE.lock();
    let base = CONSOLE_BASE.load(Ordering::SeqCst) as usize;
    // SAFETY: the console PL011's FR (0x18) and DR (0x00) registers, read
    // with aligned 32-bit accesses under the console lock.
    unsafe {
        if ((base + 0x18) as *const u32).read_volatile() & (1 << 4) != 0 {
            return None;
        }
        Some(((base) as *const u32).read_volatile() as u8)
    }
}
