//! x86 port I/O: the two instructions. They are `unsafe` because a port can
//! be anything (a DMA engine, a reset register); each device module wraps
//! the ports it owns in safe functions.

/// Writes a byte to an I/O port.
///
/// # Safety
/// `port` must be a register of a device the caller owns, and writing
/// `value` there must not change memory behind the compiler's back (no DMA
/// or memory-controller programming).
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: `out` touches no memory; the caller vouches for the device.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]; reading may also have device side effects (clearing
/// status bits), which the caller must expect.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: `in` touches no memory; the caller vouches for the device.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags));
    }
    value
}
