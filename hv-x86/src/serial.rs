//! COM1, the 16550 UART the pc profile names as the console (I/O port
//! 0x3f8): polled output at 115200 8N1, nothing else. It owns COM1's eight
//! registers and must never wait on the device without a bound.

use boards::UartKind;

use crate::port;

const BASE: u16 = boards::PC.console.base as u16;
const _: () = assert!(
    matches!(boards::PC.console.kind, UartKind::Pio16550) && boards::PC.console.base <= 0xfff8
);

/// Register offsets.
const THR: u16 = 0; // transmit holding; divisor low with DLAB
const IER: u16 = 1; // interrupt enable; divisor high with DLAB
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

fn write(reg: u16, value: u8) {
    // SAFETY: COM1's registers belong to this driver alone; a UART's
    // registers move no memory.
    unsafe { port::outb(BASE + reg, value) }
}

fn read(reg: u16) -> u8 {
    // SAFETY: as in `write`; the only register read is LSR, whose read
    // clears error bits this driver does not use.
    unsafe { port::inb(BASE + reg) }
}

/// The COM1 console.
pub struct Com1;

impl Com1 {
    /// Programs 115200 8N1, FIFOs on, interrupts off.
    pub fn init() -> Self {
        write(IER, 0x00);
        write(LCR, 0x80); // DLAB: the next two are the divisor
        write(THR, 0x01); // 115200 / 1
        write(IER, 0x00);
        write(LCR, 0x03); // 8N1, DLAB off
        write(FCR, 0xc7); // FIFOs on and cleared
        write(MCR, 0x03); // DTR, RTS
        Self
    }

    /// The port as `init` left it (for the panic path).
    pub fn new() -> Self {
        Self
    }

    fn put(&mut self, b: u8) {
        // Bounded: a missing or wedged UART must not hang the banner.
        for _ in 0..100_000 {
            if read(LSR) & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        write(THR, b);
    }
}

impl core::fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}
