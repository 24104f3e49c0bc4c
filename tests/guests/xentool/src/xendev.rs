//! Linux's Xen device nodes: /dev/xen/evtchn, gntalloc, gntdev, privcmd.

use crate::sys::{Dev, Mapping, SysErr};
use crate::uapi::*;
use crate::xen::{self, EvtchnSend, EvtchnStatus, GnttabMapGrantRef, GnttabUnmapGrantRef};

/// `/dev/xen/evtchn` (xen-evtchn.ko).
pub const EVTCHN: &str = "/dev/xen/evtchn";
/// `/dev/xen/gntalloc` (xen-gntalloc.ko).
pub const GNTALLOC: &str = "/dev/xen/gntalloc";
/// `/dev/xen/gntdev` (xen-gntdev.ko).
pub const GNTDEV: &str = "/dev/xen/gntdev";
/// `/dev/xen/privcmd` (xen-privcmd.ko).
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// An event-channel file: the ports bound through it deliver their events
/// to it.
#[derive(Debug)]
pub struct Evtchn {
    dev: Dev,
}

impl Evtchn {
    /// Opens /dev/xen/evtchn.
    pub fn open() -> Result<Self, SysErr> {
        Ok(Self {
            dev: Dev::open(EVTCHN)?,
        })
    }

    /// EVTCHNOP_alloc_unbound for `remote`, bound to this file: the port.
    pub fn bind_unbound(&self, remote: u16) -> Result<u32, SysErr> {
        let mut a = EvtchnBindUnboundPort {
            remote_domain: remote.into(),
        };
        // SAFETY: the request takes this structure.
        let port = unsafe {
            self.dev
                .ioctl(IOCTL_EVTCHN_BIND_UNBOUND_PORT, "BIND_UNBOUND_PORT", &mut a)
        }?;
        Ok(port as u32)
    }

    /// EVTCHNOP_bind_interdomain to `remote`'s `port`: the local port.
    pub fn bind_interdomain(&self, remote: u16, port: u32) -> Result<u32, SysErr> {
        let mut a = EvtchnBindInterdomain {
            remote_domain: remote.into(),
            remote_port: port,
        };
        // SAFETY: the request takes this structure.
        let port = unsafe {
            self.dev
                .ioctl(IOCTL_EVTCHN_BIND_INTERDOMAIN, "BIND_INTERDOMAIN", &mut a)
        }?;
        Ok(port as u32)
    }

    /// EVTCHNOP_send on a port of this file.
    pub fn notify(&self, port: u32) -> Result<(), SysErr> {
        let mut a = EvtchnPort { port };
        // SAFETY: the request takes this structure.
        unsafe { self.dev.ioctl(IOCTL_EVTCHN_NOTIFY, "NOTIFY", &mut a) }?;
        Ok(())
    }

    /// Unbinds (EVTCHNOP_close) a port of this file.
    pub fn unbind(&self, port: u32) -> Result<(), SysErr> {
        let mut a = EvtchnPort { port };
        // SAFETY: the request takes this structure.
        unsafe { self.dev.ioctl(IOCTL_EVTCHN_UNBIND, "UNBIND", &mut a) }?;
        Ok(())
    }

    /// Waits up to `timeout_ms` for events: the ports that fired (each
    /// already re-enabled by writing it back, the file's "unmask"), or
    /// `None` on timeout.
    pub fn wait(&self, timeout_ms: i32) -> Result<Option<Vec<u32>>, SysErr> {
        if !self.dev.wait_readable(timeout_ms)? {
            return Ok(None);
        }
        let mut buf = [0u8; 64];
        let n = self.dev.read(&mut buf)?;
        let ports: Vec<u32> = buf[..n - n % 4]
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if !ports.is_empty() {
            self.dev.write(&buf[..ports.len() * 4])?;
        }
        Ok(Some(ports))
    }
}

/// `/dev/xen/gntalloc`: pages of this domain granted to another.
#[derive(Debug)]
pub struct Gntalloc {
    dev: Dev,
}

impl Gntalloc {
    /// Opens /dev/xen/gntalloc.
    pub fn open() -> Result<Self, SysErr> {
        Ok(Self {
            dev: Dev::open(GNTALLOC)?,
        })
    }

    /// Allocates one zeroed page granted to `peer`: (mmap offset, grant
    /// reference).
    pub fn alloc(&self, peer: u16, writable: bool) -> Result<(u64, u32), SysErr> {
        let mut a = GntallocAllocGref {
            domid: peer,
            flags: if writable { GNTALLOC_FLAG_WRITABLE } else { 0 },
            count: 1,
            ..Default::default()
        };
        // SAFETY: the request takes this structure, sized for one grant.
        unsafe {
            self.dev
                .ioctl(IOCTL_GNTALLOC_ALLOC_GREF, "ALLOC_GREF", &mut a)
        }?;
        Ok((a.index, a.gref_ids[0]))
    }

    /// Maps an allocated page (read-write, shared).
    pub fn mmap(&self, index: u64) -> Result<Mapping, SysErr> {
        self.dev.mmap(
            crate::proto::PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            index,
        )
    }

