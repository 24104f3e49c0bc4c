//! The hypervisor log: every line goes to COM1 (the board's console) and
//! to the 0xE9 debug port (Bochs prints it on its own output; QEMU without
//! an isa-debugcon drops it). Output only; a missing device is harmless.

use core::fmt::{self, Write};

use crate::port;
use crate::serial::Com1;

const DEBUG_PORT: u16 = 0xe9;

/// COM1 and the debug port as one writer.
pub struct Log;

impl Write for Log {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let _ = Com1::new().write_str(s);
        for b in s.bytes() {
            // SAFETY: 0xE9 is the emulators' debug port; on a PC without
            // one, no device claims it and the write is dropped.
            unsafe { port::outb(DEBUG_PORT, b) };
        }
        Ok(())
    }
}

/// Writes one formatted line.
pub fn line(args: fmt::Arguments) {
    let _ = Log.write_fmt(args);
    let _ = Log.write_str("\n");
}

/// `log!("...", ...)`: one line on the hypervisor log.
macro_rules! log {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}
pub(crate) use log;
