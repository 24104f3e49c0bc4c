//! Linux's user ABI of the Xen device nodes (include/uapi/xen/evtchn.h,
//! gntalloc.h, gntdev.h, privcmd.h of Linux 6.1): ioctl numbers and the
//! structures they take, laid out as the C compiler lays them out on
//! arm64 (and x86_64, which agrees for all of these).
//!
//! Every ioctl here is `_IOC(_IOC_NONE, type, nr, size)`: direction 0, so
//! the number is `size << 16 | type << 8 | nr` with the generic encoding
//! arm64 uses (`_IOC_SIZESHIFT` 16, `_IOC_TYPESHIFT` 8, `_IOC_NRSHIFT` 0).

use core::mem::size_of;

/// `_IOC(_IOC_NONE, ty, nr, size)` with the generic (arm64, x86) encoding.
pub const fn ioc_none(ty: u8, nr: u8, size: usize) -> u32 {
    ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}

// ---- /dev/xen/evtchn (drivers/xen/evtchn.c) ----

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindInterdomain {
    /// Domain that allocated the unbound port.
    pub remote_domain: u32,
    /// Its port.
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindUnboundPort {
    /// Domain allowed to bind the new port.
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_notify` (also the layout of `unbind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnPort {
    /// Local port.
    pub port: u32,
}

/// Binds a fresh local port to a remote domain's unbound port; the ioctl
/// returns the local port.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u32 =
    ioc_none(b'E', 1, size_of::<EvtchnBindInterdomain>());
/// Allocates an unbound port a remote domain may bind; returns the port.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u32 =
    ioc_none(b'E', 2, size_of::<EvtchnBindUnboundPort>());
/// Unbinds a port of this file.
pub const IOCTL_EVTCHN_UNBIND: u32 = ioc_none(b'E', 3, size_of::<EvtchnPort>());
/// Sends an event on a port of this file (EVTCHNOP_send); ENOTCONN for a
/// port the file has not bound.
pub const IOCTL_EVTCHN_NOTIFY: u32 = ioc_none(b'E', 4, size_of::<EvtchnPort>());

// ---- /dev/xen/gntalloc (drivers/xen/gntalloc.c) ----

/// `struct ioctl_gntalloc_alloc_gref` for one page (the C struct ends with
/// a one-element array `gref_ids[1]`, which is what its size counts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntallocAllocGref {
    /// IN: domain the grant is for.
    pub domid: u16,
    /// IN: [`GNTALLOC_FLAG_WRITABLE`] or 0 (read-only grant).
    pub flags: u16,
    /// IN: pages.
    pub count: u32,
    /// OUT: mmap offset of the pages.
    pub index: u64,
    /// OUT: the grant reference(s), `count` of them.
    pub gref_ids: [u32; 1],
}

/// `struct ioctl_gntalloc_dealloc_gref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntallocDeallocGref {
    /// The offset [`IOCTL_GNTALLOC_ALLOC_GREF`] returned.
    pub index: u64,
    /// Pages.
    pub count: u32,
}

/// The peer may map the page writable.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;
/// Allocates zeroed pages and grants them to a domain.
pub const IOCTL_GNTALLOC_ALLOC_GREF: u32 = ioc_none(b'G', 5, size_of::<GntallocAllocGref>());
/// Ends the grants (deferred by the kernel while the peer still maps them).
pub const IOCTL_GNTALLOC_DEALLOC_GREF: u32 = ioc_none(b'G', 6, size_of::<GntallocDeallocGref>());

// ---- /dev/xen/gntdev (drivers/xen/gntdev.c) ----

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntdevGrantRef {
    /// Granting domain.
    pub domid: u32,
    /// Its grant reference.
    pub gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` for one grant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntdevMapGrantRef {
    /// IN: grants in `refs`.
    pub count: u32,
    /// Padding.
    pub pad: u32,
    /// OUT: mmap offset (bytes).
    pub index: u64,
    /// IN: the grants.
    pub refs: [GntdevGrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntdevUnmapGrantRef {
    /// The offset the map ioctl returned.
    pub index: u64,
    /// Pages.
    pub count: u32,
    /// Padding.
    pub pad: u32,
}

/// One side of a `struct gntdev_grant_copy_segment`: the union of a user
/// pointer (`void __user *virt`) and `{ grant_ref_t ref; __u16 offset;
/// domid_t domid; }`, both 8 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub union GntdevCopyPtr {
    /// A local buffer.
    pub virt: u64,
    /// A grant of another domain.
    pub foreign: GntdevCopyForeign,
}

/// The `foreign` member of [`GntdevCopyPtr`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntdevCopyForeign {
    /// Grant reference.
    pub gref: u32,
    /// Offset in the granted page.
    pub offset: u16,
    /// Granting domain.
    pub domid: u16,
}

