//! Thin wrappers over the system calls xentool makes: every failure comes
//! back as a [`SysErr`] naming the call and its errno.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A failed system call: what was called and the errno it set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysErr {
    /// The call, e.g. `ioctl(/dev/xen/gntdev, MAP_GRANT_REF)`.
    pub what: String,
    /// errno.
    pub errno: i32,
}

impl fmt::Display for SysErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: errno={} ({})",
            self.what,
            self.errno,
            errno_name(self.errno)
        )
    }
}

/// The current thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn fail(what: impl Into<String>) -> SysErr {
    SysErr {
        what: what.into(),
        errno: errno(),
    }
}

/// The symbolic name of an errno value (Linux's generic numbers, which Xen
/// also uses for its hypercall results).
pub fn errno_name(e: i32) -> &'static str {
    const NAMES: &[(i32, &str)] = &[
        (0, "none"),
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::ESRCH, "ESRCH"),
        (libc::EINTR, "EINTR"),
        (libc::EIO, "EIO"),
        (libc::ENXIO, "ENXIO"),
        (libc::E2BIG, "E2BIG"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EFAULT, "EFAULT"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENODEV, "ENODEV"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::ENOTTY, "ENOTTY"),
        (libc::EFBIG, "EFBIG"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::ENOTCONN, "ENOTCONN"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == e)
        .map_or("unknown", |(_, s)| s)
}

/// An open device node.
#[derive(Debug)]
pub struct Dev {
    fd: OwnedFd,
    /// Its path, for messages.
    pub path: &'static str,
}

impl Dev {
    /// Opens `path` read-write (close-on-exec).
    pub fn open(path: &'static str) -> Result<Self, SysErr> {
        let c = CString::new(path).map_err(|_| SysErr {
            what: format!("open({path})"),
            errno: libc::EINVAL,
        })?;
        // SAFETY: `c` is a NUL-terminated string that outlives the call.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(fail(format!("open({path})")));
        }
        // SAFETY: `fd` was just returned by open() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, path })
    }

    /// The raw descriptor.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `ioctl(fd, req, arg)`: the (non-negative) return value, or the errno.
    ///
    /// # Safety
    ///
    /// `arg` must be what the driver expects for `req`: a pointer to a
    /// live, writable value of the request's structure, valid for the
    /// whole call (including any user pointers inside it).
    pub unsafe fn ioctl<T>(&self, req: u32, name: &str, arg: *mut T) -> Result<i32, SysErr> {
        // SAFETY: the caller vouches for `arg`; `req` fits the request
        // type (all of xentool's requests are below 2^31).
        let rc = unsafe { libc::ioctl(self.raw(), req as libc::Ioctl, arg) };
        if rc < 0 {
            Err(fail(format!("ioctl({}, {name})", self.path)))
        } else {
            Ok(rc)
        }
    }

    /// ioctl(2) returning the bare errno on failure: no message is built,
    /// so a benchmark loop times the kernel, not our error formatting.
    ///
    /// # Safety
    /// As [`Dev::ioctl`].
    pub unsafe fn ioctl_errno<T>(&self, req: u32, arg: *mut T) -> Result<i32, i32> {
        // SAFETY: as for `ioctl`, the caller vouches for `arg`.
        let rc = unsafe { libc::ioctl(self.raw(), req as libc::Ioctl, arg) };
        if rc < 0 { Err(errno()) } else { Ok(rc) }
    }

    /// Waits up to `timeout_ms` for the descriptor to become readable.
    pub fn wait_readable(&self, timeout_ms: i32) -> Result<bool, SysErr> {
        let mut p = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `p` is one valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
            if rc >= 0 {
                return Ok(rc > 0);
            }
            let e = fail(format!("poll({})", self.path));
            if e.errno != libc::EINTR {
                return Err(e);
            }
        }
    }

    /// `read(2)` into `buf`: the bytes read.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, SysErr> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(fail(format!("read({})", self.path)))
        } else {
            Ok(n as usize)
        }
    }

    /// `write(2)` of `buf`: the bytes written.
    pub fn write(&self, buf: &[u8]) -> Result<usize, SysErr> {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(self.raw(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(fail(format!("write({})", self.path)))
        } else {
            Ok(n as usize)
        }
    }

    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`.
    pub fn mmap(&self, len: usize, prot: i32, offset: u64) -> Result<Mapping, SysErr> {
        let what = || {
            format!(
                "mmap({}, offset={offset:#x}, {})",
                self.path,
                prot_name(prot)
            )
        };
        let off = libc::off_t::try_from(offset).map_err(|_| SysErr {
            what: what(),
            errno: libc::EINVAL,
        })?;
        // SAFETY: a fresh shared mapping of the device chosen by the
        // kernel; nothing of ours lives at the address it picks.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                self.raw(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(fail(what()));
        }
        Ok(Mapping {
            ptr: p.cast(),
            len,
            path: self.path,
        })
    }
}

/// `PROT_READ` / `PROT_READ|PROT_WRITE` as text.
pub fn prot_name(prot: i32) -> &'static str {
    if prot & libc::PROT_WRITE != 0 {
        "PROT_READ|PROT_WRITE"
    } else {
        "PROT_READ"
    }
}

/// A shared mapping of a device; unmapped on drop (or by [`Mapping::unmap`],
/// which reports the error).
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    path: &'static str,
}

impl Mapping {
    /// The first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Unmaps now.
    pub fn unmap(mut self) -> Result<(), SysErr> {
        let r = self.do_unmap();
        self.ptr = core::ptr::null_mut();
        r
    }

    fn do_unmap(&mut self) -> Result<(), SysErr> {
        if self.ptr.is_null() {
            return Ok(());
        }
        // SAFETY: `ptr`/`len` describe a mapping this value owns; no
        // reference into it outlives `self`.
        if unsafe { libc::munmap(self.ptr.cast(), self.len) } != 0 {
            return Err(fail(format!("munmap({})", self.path)));
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let _ = self.do_unmap();
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EINVAL), "EINVAL");
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(errno_name(0), "none");
        assert_eq!(errno_name(9999), "unknown");
        let e = SysErr {
            what: "ioctl(/dev/x, Y)".into(),
            errno: libc::ENOTTY,
        };
        assert_eq!(e.to_string(), "ioctl(/dev/x, Y) failed: errno=25 (ENOTTY)");
    }

    #[test]
    fn clock_advances() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }

    #[test]
    fn missing_device_reports_enoent() {
        let e = Dev::open("/nonexistent/xentool-test").unwrap_err();
        assert_eq!(e.errno, libc::ENOENT);
        assert!(e.to_string().contains("open(/nonexistent/xentool-test)"));
    }
}