    /// Ends the grant of one page.
    pub fn dealloc(&self, index: u64) -> Result<(), SysErr> {
        let mut a = GntallocDeallocGref { index, count: 1 };
        // SAFETY: the request takes this structure.
        unsafe {
            self.dev
                .ioctl(IOCTL_GNTALLOC_DEALLOC_GREF, "DEALLOC_GREF", &mut a)
        }?;
        Ok(())
    }
}

/// `/dev/xen/gntdev`: other domains' grants mapped here.
#[derive(Debug)]
pub struct Gntdev {
    dev: Dev,
}

impl Gntdev {
    /// Opens /dev/xen/gntdev.
    pub fn open() -> Result<Self, SysErr> {
        Ok(Self {
            dev: Dev::open(GNTDEV)?,
        })
    }

    /// Records one grant to map: its mmap offset. (Nothing reaches the
    /// hypervisor yet; Linux only takes a ballooned page for it.)
    pub fn map_grant(&self, domid: u16, gref: u32) -> Result<u64, SysErr> {
        let mut a = GntdevMapGrantRef {
            count: 1,
            refs: [GntdevGrantRef {
                domid: domid.into(),
                gref,
            }],
            ..Default::default()
        };
        // SAFETY: the request takes this structure, sized for one grant.
        unsafe {
            self.dev
                .ioctl(IOCTL_GNTDEV_MAP_GRANT_REF, "MAP_GRANT_REF", &mut a)
        }?;
        Ok(a.index)
    }

    /// Maps a recorded grant: GNTTABOP_map_grant_ref happens here
    /// (`GNTMAP_readonly` unless `prot` has PROT_WRITE).
    pub fn mmap(&self, index: u64, prot: i32) -> Result<Mapping, SysErr> {
        self.dev.mmap(crate::proto::PAGE, prot, index)
    }

    /// Forgets a recorded grant (unmapping it from the hypervisor's view
    /// once no mmap holds it).
    pub fn unmap_grant(&self, index: u64) -> Result<(), SysErr> {
        let mut a = GntdevUnmapGrantRef {
            index,
            count: 1,
            pad: 0,
        };
        // SAFETY: the request takes this structure.
        unsafe {
            self.dev
                .ioctl(IOCTL_GNTDEV_UNMAP_GRANT_REF, "UNMAP_GRANT_REF", &mut a)
        }?;
        Ok(())
    }

    /// Copies the first `buf.len()` bytes of `domid`'s grant `gref` into
    /// `buf` (GNTTABOP_copy): the segment's GNTST_* status.
    pub fn copy_from_grant(&self, domid: u16, gref: u32, buf: &mut [u8]) -> Result<i16, SysErr> {
        let len = u16::try_from(buf.len()).map_err(|_| SysErr {
            what: "grant copy of more than 64 KiB".into(),
            errno: libc::EINVAL,
        })?;
        let mut seg = GntdevGrantCopySegment {
            source: GntdevCopyPtr {
                foreign: GntdevCopyForeign {
                    gref,
                    offset: 0,
                    domid,
                },
            },
            dest: GntdevCopyPtr {
                virt: buf.as_mut_ptr() as u64,
            },
            len,
            flags: xen::GNTCOPY_SOURCE_GREF,
            status: 1,
        };
        let mut a = GntdevGrantCopy {
            count: 1,
            segments: &raw mut seg as u64,
        };
        // SAFETY: the request takes this structure; `segments` points to
        // one live segment whose destination is `buf`, writable for `len`
        // bytes, all outliving the call.
        unsafe {
            self.dev
                .ioctl(IOCTL_GNTDEV_GRANT_COPY, "GRANT_COPY", &mut a)
        }?;
        // SAFETY: `seg` is a live local the kernel wrote through a pointer
        // it was given; read it afresh.
        Ok(unsafe { (&raw const seg.status).read_volatile() })
    }
}

/// `/dev/xen/privcmd`: raw hypercalls.
#[derive(Debug)]
pub struct Privcmd {
    dev: Dev,
}

impl Privcmd {
    /// Opens /dev/xen/privcmd. (Without `unrestricted=1` on the module, a
    /// domU's open() waits for xenstore, which our domains do not have.)
    pub fn open() -> Result<Self, SysErr> {
        Ok(Self {
            dev: Dev::open(PRIVCMD)?,
        })
    }

    /// IOCTL_PRIVCMD_HYPERCALL: the hypervisor's (non-negative) result, or
    /// its negative result as errno (EPERM also when the file is
    /// restricted, EFAULT when the kernel cannot read the request).
    ///
    /// # Safety
    ///
    /// Pointer arguments must point to live, initialised (so mapped and
    /// writable) memory of the layout the hypercall expects; the
    /// hypervisor reads and writes them through this process's page
    /// tables.
    pub unsafe fn hypercall(&self, op: u64, args: [u64; 5], name: &str) -> Result<i32, SysErr> {
        let mut h = PrivcmdHypercall { op, arg: args };
        // SAFETY: the request takes this structure; the caller vouches for
        // the pointers inside it.
        unsafe { self.dev.ioctl(IOCTL_PRIVCMD_HYPERCALL, name, &mut h) }
    }

