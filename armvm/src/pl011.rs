//! A PL011 UART (PrimeCell r1p5, ARM DDI 0183) as the guest's console.
//!
//! Owns the register file the guest's driver sees and a receive FIFO the
//! hypervisor fills from its own console. It never touches hardware and
//! never blocks: a transmitted byte goes straight to the caller's sink, so
//! the transmit FIFO is always empty and the transmitter never busy.
//! Offsets and sizes come from a trapped guest access and are checked;
//! whatever the guest writes is masked to the register's width.
//!
//! Deliberate simplifications, all invisible to the Linux `amba-pl011`
//! driver: bytes are sent whenever DR is written (even with UARTEN or TXE
//! clear, as early boot code writes before enabling), and received whatever
//! CR says; the receive FIFO is 32 deep even when LCR_H.FEN is clear; the
//! receive trigger level is one byte; no framing, parity or break errors
//! are ever reported; modem lines are not modelled (their status bits read
//! 0, their interrupts never fire).

use alloc::collections::VecDeque;
use core::fmt;

/// Depth of the receive FIFO (the hardware's).
pub const RX_FIFO_DEPTH: usize = 32;
/// Most bytes [`Pl011::queue_rx`] holds beyond the FIFO.
pub const RX_BACKLOG_MAX: usize = 4096;

/// Data register.
pub const DR: u64 = 0x000;
/// Receive status (read) / error clear (write).
pub const RSR_ECR: u64 = 0x004;
/// Flags.
pub const FR: u64 = 0x018;
/// IrDA low-power counter.
pub const ILPR: u64 = 0x020;
/// Integer baud rate divisor.
pub const IBRD: u64 = 0x024;
/// Fractional baud rate divisor.
pub const FBRD: u64 = 0x028;
/// Line control.
pub const LCR_H: u64 = 0x02c;
/// Control.
pub const CR: u64 = 0x030;
/// Interrupt FIFO level select.
pub const IFLS: u64 = 0x034;
/// Interrupt mask set/clear.
pub const IMSC: u64 = 0x038;
/// Raw interrupt status.
pub const RIS: u64 = 0x03c;
/// Masked interrupt status.
pub const MIS: u64 = 0x040;
/// Interrupt clear.
pub const ICR: u64 = 0x044;
/// DMA control.
pub const DMACR: u64 = 0x048;
/// First PrimeCell identification register (PeriphID0).
pub const PERIPH_ID0: u64 = 0xfe0;
/// Size of the register frame.
pub const FRAME_SIZE: u64 = 0x1000;

/// Values of PeriphID0..3 then PCellID0..3 (r1p5: part 0x011, designer
/// 0x41 'A', revision 3).
pub const ID_REGS: [u8; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// FR: transmit FIFO empty.
pub const FR_TXFE: u32 = 1 << 7;
/// FR: receive FIFO full.
pub const FR_RXFF: u32 = 1 << 6;
/// FR: transmit FIFO full.
pub const FR_TXFF: u32 = 1 << 5;
/// FR: receive FIFO empty.
pub const FR_RXFE: u32 = 1 << 4;
/// FR: transmitter busy.
pub const FR_BUSY: u32 = 1 << 3;

/// RSR: overrun error.
pub const RSR_OE: u32 = 1 << 3;

/// CR: UART enable.
pub const CR_UARTEN: u32 = 1 << 0;
/// CR: transmit enable.
pub const CR_TXE: u32 = 1 << 8;
/// CR: receive enable.
pub const CR_RXE: u32 = 1 << 9;

/// Interrupt bits (RIS, MIS, IMSC, ICR): receive.
pub const INT_RX: u32 = 1 << 4;
/// Transmit.
pub const INT_TX: u32 = 1 << 5;
/// Receive timeout.
pub const INT_RT: u32 = 1 << 6;
/// Framing error.
pub const INT_FE: u32 = 1 << 7;
/// Parity error.
pub const INT_PE: u32 = 1 << 8;
/// Break error.
pub const INT_BE: u32 = 1 << 9;
/// Overrun error.
pub const INT_OE: u32 = 1 << 10;
/// Every interrupt bit (modem ones included).
pub const INT_ALL: u32 = 0x7ff;

/// Register widths (bits the hardware implements).
const ILPR_MASK: u32 = 0xff;
const IBRD_MASK: u32 = 0xffff;
const FBRD_MASK: u32 = 0x3f;
const LCR_H_MASK: u32 = 0xff;
const CR_MASK: u32 = 0xffff;
const IFLS_MASK: u32 = 0x3f;
const DMACR_MASK: u32 = 0x7;

/// Reset values that are not zero.
const CR_RESET: u32 = CR_RXE | CR_TXE;
const IFLS_RESET: u32 = 0x12;

/// Why an access was refused (the caller injects an abort).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pl011Error {
    /// Access size other than 1, 2 or 4 bytes.
    BadSize(u8),
    /// Offset not 4-byte aligned.
    Unaligned(u64),
    /// Offset beyond the 4 KiB frame.
    OutOfRange(u64),
}

