//! The plain-text console: banner, board facts and the guests' consoles
//! (each line prefixed with its domain's name; input to one domain at a
//! time, CTRL-A three times to switch).
//!
//! Owns the console UART. The hypervisor's own log never goes here unless
//! the `text-log` feature asks for it, so a terminal shows readable text and
//! the log channel carries defmt frames only.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

use crate::arch::Lock as Mutex;
use armvm::console_mux::InputSwitch;
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

/// Turns the guest-console timestamps on or off.
pub fn set_timestamps(on: bool) {
    TIMESTAMPS.store(on, Ordering::Relaxed);
}

/// Longest guest line held back (longer ones are cut).
const LINE_MAX: usize = 256;
/// Domain ids the console keeps state for (ids are 1-based).
const MAX_IDS: usize = crate::sched::MAX_DOMAINS + 1;

/// One domain's console output state.
struct GuestOut {
    line: [u8; LINE_MAX],
    len: usize,
    /// Its next byte starts a line (gets the prefix).
    at_start: bool,
    /// The vCPU that wrote the held bytes (u32::MAX: a hypercall).
    writer: u32,
}

/// Every domain's output state and which of them has a partial line on
/// the console. Lock order: this, then [`CONSOLE`].
struct Outputs {
    doms: [GuestOut; MAX_IDS],
    /// Domain id whose line is open on the console (0: none).
    open: u16,
}

static OUTPUTS: Mutex<Outputs> = Mutex::new(Outputs {
    doms: [const {
        GuestOut {
            line: [0; LINE_MAX],
            len: 0,
            at_start: true,
            writer: u32::MAX,
        }
    }; MAX_IDS],
    open: 0,
});

/// Domain id with the input focus (0: none).
static FOCUS: AtomicU16 = AtomicU16::new(0);
/// The CTRL-A recogniser.
static SWITCH: Mutex<InputSwitch> = Mutex::new(InputSwitch::new());

fn prefix(tx: &mut UartTx, name: &str) {
    if TIMESTAMPS.load(Ordering::Relaxed) {
        let us = crate::time::uptime_us();
        let _ = write!(tx, "[hv {}.{:06}] ", us / 1_000_000, us % 1_000_000);
    }
    let _ = write!(tx, "({}) ", name);
}

/// Ends another domain's open line so `id` can write.
fn close_other(o: &mut Outputs, tx: &mut UartTx, id: u16) {
    if o.open != 0 && o.open != id {
        tx.write_bytes(b"\n");
        if let Some(d) = o.doms.get_mut(usize::from(o.open)) {
            d.at_start = true;
        }
        o.open = 0;
    }
}

/// One byte of a domain's console output. Every line is shown prefixed
/// with `(name) `, a whole line at a time, so lines of different domains
/// never mix. A partial line (a shell prompt, typed characters echoed)
/// of the domain with the input focus shows as soon as the vCPU writing
/// it idles ([`guest_idle`]).
pub fn guest_put(id: u16, name: &str, vcpu: u32, byte: u8) {
    let irqs = crate::arch::irq_save();
    let mut o = OUTPUTS.lock();
    if let Some(d) = o.doms.get_mut(usize::from(id)) {
        d.writer = vcpu;
        if d.len < LINE_MAX {
            d.line[d.len] = byte;
            d.len += 1;
        }
        if byte == b'\n' || d.len == LINE_MAX {
            flush(&mut o, id, name);
        }
    }
    drop(o);
    crate::arch::irq_restore(irqs);
}

/// vCPU `vcpu` of domain `id` waits for an interrupt: if the domain has
/// the input focus and this vCPU wrote its partial line, the line is shown
/// (likely a prompt waiting for input). Another vCPU idling while the
/// writer is mid-line does not show it: another domain's line could then
/// cut it in two.
pub fn guest_idle(id: u16, name: &str, vcpu: u32) {
    if FOCUS.load(Ordering::Relaxed) != id {
        return;
    }
    let irqs = crate::arch::irq_save();
    let mut o = OUTPUTS.lock();
    if o.doms
        .get(usize::from(id))
        .is_some_and(|d| d.writer == vcpu)
    {
        flush(&mut o, id, name);
    }
    drop(o);
    crate::arch::irq_restore(irqs);
}

/// Writes what domain `id` holds back (a whole line, or a partial one
/// when it takes the focus).
fn flush(o: &mut Outputs, id: u16, name: &str) {
    let idx = usize::from(id);
    if idx >= MAX_IDS || o.doms[idx].len == 0 {
        return;
    }
    let mut tx = CONSOLE.lock();
    close_other(o, &mut tx, id);
    let d = &mut o.doms[idx];
    if d.at_start {
        prefix(&mut tx, name);
    }
    for &b in &d.line[..d.len] {
        tx.put(b);
    }
    let ended = d.line[d.len - 1] == b'\n';
    if !ended && d.len == LINE_MAX {
        // A line too long to hold: cut here, the rest gets a new prefix.
        tx.write_bytes(b"\n");
    }
    d.at_start = ended || d.len == LINE_MAX;
    d.len = 0;
    o.open = if d.at_start { 0 } else { id };
}

/// The domain id with the input focus.
pub fn focus() -> Option<u16> {
    match FOCUS.load(Ordering::Relaxed) {
        0 => None,
        id => Some(id),
    }
}

/// Gives the input focus to the first live domain with a vPL011 after
/// `after` (0: from the start), wrapping around; says so on the console.
pub fn move_focus(after: u16) {
    let doms = crate::sched::domains();
    let pick = doms
        .iter()
        .filter(|d| d.id > after)
        .chain(doms.iter())
        .find(|d| !d.is_dead() && d.has_vpl011());
    let irqs = crate::arch::irq_save();
    let mut o = OUTPUTS.lock();
    match pick {
        Some(d) => {
            FOCUS.store(d.id, Ordering::Relaxed);
            {
                let mut tx = CONSOLE.lock();
                close_other(&mut o, &mut tx, 0);
                let _ = writeln!(
                    tx,
                    "(hv) console input goes to {} (CTRL-A three times to switch)",
                    d.name()
                );
            }
            // Whatever it had held back (its prompt, say) shows now.
            flush(&mut o, d.id, d.name());
        }
        None => FOCUS.store(0, Ordering::Relaxed),
    }
    drop(o);
    crate::arch::irq_restore(irqs);
}

/// A domain was destroyed: what it held back is shown, and the input
/// focus moves on if it had it.
pub fn domain_gone(id: u16) {
    if let Some(d) = crate::sched::domain(id) {
        let irqs = crate::arch::irq_save();
        let mut o = OUTPUTS.lock();
        flush(&mut o, id, d.name());
        if o.open == id {
            o.open = 0;
            CONSOLE.lock().write_bytes(b"\n");
        }
        if let Some(s) = o.doms.get_mut(usize::from(id)) {
            s.at_start = true;
        }
        drop(o);
        crate::arch::irq_restore(irqs);
    }
    if FOCUS.load(Ordering::Relaxed) == id {
        move_focus(id);
    }
}

/// Feeds one byte typed on the console through the CTRL-A switch; returns
/// the bytes for the focused domain (the focus may have moved first).
pub fn filter_input(b: u8) -> impl Iterator<Item = u8> {
    let fed = SWITCH.lock().feed(b);
    if fed.switch {
        move_focus(FOCUS.load(Ordering::Relaxed));
    }
    fed.bytes()
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
