//! What the two sides keep in the shared pages.
//!
//! Both pages are granted by the server (`serve`) to the client's domain.
//! Each starts with a 64-byte header; the rest (the body) holds a pattern
//! derived from the client's domain id and the page's role, so a mapping
//! of the wrong frame, of a zeroed page or of the other grant shows.
//!
//! Header words (little-endian u32):
//!
//! | offset | word         | written by                                   |
//! |--------|--------------|----------------------------------------------|
//! | 0      | magic        | server: [`MAGIC`]                            |
//! | 4      | kind         | server: [`KIND_RW`] / [`KIND_RO`]            |
//! | 8      | granted_to   | server: the client's domain id               |
//! | 16     | hello        | client: [`HELLO`] once its body is written   |
//! | 20     | ping         | client: sequence number of its last ping     |
//! | 24     | pong         | server: the last ping it answered            |
//! | 28     | done         | client: [`DONE`] when it is finished         |
//! | 32     | total        | client: pings sent, before `done`            |
//!
//! The ping-pong: the client stores `ping = n` and notifies; the server,
//! on every event, reads `ping` and, when it differs from the last one it
//! answered, stores `pong = ping` and notifies back. Both sides re-enable
//! (unmask) the port before reading the page, and treat an event that
//! brings nothing new as spurious, so the extra event Xen raises when the
//! client binds (EVTCHNOP_bind_interdomain marks the new local port
//! pending) and a hypervisor that raises none both work.

use core::sync::atomic::{AtomicU32, Ordering};

/// Page size of the grants.
pub const PAGE: usize = 4096;
/// Header bytes before the pattern body.
pub const HEADER: usize = 64;

/// Header magic, "XT01".
pub const MAGIC: u32 = u32::from_le_bytes(*b"XT01");
/// The client has written its body and starts pinging.
pub const HELLO: u32 = u32::from_le_bytes(*b"HELO");
/// The client is finished; `total` is valid.
pub const DONE: u32 = u32::from_le_bytes(*b"DONE");

/// Role of the writable page, as the server filled it.
pub const KIND_RW: u32 = 1;
/// Role of the read-only page.
pub const KIND_RO: u32 = 2;
/// The body the client writes back into the writable page.
pub const KIND_CLIENT: u32 = 3;

/// Byte offsets of the header words.
pub mod off {
    /// Magic.
    pub const MAGIC: usize = 0;
    /// Kind.
    pub const KIND: usize = 4;
    /// Client domain id.
    pub const GRANTED_TO: usize = 8;
    /// Client hello.
    pub const HELLO: usize = 16;
    /// Client ping sequence.
    pub const PING: usize = 20;
    /// Server pong sequence.
    pub const PONG: usize = 24;
    /// Client done.
    pub const DONE: usize = 28;
    /// Pings sent by the client.
    pub const TOTAL: usize = 32;
}

/// Byte `i` (HEADER..PAGE) of the body of a page of `kind` granted to
/// `domid`.
pub fn pattern_byte(domid: u16, kind: u32, i: usize) -> u8 {
    let x = (i as u32).wrapping_mul(0x9e37_79b1)
        ^ u32::from(domid).wrapping_mul(0x85eb_ca6b)
        ^ kind.wrapping_mul(0xc2b2_ae35);
    (x ^ (x >> 15) ^ (x >> 24)) as u8
}

/// A page shared with another domain: every access is volatile or atomic,
/// since the other side may write it at any time.
#[derive(Clone, Copy, Debug)]
pub struct SharedPage {
    base: *mut u8,
}