impl fmt::Display for Pl011Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pl011Error::BadSize(s) => write!(f, "vPL011: {s}-byte access (1, 2 or 4 allowed)"),
            Pl011Error::Unaligned(o) => write!(f, "vPL011: unaligned access at {o:#x}"),
            Pl011Error::OutOfRange(o) => write!(f, "vPL011: offset {o:#x} outside the frame"),
        }
    }
}

/// The UART's state.
#[derive(Clone, Debug)]
pub struct Pl011 {
    rx: VecDeque<u8>,
    /// Console input waiting for room in the FIFO ([`Pl011::queue_rx`]):
    /// the flow control a terminal server gives, so a pasted line is not
    /// cut at 32 bytes while the guest is busy. Refilled from as the guest
    /// reads DR.
    backlog: VecDeque<u8>,
    /// Latched interrupt bits (only OE here); RX, RT and TX are computed.
    latched: u32,
    rsr: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
}

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks an access and returns the mask of the bits it carries.
fn check(offset: u64, size: u8) -> Result<u32, Pl011Error> {
    let mask = match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => return Err(Pl011Error::BadSize(size)),
    };
    if offset >= FRAME_SIZE {
        return Err(Pl011Error::OutOfRange(offset));
    }
    if !offset.is_multiple_of(4) {
        return Err(Pl011Error::Unaligned(offset));
    }
    Ok(mask)
}

impl Pl011 {
    /// A UART in its reset state.
    pub fn new() -> Self {
        Pl011 {
            rx: VecDeque::with_capacity(RX_FIFO_DEPTH),
            backlog: VecDeque::new(),
            latched: 0,
            rsr: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            dmacr: 0,
        }
    }

    /// Back to the reset state (received bytes are dropped).
    pub fn reset(&mut self) {
        self.rx.clear();
        self.backlog.clear();
        let rx = core::mem::take(&mut self.rx);
        let backlog = core::mem::take(&mut self.backlog);
        *self = Pl011 {
            rx,
            backlog,
            ..Pl011::new()
        };
    }

    /// Raw interrupt status: TX always (the FIFO is always empty), RX and
    /// RT while a byte waits, plus whatever is latched.
    fn ris(&self) -> u32 {
        let rx = if self.rx.is_empty() {
            0
        } else {
            INT_RX | INT_RT
        };
        self.latched | rx | INT_TX
    }

    fn mis(&self) -> u32 {
        self.ris() & self.imsc
    }

    fn fr(&self) -> u32 {
        let mut fr = FR_TXFE;
        if self.rx.is_empty() {
            fr |= FR_RXFE;
        }
        if self.rx.len() >= RX_FIFO_DEPTH {
            fr |= FR_RXFF;
        }
        fr
    }

    /// The interrupt line: high while any unmasked interrupt is pending.
    pub fn irq_level(&self) -> bool {
        self.mis() != 0
    }

    /// Bytes waiting in the receive FIFO.
    pub fn rx_len(&self) -> usize {
        self.rx.len()
    }

    /// Room left in the receive FIFO.
    pub fn rx_free(&self) -> usize {
        RX_FIFO_DEPTH.saturating_sub(self.rx.len())
    }

    /// A byte arrives from the console. False when the FIFO was full: the
    /// byte is lost and an overrun is flagged, as the hardware does.
    pub fn push_rx(&mut self, byte: u8) -> bool {
        if self.rx.len() >= RX_FIFO_DEPTH {
            self.rsr |= RSR_OE;
            self.latched |= INT_OE;
            return false;
        }
        self.rx.push_back(byte);
        true
    }

