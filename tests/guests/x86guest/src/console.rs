//! The guest's console: the virtual 16550 at COM1, and the fixed-size
//! text a failed check reports.
//!
//! Owns I/O ports 0x3F8..0x3FF. It must never wait unboundedly for the
//! line-status register: a hypervisor that emulates it wrongly gets its
//! bytes written anyway, so the FAIL lines still come out.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::AtomicBool;
use core::sync::atomic::Ordering::Relaxed;

/// Transmit holding register (write).
const COM1_THR: u16 = 0x3F8;
/// Line-status register.
const COM1_LSR: u16 = 0x3FD;
/// LSR bit 5: the transmit holding register is empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Polls of LSR per byte before writing anyway. Every poll is a VM exit,
/// so this stays small.
const LSR_POLLS: u32 = 1_000;

/// Set once LSR never showed THR empty: later bytes skip the polling, so
/// a broken LSR costs one timeout, not one per byte.
static LSR_BROKEN: AtomicBool = AtomicBool::new(false);

fn read_lsr() -> u8 {
    let v: u8;
    // SAFETY: reading the line-status register of COM1, which this module
    // owns, has no side effect on memory.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") COM1_LSR, options(nomem, nostack, preserves_flags))
    };
    v
}

fn put_byte(b: u8) {
    if !LSR_BROKEN.load(Relaxed) {
        let ready = (0..LSR_POLLS).any(|_| {
            let empty = read_lsr() & LSR_THR_EMPTY != 0;
            if !empty {
                core::hint::spin_loop();
            }
            empty
        });
        if !ready {
            LSR_BROKEN.store(true, Relaxed);
        }
    }
    // SAFETY: a write to COM1's transmit register, which this module owns;
    // it touches no memory.
    unsafe {
        asm!("out dx, al", in("al") b, in("dx") COM1_THR, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a string, `\n` as CR LF.
pub fn put_str(s: &str) {
    for b in s.bytes() {
        if b == b'\n' {
            put_byte(b'\r');
        }
        put_byte(b);
    }
}

/// The console as a `fmt::Write`. One vCPU, and the upcall handler never
/// prints, so no lock.
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
        let _ = writeln!($crate::console::Console, $($arg)*);
    }};
}
pub(crate) use say;

/// A failure's details, formatted into a fixed buffer (there is no heap);
/// longer text is cut.
#[derive(Clone, Copy)]
pub struct Msg {
    buf: [u8; MSG_MAX],
    len: u8,
}

/// Long enough for a few findings, short enough that `Result<_, Msg>`
/// stays cheap to return (and `len` fits a byte).
const MSG_MAX: usize = 120;

impl Msg {
    pub const fn new() -> Self {
        Self {
            buf: [0; MSG_MAX],
            len: 0,
        }
    }

    /// Appends one byte; anything but printable ASCII shows as `?`, so
    /// hostile bytes (a command line) cannot drive the terminal.
    pub fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(usize::from(self.len)) {
            *slot = if b == b' ' || b.is_ascii_graphic() {
                b
            } else {
                b'?'
            };
            self.len += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_str(&self) -> &str {
        self.buf
            .get(..usize::from(self.len))
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("?")
    }
}

impl Default for Msg {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.push(b));
        Ok(())
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Formats a [`Msg`].
macro_rules! msg {
    ($($arg:tt)*) => {{
        let mut m = $crate::console::Msg::new();
        let _ = core::fmt::Write::write_fmt(&mut m, format_args!($($arg)*));
        m
    }};
}
pub(crate) use msg;

/// Collects every failed rule of one check, so a slow emulator run shows
/// all of them at once rather than the first.
pub struct Findings {
    msg: Msg,
}

impl Findings {
    pub const fn new() -> Self {
        Self { msg: Msg::new() }
    }

    /// Records `what` unless `ok`; returns `ok`.
    pub fn require(&mut self, ok: bool, what: fmt::Arguments<'_>) -> bool {
        if !ok {
            self.fail(what);
        }
        ok
    }

    /// Records `what`.
    pub fn fail(&mut self, what: fmt::Arguments<'_>) {
        if !self.msg.is_empty() {
            self.msg.push(b';');
            self.msg.push(b' ');
        }
        let _ = fmt::Write::write_fmt(&mut self.msg, what);
    }

    pub fn done(self) -> Result<(), Msg> {
        if self.msg.is_empty() {
            Ok(())
        } else {
            Err(self.msg)
        }
    }
}