impl SharedPage {
    /// The page at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be 4-byte aligned and point to [`PAGE`] bytes that stay
    /// mapped (readable; writable if anything is stored) while the value
    /// and its copies are used.
    pub unsafe fn new(base: *mut u8) -> Self {
        Self { base }
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= HEADER);
        // SAFETY: in bounds and aligned (checked above, base is aligned
        // per `new`); AtomicU32 has the layout of u32 and tolerates
        // concurrent access from the other domain.
        unsafe { &*self.base.add(off).cast::<AtomicU32>() }
    }

    /// Reads a header word.
    pub fn load(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::SeqCst)
    }

    /// Writes a header word.
    pub fn store(&self, off: usize, v: u32) {
        self.word(off).store(v, Ordering::SeqCst)
    }

    /// Reads byte `i`.
    pub fn byte(&self, i: usize) -> u8 {
        assert!(i < PAGE);
        // SAFETY: in bounds of the mapped page (`new`).
        unsafe { self.base.add(i).read_volatile() }
    }

    /// Writes byte `i`.
    pub fn set_byte(&self, i: usize, v: u8) {
        assert!(i < PAGE);
        // SAFETY: in bounds of the mapped page, writable per `new`.
        unsafe { self.base.add(i).write_volatile(v) }
    }

    /// Writes the body of a page of `kind` for `domid`.
    pub fn fill_body(&self, domid: u16, kind: u32) {
        for i in HEADER..PAGE {
            self.set_byte(i, pattern_byte(domid, kind, i));
        }
    }

    /// Checks the body against `kind` for `domid`: the first difference.
    pub fn check_body(&self, domid: u16, kind: u32) -> Result<(), String> {
        for i in HEADER..PAGE {
            let (got, want) = (self.byte(i), pattern_byte(domid, kind, i));
            if got != want {
                return Err(format!(
                    "byte {i:#x} is {got:#04x}, want {want:#04x} (kind {kind}, domid {domid})"
                ));
            }
        }
        Ok(())
    }

    /// The server's initial page: body first, then the header (control
    /// words zero).
    pub fn init_server(&self, granted_to: u16, kind: u32) {
        self.fill_body(granted_to, kind);
        for off in (0..HEADER).step_by(4) {
            self.store(off, 0);
        }
        self.store(off::KIND, kind);
        self.store(off::GRANTED_TO, u32::from(granted_to));
        self.store(off::MAGIC, MAGIC);
    }

    /// Checks a page as the server initialised it: the client's domain id
    /// it names.
    pub fn check_server(&self, kind: u32) -> Result<u16, String> {
        let magic = self.load(off::MAGIC);
        if magic != MAGIC {
            return Err(format!("magic is {magic:#010x}, want {MAGIC:#010x}"));
        }
        let k = self.load(off::KIND);
        if k != kind {
            return Err(format!("page kind is {k}, want {kind}"));
        }
        let to = self.load(off::GRANTED_TO);
        let to = u16::try_from(to)
            .ok()
            .filter(|&d| u32::from(d) < crate::xen::DOMID_FIRST_RESERVED)
            .ok_or_else(|| format!("granted_to {to:#x} is no domain id"))?;
        self.check_body(to, kind)?;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Vec<u64> {
        vec![0u64; PAGE / 8]
    }

    #[test]
    fn patterns_differ_by_domain_and_kind() {
        let body = |d, k| -> Vec<u8> { (HEADER..PAGE).map(|i| pattern_byte(d, k, i)).collect() };
        assert_ne!(body(1, KIND_RW), body(2, KIND_RW));
        assert_ne!(body(1, KIND_RW), body(1, KIND_RO));
        assert_ne!(body(1, KIND_RW), body(1, KIND_CLIENT));
        // Not constant, and not the zero page.
        let b = body(1, KIND_RW);
        assert!(b.iter().any(|&x| x != b[0]));
        let zeros = b.iter().filter(|&&x| x == 0).count();
        assert!(zeros < 100, "{zeros} zero bytes");
    }

    #[test]
    fn server_page_round_trip() {
        let mut mem = page();
        // SAFETY: `mem` is an 8-aligned, PAGE-byte buffer that outlives `p`.
        let p = unsafe { SharedPage::new(mem.as_mut_ptr().cast()) };
        assert!(p.check_server(KIND_RW).unwrap_err().contains("magic"));
        p.init_server(2, KIND_RW);
        assert_eq!(p.check_server(KIND_RW), Ok(2));
        assert!(p.check_server(KIND_RO).unwrap_err().contains("kind"));
        assert_eq!(p.load(off::PING), 0);

        p.fill_body(2, KIND_CLIENT);
        assert_eq!(p.check_body(2, KIND_CLIENT), Ok(()));
        assert!(p.check_server(KIND_RW).unwrap_err().contains("byte 0x40"));

        p.set_byte(PAGE - 1, !pattern_byte(2, KIND_CLIENT, PAGE - 1));
        assert!(p.check_body(2, KIND_CLIENT).unwrap_err().contains("0xfff"));

        p.store(off::GRANTED_TO, 0x7ff0);
        p.store(off::KIND, KIND_RO);
        assert!(
            p.check_server(KIND_RO)
                .unwrap_err()
                .contains("no domain id")
        );
    }
}