    /// Console input with flow control: into the FIFO when it has room and
    /// nothing waits before it, else into the backlog (up to
    /// [`RX_BACKLOG_MAX`] bytes), which refills the FIFO as the guest reads.
    /// False only when the backlog is full too: then the byte is lost with
    /// an overrun, as [`Pl011::push_rx`] does.
    pub fn queue_rx(&mut self, byte: u8) -> bool {
        if self.backlog.is_empty() && self.rx.len() < RX_FIFO_DEPTH {
            self.rx.push_back(byte);
            true
        } else if self.backlog.len() < RX_BACKLOG_MAX {
            self.backlog.push_back(byte);
            true
        } else {
            self.push_rx(byte)
        }
    }

    /// Bytes held in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// A guest read of `size` bytes at `offset`.
    pub fn read(&mut self, offset: u64, size: u8) -> Result<u32, Pl011Error> {
        let mask = check(offset, size)?;
        let v = match offset {
            DR => {
                let v = self.rx.pop_front().map_or(0, u32::from);
                if self.rx.len() < RX_FIFO_DEPTH
                    && let Some(b) = self.backlog.pop_front()
                {
                    self.rx.push_back(b);
                }
                v
            }
            RSR_ECR => self.rsr,
            FR => self.fr(),
            ILPR => self.ilpr,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            RIS => self.ris(),
            MIS => self.mis(),
            DMACR => self.dmacr,
            PERIPH_ID0..FRAME_SIZE => {
                let i = usize::try_from((offset - PERIPH_ID0) / 4).unwrap_or(usize::MAX);
                ID_REGS.get(i).copied().map_or(0, u32::from)
            }
            // ICR is write-only; reserved and test registers read as zero.
            _ => 0,
        };
        Ok(v & mask)
    }