/// `struct gntdev_grant_copy_segment`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GntdevGrantCopySegment {
    /// Source.
    pub source: GntdevCopyPtr,
    /// Destination.
    pub dest: GntdevCopyPtr,
    /// Bytes (the foreign side must not cross its page).
    pub len: u16,
    /// `GNTCOPY_source_gref` / `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// OUT: GNTST_* of the segment.
    pub status: i16,
}

/// `struct ioctl_gntdev_grant_copy`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GntdevGrantCopy {
    /// Segments.
    pub count: u32,
    /// `struct gntdev_grant_copy_segment __user *segments`.
    pub segments: u64,
}

/// Records grants to map; the mapping itself happens at mmap() of the
/// returned offset (and on auto-translated guests such as arm64, that is
/// where GNTTABOP_map_grant_ref is issued and where its errors surface).
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u32 = ioc_none(b'G', 0, size_of::<GntdevMapGrantRef>());
/// Forgets grants (after munmap); the grant unmap happens then.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u32 = ioc_none(b'G', 1, size_of::<GntdevUnmapGrantRef>());
/// Copies between grants and local buffers (GNTTABOP_copy).
pub const IOCTL_GNTDEV_GRANT_COPY: u32 = ioc_none(b'G', 8, size_of::<GntdevGrantCopy>());

// ---- /dev/xen/privcmd (drivers/xen/privcmd.c) ----

/// `struct privcmd_hypercall`: the kernel issues `hvc #0xEA1` with `op` in
/// x16 and `arg` in x0..x4 as they are (pointers stay user addresses) and
/// returns x0 (negative: -1 and errno).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivcmdHypercall {
    /// Hypercall number.
    pub op: u64,
    /// Arguments.
    pub arg: [u64; 5],
}

/// Any hypercall (refused with EPERM when the module restricts the file to
/// a target domain: load it with `unrestricted=1` in a domU).
pub const IOCTL_PRIVCMD_HYPERCALL: u32 = ioc_none(b'P', 0, size_of::<PrivcmdHypercall>());
/// An ioctl number privcmd does not know: answers ENOTTY without reaching
/// the hypervisor (the baseline of the hypercall benchmark).
pub const IOCTL_PRIVCMD_UNKNOWN: u32 = ioc_none(b'P', 0xff, 0);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of};

    #[test]
    fn ioctl_numbers_match_linux() {
        // Worked out by hand from the headers: size << 16 | type << 8 | nr.
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
        assert_eq!(IOCTL_EVTCHN_UNBIND, 0x0004_4503);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
        assert_eq!(IOCTL_GNTALLOC_DEALLOC_GREF, 0x0010_4706);
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x0010_4701);
        assert_eq!(IOCTL_GNTDEV_GRANT_COPY, 0x0010_4708);
        assert_eq!(IOCTL_PRIVCMD_HYPERCALL, 0x0030_5000);
        assert_eq!(IOCTL_PRIVCMD_UNKNOWN, 0x0000_50ff);
    }

    #[test]
    fn layouts_match_linux() {
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 8);
        assert_eq!(size_of::<EvtchnBindUnboundPort>(), 4);
        assert_eq!(size_of::<EvtchnPort>(), 4);

        assert_eq!(size_of::<GntallocAllocGref>(), 24);
        assert_eq!(offset_of!(GntallocAllocGref, flags), 2);
        assert_eq!(offset_of!(GntallocAllocGref, count), 4);
        assert_eq!(offset_of!(GntallocAllocGref, index), 8);
        assert_eq!(offset_of!(GntallocAllocGref, gref_ids), 16);
        assert_eq!(size_of::<GntallocDeallocGref>(), 16);

        assert_eq!(size_of::<GntdevGrantRef>(), 8);
        assert_eq!(size_of::<GntdevMapGrantRef>(), 24);
        assert_eq!(offset_of!(GntdevMapGrantRef, index), 8);
        assert_eq!(offset_of!(GntdevMapGrantRef, refs), 16);
        assert_eq!(size_of::<GntdevUnmapGrantRef>(), 16);

        assert_eq!(size_of::<GntdevCopyPtr>(), 8);
        assert_eq!(align_of::<GntdevCopyPtr>(), 8);
        assert_eq!(offset_of!(GntdevCopyForeign, offset), 4);
        assert_eq!(offset_of!(GntdevCopyForeign, domid), 6);
        assert_eq!(size_of::<GntdevGrantCopySegment>(), 24);
        assert_eq!(offset_of!(GntdevGrantCopySegment, dest), 8);
        assert_eq!(offset_of!(GntdevGrantCopySegment, len), 16);
        assert_eq!(offset_of!(GntdevGrantCopySegment, flags), 18);
        assert_eq!(offset_of!(GntdevGrantCopySegment, status), 20);
        assert_eq!(size_of::<GntdevGrantCopy>(), 16);
        assert_eq!(offset_of!(GntdevGrantCopy, segments), 8);

        assert_eq!(size_of::<PrivcmdHypercall>(), 48);
    }
}
