//! COM1, the 16550 UART at I/O port 0x3f8: the x86 console.

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O to the legacy UART and debug ports this binary owns;
    // it touches no memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`; reading the UART's status has no side effect.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// The COM1 port.
pub struct Com1;

const BASE: u16 = boards::PC.console.base as u16;

impl Com1 {
    /// Programs 115200 8N1, FIFOs on, interrupts off.
    pub fn init() -> Self {
        outb(BASE + 1, 0x00); // no interrupts
        outb(BASE + 3, 0x80); // DLAB
        outb(BASE, 0x01); // divisor 1: 115200
        outb(BASE + 1, 0x00);
        outb(BASE + 3, 0x03); // 8N1
        outb(BASE + 2, 0xc7); // FIFOs on, cleared
        outb(BASE + 4, 0x03); // DTR, RTS
        Self
    }

    /// The port as it is (for the panic path).
    pub fn new() -> Self {
        Self
    }

    fn put(&mut self, b: u8) {
        // Wait (bounded) for the transmit holding register to empty.
        for _ in 0..100_000 {
            if inb(BASE + 5) & 0x20 != 0 {
                break;
            }
        }
        outb(BASE, b);
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