    /// An ioctl privcmd does not know (ENOTTY, never reaching the
    /// hypervisor): Ok(()) when it answered ENOTTY.
    pub fn unknown_ioctl(&self) -> Result<(), SysErr> {
        // SAFETY: privcmd rejects the number before looking at the argument.
        // The bare-errno form: this is the benchmark's baseline, and
        // building an error message would add userspace work Xen's figure
        // does not have.
        match unsafe {
            self.dev
                .ioctl_errno(IOCTL_PRIVCMD_UNKNOWN, core::ptr::null_mut::<u8>())
        } {
            Err(libc::ENOTTY) => Ok(()),
            Err(errno) => Err(SysErr {
                what: format!("ioctl({PRIVCMD}, unknown)"),
                errno,
            }),
            Ok(rc) => Err(SysErr {
                what: format!("ioctl({PRIVCMD}, unknown) returned {rc}, want ENOTTY"),
                errno: 0,
            }),
        }
    }

    /// xen_version(XENVER_version, NULL): `major << 16 | minor`.
    pub fn xen_version(&self) -> Result<i32, SysErr> {
        // SAFETY: XENVER_version takes no buffer.
        unsafe {
            self.hypercall(
                xen::HYPERVISOR_XEN_VERSION,
                [xen::XENVER_VERSION, 0, 0, 0, 0],
                "HYPERCALL xen_version(XENVER_version)",
            )
        }
    }

    /// event_channel_op(EVTCHNOP_status, {dom, port}).
    pub fn evtchn_status(&self, dom: u16, port: u32) -> Result<EvtchnStatus, SysErr> {
        let mut st = EvtchnStatus {
            dom,
            port,
            ..Default::default()
        };
        // SAFETY: `st` is a live, initialised evtchn_status for the call.
        unsafe {
            self.hypercall(
                xen::HYPERVISOR_EVENT_CHANNEL_OP,
                [xen::EVTCHNOP_STATUS, &raw mut st as u64, 0, 0, 0],
                "HYPERCALL EVTCHNOP_status",
            )
        }?;
        // SAFETY: `st` is a live local the hypervisor wrote; read it afresh.
        Ok(unsafe { (&raw const st).read_volatile() })
    }

    /// event_channel_op(EVTCHNOP_send, {port}).
    pub fn evtchn_send(&self, port: u32) -> Result<(), SysErr> {
        let mut s = EvtchnSend { port };
        // SAFETY: `s` is a live, initialised evtchn_send for the call.
        unsafe {
            self.hypercall(
                xen::HYPERVISOR_EVENT_CHANNEL_OP,
                [xen::EVTCHNOP_SEND, &raw mut s as u64, 0, 0, 0],
                "HYPERCALL EVTCHNOP_send",
            )
        }?;
        Ok(())
    }

    /// grant_table_op(GNTTABOP_map_grant_ref, &op, 1): the op as the
    /// hypervisor left it (the hypercall itself returns 0 and puts the
    /// outcome in `status`).
    pub fn gnttab_map(
        &self,
        dom: u16,
        gref: u32,
        host_addr: u64,
        flags: u32,
    ) -> Result<GnttabMapGrantRef, SysErr> {
        let mut op = GnttabMapGrantRef {
            host_addr,
            flags,
            gref,
            dom,
            status: 1,
            handle: u32::MAX,
            dev_bus_addr: 0,
        };
        // SAFETY: `op` is one live, initialised gnttab_map_grant_ref.
        unsafe {
            self.hypercall(
                xen::HYPERVISOR_GRANT_TABLE_OP,
                [xen::GNTTABOP_MAP_GRANT_REF, &raw mut op as u64, 1, 0, 0],
                "HYPERCALL GNTTABOP_map_grant_ref",
            )
        }?;
        // SAFETY: `op` is a live local the hypervisor wrote; read it afresh.
        Ok(unsafe { (&raw const op).read_volatile() })
    }

    /// grant_table_op(GNTTABOP_unmap_grant_ref, &op, 1): the status.
    pub fn gnttab_unmap(&self, host_addr: u64, handle: u32) -> Result<i16, SysErr> {
        let mut op = GnttabUnmapGrantRef {
            host_addr,
            dev_bus_addr: 0,
            handle,
            status: 1,
        };
        // SAFETY: `op` is one live, initialised gnttab_unmap_grant_ref.
        unsafe {
            self.hypercall(
                xen::HYPERVISOR_GRANT_TABLE_OP,
                [xen::GNTTABOP_UNMAP_GRANT_REF, &raw mut op as u64, 1, 0, 0],
                "HYPERCALL GNTTABOP_unmap_grant_ref",
            )
        }?;
        // SAFETY: as in gnttab_map.
        Ok(unsafe { (&raw const op.status).read_volatile() })
    }
}