    /// A guest write of `size` bytes at `offset`; transmitted bytes go to
    /// `out`. A narrow write sets the whole register, zero-extended.
    pub fn write(
        &mut self,
        offset: u64,
        size: u8,
        value: u32,
        out: &mut dyn FnMut(u8),
    ) -> Result<(), Pl011Error> {
        let v = value & check(offset, size)?;
        match offset {
            DR => out(v as u8),
            RSR_ECR => self.rsr = 0,
            ILPR => self.ilpr = v & ILPR_MASK,
            IBRD => self.ibrd = v & IBRD_MASK,
            FBRD => self.fbrd = v & FBRD_MASK,
            LCR_H => self.lcr_h = v & LCR_H_MASK,
            CR => self.cr = v & CR_MASK,
            IFLS => self.ifls = v & IFLS_MASK,
            IMSC => self.imsc = v & INT_ALL,
            ICR => self.latched &= !v,
            DMACR => self.dmacr = v & DMACR_MASK,
            // FR, RIS, MIS and the ID registers are read-only; the rest
            // is reserved.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn rd(u: &mut Pl011, off: u64) -> u32 {
        u.read(off, 4).unwrap()
    }

    fn wr(u: &mut Pl011, off: u64, v: u32) -> Vec<u8> {
        let mut sent = Vec::new();
        u.write(off, 4, v, &mut |b| sent.push(b)).unwrap();
        sent
    }

    fn wr16(u: &mut Pl011, off: u64, v: u32) {
        u.write(off, 2, v, &mut |_| panic!("no byte expected"))
            .unwrap();
    }

    #[test]
    fn reset_values() {
        let mut u = Pl011::new();
        assert_eq!(rd(&mut u, FR), FR_TXFE | FR_RXFE);
        assert_eq!(rd(&mut u, CR), 0x300);
        assert_eq!(rd(&mut u, IFLS), 0x12);
        assert_eq!(rd(&mut u, IMSC), 0);
        assert_eq!(rd(&mut u, RIS), INT_TX);
        assert_eq!(rd(&mut u, MIS), 0);
        assert_eq!(rd(&mut u, DR), 0);
        assert!(!u.irq_level());
    }

    #[test]
    fn primecell_ids() {
        let mut u = Pl011::new();
        let ids: Vec<u32> = (0..8).map(|i| rd(&mut u, 0xfe0 + 4 * i)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        // The way the AMBA bus assembles them.
        let periph = (0..4).fold(0, |acc, i| acc | (ids[i] << (8 * i)));
        let cell = (0..4).fold(0, |acc, i| acc | (ids[4 + i] << (8 * i)));
        assert_eq!(periph, 0x0034_1011);
        assert_eq!(cell, 0xb105_f00d);
        // Narrow reads see the same bytes.
        assert_eq!(u.read(0xfe0, 1), Ok(0x11));
        assert_eq!(u.read(0xffc, 2), Ok(0xb1));
        // The ID registers are read-only.
        wr(&mut u, 0xfe0, 0xff);
        assert_eq!(rd(&mut u, 0xfe0), 0x11);
    }

    #[test]
    fn transmit_is_immediate() {
        let mut u = Pl011::new();
        // Before any setup (earlycon or a boot stub), the byte still goes.
        wr(&mut u, CR, 0);
        assert_eq!(wr(&mut u, DR, u32::from(b'h')), b"h");
        // Only the low 8 bits are data.
        assert_eq!(wr(&mut u, DR, 0xf00 | u32::from(b'i')), b"i");
        let mut sent = Vec::new();
        u.write(DR, 1, u32::from(b'!'), &mut |b| sent.push(b))
            .unwrap();
        u.write(DR, 2, 0x4100 | u32::from(b'?'), &mut |b| sent.push(b))
            .unwrap();
        assert_eq!(sent, b"!?");
        let fr = rd(&mut u, FR);
        assert_ne!(fr & FR_TXFE, 0);
        assert_eq!(fr & (FR_TXFF | FR_BUSY), 0);
    }

    #[test]
    fn linux_driver_sequence() {
        let mut u = Pl011::new();
        // Probe: the AMBA bus reads the IDs.
        assert_eq!(rd(&mut u, 0xfe0) & 0xff, 0x11);
        assert_eq!(rd(&mut u, 0xfe8) & 0xff, 0x34);
        // Hardware init: clear errors and interrupts, mask everything.
        wr16(&mut u, RSR_ECR, 0);
        wr16(&mut u, ICR, INT_ALL);
        wr16(&mut u, IMSC, 0);
        // startup: FIFO levels, enable.
        wr16(&mut u, IFLS, 0x12);
        wr16(&mut u, CR, CR_UARTEN | CR_TXE | CR_RXE);
        // set_termios: 115200 8N1 with FIFOs off a 24 MHz clock.
        wr16(&mut u, IBRD, 13);
        wr16(&mut u, FBRD, 1);
        wr16(&mut u, LCR_H, 0x70);
        assert_eq!(u.read(IBRD, 2), Ok(13));
        assert_eq!(u.read(FBRD, 2), Ok(1));
        assert_eq!(u.read(LCR_H, 2), Ok(0x70));
        assert_eq!(u.read(CR, 2), Ok(0x301));
        // Drain stale input until RXFE, then unmask RX and RT.
        assert_ne!(u.read(FR, 2).unwrap() & FR_RXFE, 0);
        wr16(&mut u, ICR, INT_RX | INT_RT);
        wr16(&mut u, IMSC, INT_RX | INT_RT);
        assert!(!u.irq_level(), "nothing received yet");

        // Bytes arrive from the console.
        for b in b"ls\n" {
            assert!(u.push_rx(*b));
        }
        assert!(u.irq_level());
        assert_eq!(u.read(MIS, 2), Ok(INT_RX | INT_RT));
        assert_eq!(u.read(FR, 2).unwrap() & FR_RXFE, 0);
        // The handler reads DR until RXFE.
        let mut got = Vec::new();
        while u.read(FR, 2).unwrap() & FR_RXFE == 0 {
            got.push(u.read(DR, 2).unwrap() as u8);
        }
        assert_eq!(got, b"ls\n");
        wr16(&mut u, ICR, INT_RX | INT_RT);
        assert!(!u.irq_level());
        assert_eq!(u.read(MIS, 2), Ok(0));

        // Transmit: start_tx unmasks TX; the line stays up while unmasked.
        wr16(&mut u, IMSC, INT_RX | INT_RT | INT_TX);
        assert!(u.irq_level());
        assert_eq!(u.read(MIS, 2), Ok(INT_TX));
        // ICR cannot clear a condition that still holds.
        wr16(&mut u, ICR, INT_TX);
        assert!(u.irq_level());
        let mut sent = Vec::new();
        for b in b"ok" {
            u.write(DR, 2, u32::from(*b), &mut |x| sent.push(x))
                .unwrap();
        }
        assert_eq!(sent, b"ok");
        // stop_tx masks TX when the buffer is empty.
        wr16(&mut u, IMSC, INT_RX | INT_RT);
        assert!(!u.irq_level());
    }

    #[test]
    fn rx_stays_asserted_despite_icr() {
        let mut u = Pl011::new();
        wr(&mut u, IMSC, INT_RX);
        u.push_rx(b'a');
        wr(&mut u, ICR, INT_ALL);
        assert!(u.irq_level());
        assert_eq!(rd(&mut u, DR), u32::from(b'a'));
        assert!(!u.irq_level());
        // Only RT unmasked fires too.
        wr(&mut u, IMSC, INT_RT);
        u.push_rx(b'b');
        assert_eq!(rd(&mut u, MIS), INT_RT);
    }

    #[test]
    fn queued_input_waits_for_room_instead_of_overrunning() {
        let mut u = Pl011::new();
        let line: Vec<u8> = (0..200u32).map(|i| (i % 251) as u8).collect();
        for &b in &line {
            assert!(u.queue_rx(b));
        }
        assert_eq!(u.rx_len(), RX_FIFO_DEPTH);
        assert_eq!(u.backlog_len(), 200 - RX_FIFO_DEPTH);
        assert_eq!(rd(&mut u, RIS) & INT_OE, 0, "no overrun");
        let mut got = Vec::new();
        while rd(&mut u, FR) & FR_RXFE == 0 {
            got.push(rd(&mut u, DR) as u8);
        }
        assert_eq!(got, line, "every byte, in order");
        assert_eq!(u.backlog_len(), 0);
        // Beyond the backlog the byte is lost with an overrun.
        for i in 0..RX_FIFO_DEPTH + RX_BACKLOG_MAX {
            assert!(u.queue_rx(i as u8));
        }
        assert!(!u.queue_rx(0));
        assert_ne!(rd(&mut u, RIS) & INT_OE, 0);
        // Reset drops it all.
        u.reset();
        assert_eq!((u.rx_len(), u.backlog_len()), (0, 0));
    }

    #[test]
    fn fifo_full_and_overrun() {
        let mut u = Pl011::new();
        for i in 0..RX_FIFO_DEPTH {
            assert_eq!(u.rx_free(), RX_FIFO_DEPTH - i);
            assert!(u.push_rx(i as u8));
        }
        assert_eq!(u.rx_len(), RX_FIFO_DEPTH);
        assert_eq!(u.rx_free(), 0);
        assert_ne!(rd(&mut u, FR) & FR_RXFF, 0);
        assert_eq!(rd(&mut u, RIS) & INT_OE, 0);
        assert!(!u.push_rx(0xee));
        assert_eq!(u.rx_len(), RX_FIFO_DEPTH);
        assert_ne!(rd(&mut u, RIS) & INT_OE, 0);
        assert_eq!(rd(&mut u, RSR_ECR), RSR_OE);

        // Overrun alone raises the line when unmasked, until cleared.
        wr(&mut u, IMSC, INT_OE);
        assert!(u.irq_level());
        // Draining the FIFO does not clear the latch.
        for i in 0..RX_FIFO_DEPTH {
            assert_eq!(rd(&mut u, DR), i as u32);
        }
        assert_ne!(rd(&mut u, FR) & FR_RXFE, 0);
        assert!(u.irq_level());
        wr(&mut u, ICR, INT_RX);
        assert!(u.irq_level(), "clearing another bit leaves OE");
        wr(&mut u, ICR, INT_OE);
        assert!(!u.irq_level());
        // The error register is cleared by any ECR write.
        assert_eq!(rd(&mut u, RSR_ECR), RSR_OE);
        wr(&mut u, RSR_ECR, 0);
        assert_eq!(rd(&mut u, RSR_ECR), 0);
        assert!(u.push_rx(1));
    }

    #[test]
    fn registers_masked_to_width() {
        let mut u = Pl011::new();
        let cases = [
            (ILPR, 0xff),
            (IBRD, 0xffff),
            (FBRD, 0x3f),
            (LCR_H, 0xff),
            (CR, 0xffff),
            (IFLS, 0x3f),
            (IMSC, 0x7ff),
            (DMACR, 0x7),
        ];
        for (off, mask) in cases {
            wr(&mut u, off, u32::MAX);
            assert_eq!(rd(&mut u, off), mask, "{off:#x}");
            wr(&mut u, off, 0);
            assert_eq!(rd(&mut u, off), 0, "{off:#x}");
        }
    }

    #[test]
    fn narrow_accesses() {
        let mut u = Pl011::new();
        wr(&mut u, IBRD, 0x1234);
        assert_eq!(u.read(IBRD, 1), Ok(0x34));
        assert_eq!(u.read(IBRD, 2), Ok(0x1234));
        // A narrow write carries only its own bits.
        u.write(IBRD, 1, 0xabcd, &mut |_| {}).unwrap();
        assert_eq!(rd(&mut u, IBRD), 0xcd);
    }

    #[test]
    fn read_only_and_write_only() {
        let mut u = Pl011::new();
        for off in [FR, RIS, MIS] {
            let before = rd(&mut u, off);
            wr(&mut u, off, u32::MAX);
            assert_eq!(rd(&mut u, off), before, "{off:#x}");
        }
        wr(&mut u, ICR, INT_ALL);
        assert_eq!(rd(&mut u, ICR), 0);
    }

    #[test]
    fn unknown_offsets_raz_wi() {
        let mut u = Pl011::new();
        for off in [0x008, 0x00c, 0x014, 0x01c, 0x04c, 0x080, 0xf00, 0xfdc] {
            assert!(wr(&mut u, off, u32::MAX).is_empty());
            assert_eq!(rd(&mut u, off), 0, "{off:#x}");
        }
        // Nothing else moved.
        assert_eq!(rd(&mut u, CR), 0x300);
        assert_eq!(rd(&mut u, IMSC), 0);
    }

    #[test]
    fn bad_accesses_refused() {
        let mut u = Pl011::new();
        let out: &mut dyn FnMut(u8) = &mut |_| panic!("no byte expected");
        for size in [0, 3, 5, 8, 16, 255] {
            assert_eq!(u.read(DR, size), Err(Pl011Error::BadSize(size)));
            assert_eq!(u.write(DR, size, 0x41, out), Err(Pl011Error::BadSize(size)));
        }
        for off in [1, 2, 3, 0x19, 0xffd, 0xfff] {
            assert_eq!(u.read(off, 1), Err(Pl011Error::Unaligned(off)));
            assert_eq!(u.write(off, 4, 0, out), Err(Pl011Error::Unaligned(off)));
        }
        for off in [0x1000, 0x1004, u64::MAX, u64::MAX - 3] {
            assert_eq!(u.read(off, 4), Err(Pl011Error::OutOfRange(off)));
            assert_eq!(u.write(off, 4, 0, out), Err(Pl011Error::OutOfRange(off)));
        }
        // A refused read does not consume input.
        u.push_rx(7);
        assert!(u.read(DR, 8).is_err());
        assert_eq!(u.rx_len(), 1);
        assert!(!Pl011Error::BadSize(8).to_string().is_empty());
        assert!(!Pl011Error::Unaligned(1).to_string().is_empty());
        assert!(!Pl011Error::OutOfRange(0x1000).to_string().is_empty());
    }

    #[test]
    fn reset_clears_everything() {
        let mut u = Pl011::new();
        wr(&mut u, IMSC, INT_ALL);
        wr(&mut u, CR, 0x301);
        wr(&mut u, IBRD, 13);
        for i in 0..40 {
            u.push_rx(i);
        }
        assert!(u.irq_level());
        u.reset();
        assert_eq!(u.rx_len(), 0);
        assert_eq!(rd(&mut u, CR), 0x300);
        assert_eq!(rd(&mut u, IBRD), 0);
        assert_eq!(rd(&mut u, RIS), INT_TX);
        assert_eq!(rd(&mut u, RSR_ECR), 0);
        assert!(!u.irq_level());
        assert_eq!(
            format!("{:?}", Pl011::default()),
            format!("{:?}", Pl011::new())
        );
    }

    #[test]
    fn hostile_access_sweep_never_panics() {
        let mut u = Pl011::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = if x & 1 == 0 { x >> 52 } else { x >> 8 };
            let size = (x >> 4) as u8 & 7;
            if x & 2 == 0 {
                let _ = u.read(off, size);
            } else {
                let _ = u.write(off, size, (x >> 16) as u32, &mut |_| {});
            }
            if x & 0x30 == 0 {
                u.push_rx(x as u8);
            }
            assert!(u.rx_len() <= RX_FIFO_DEPTH);
        }
    }
}
