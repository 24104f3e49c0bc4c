//! The hypervisor's own log.
//!
//! By default it is defmt: compact frames on a channel of their own (the
//! board profile's: semihosting under QEMU, a second UART on hardware),
//! decoded on the host with this ELF (`cargo run` does it). With the
//! `text-log` feature the same macros print plain text lines, prefixed
//! `(hv)`, on the console UART instead, for boards with no decoder at hand.
//!
//! The macros accept the subset of format syntax both backends share:
//! `{}` and `{:#x}` with integers and `&str`.

#[cfg(not(feature = "text-log"))]
mod frames {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    use boards::LogChannel;

    use crate::console::UartTx;

    /// Bytes gathered before one write to the channel (a semihosting call is
    /// a trap into the emulator: one per frame, not one per byte).
    const BUF: usize = 512;

    /// Where encoded bytes collect before they reach the channel.
    struct Sink {
        buf: [u8; BUF],
        len: usize,
        uart: Option<UartTx>,
    }

    impl Sink {
        fn push(&mut self, bytes: &[u8]) {
            for &b in bytes {
                if self.len == BUF {
                    self.flush();
                }
                self.buf[self.len] = b;
                self.len += 1;
            }
        }

        fn flush(&mut self) {
            let bytes = &self.buf[..self.len];
            if let Some(uart) = self.uart.as_mut() {
                for &b in bytes {
                    uart.put(b);
                }
            } else if boards::SELECTED.log == LogChannel::Semihosting {
                crate::semihost::write_log(bytes);
            }
            self.len = 0;
        }
    }

    struct State {
        encoder: defmt::Encoder,
        sink: Sink,
        irqs: bool,
    }

    /// Held from `acquire` to `release`: one frame at a time, system-wide.
    static TAKEN: AtomicBool = AtomicBool::new(false);
    /// STATE behind TAKEN.
    struct Shared(UnsafeCell<State>);

    // SAFETY: the state is only reached through `state()`, whose callers hold
    // TAKEN, so one CPU at a time uses it.
    unsafe impl Sync for Shared {}

    static STATE: Shared = Shared(UnsafeCell::new(State {
        encoder: defmt::Encoder::new(),
        sink: Sink {
            buf: [0; BUF],
            len: 0,
            uart: None,
        },
        irqs: false,
    }));

    fn take() {
        while TAKEN
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
    }

    /// The state; only call while TAKEN is held by this CPU.
    fn state() -> &'static mut State {
        // SAFETY: every caller holds TAKEN (with IRQs masked on this CPU), so
        // no other reference to STATE is live.
        unsafe { &mut *STATE.0.get() }
    }

    /// Prepares the channel. Until this runs, frames go nowhere.
    pub fn init() {
        let irqs = crate::arch::irq_save();
        take();
        match boards::SELECTED.log {
            LogChannel::Uart(uart) => {
                // SAFETY: the profile reserves this UART for log frames and
                // the boot page table maps it as device memory.
                state().sink.uart = Some(unsafe { UartTx::new(uart) });
            }
            LogChannel::Semihosting => {}
            LogChannel::DebugPort => {}
        }
        TAKEN.store(false, Ordering::Release);
        crate::arch::irq_restore(irqs);
    }

    #[defmt::global_logger]
    struct Logger;

    // SAFETY: acquire/release form a critical section (IRQs masked on this
    // CPU, TAKEN excluding the others), so STATE has one user at a time and
    // frames never interleave.
    unsafe impl defmt::Logger for Logger {
        fn acquire() {
            let irqs = crate::arch::irq_save();
            take();
            let State {
                encoder,
                sink,
                irqs: saved,
            } = state();
            *saved = irqs;
            encoder.start_frame(|b| sink.push(b));
        }

        unsafe fn flush() {
            state().sink.flush();
        }

        unsafe fn release() {
            let State {
                encoder,
                sink,
                irqs,
            } = state();
            encoder.end_frame(|b| sink.push(b));
            sink.flush();
            let irqs = *irqs;
            TAKEN.store(false, Ordering::Release);
            crate::arch::irq_restore(irqs);
        }

        unsafe fn write(bytes: &[u8]) {
            let State { encoder, sink, .. } = state();
            encoder.write(bytes, |b| sink.push(b));
        }
    }

    defmt::timestamp!("{=u64:us}", crate::time::uptime_us());
}

#[cfg(not(feature = "text-log"))]
pub use frames::init;

/// Nothing to prepare: text goes to the console.
#[cfg(feature = "text-log")]
pub fn init() {}

/// Log levels of the text backend.
#[cfg(feature = "text-log")]
#[derive(Clone, Copy)]
pub enum Level {
    /// Something is wrong and was handled.
    Error,
    /// Worth a look.
    Warn,
    /// Progress.
    Info,
}

/// Prints one text log line on the console.
#[cfg(feature = "text-log")]
pub fn text(level: Level, args: core::fmt::Arguments) {
    let tag = match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN ",
        Level::Info => "INFO ",
    };
    let us = crate::time::uptime_us();
    crate::console::print(format_args!(
        "(hv) {}.{:06} {} {}\n",
        us / 1_000_000,
        us % 1_000_000,
        tag,
        args
    ));
}

/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(not(feature = "text-log"))]
        defmt::info!($fmt $(, $arg)*);
        #[cfg(feature = "text-log")]
        $crate::log::text($crate::log::Level::Info, format_args!($fmt $(, $arg)*));
    }};
}

/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(not(feature = "text-log"))]
        defmt::warn!($fmt $(, $arg)*);
        #[cfg(feature = "text-log")]
        $crate::log::text($crate::log::Level::Warn, format_args!($fmt $(, $arg)*));
    }};
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(not(feature = "text-log"))]
        defmt::error!($fmt $(, $arg)*);
        #[cfg(feature = "text-log")]
        $crate::log::text($crate::log::Level::Error, format_args!($fmt $(, $arg)*));
    }};
}
