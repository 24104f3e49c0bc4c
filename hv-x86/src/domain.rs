//! A domain as the hardware sees it: its RAM, its EPT, its vCPU, its
//! viridian and local-APIC state, its console line and whether it can run.
//! The Xen-ABI state of the same domain lives in `common::xen::Xen`.
//!
//! Guest RAM is one 2 MiB-aligned block from the heap, mapped at
//! guest-physical 0 with 2 MiB EPT pages; nothing else is mapped until the
//! Xen ABI maps shared-info or grant frames. A domain can only ever reach
//! what its own EPT maps: its RAM and the frames the core lets it map.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::ptr::NonNull;

use hv_x86::ept::{Ept, Perm, TableMemory};
use hv_x86::viridian::Viridian;
use hv_x86::vlapic::VLapic;

use crate::hw;
use crate::log::log;
use crate::vcpu::Vcpu;

/// RAM is allocated in, aligned to and mapped with 2 MiB pages.
pub const RAM_ALIGN: usize = 2 << 20;
/// Guest-physical addresses a domain may have mapped (Xen-ABI mappings
/// included): 64 GiB.
pub const GPA_LIMIT: u64 = 64 << 30;
/// Lines of console output kept per domain before a forced newline.
const CONSOLE_LINE: usize = 200;

/// Whether the domain may be scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Ready to run.
    Runnable,
    /// Halted or blocked until an event arrives.
    Blocked,
}

/// One domain's guest RAM.
pub struct Ram {
    base: NonNull<u8>,
    len: usize,
}

impl Ram {
    /// `len` bytes (a multiple of 2 MiB), zeroed; None when the heap
    /// cannot give them.
    pub fn new(len: usize) -> Option<Ram> {
        let layout = Layout::from_size_align(len, RAM_ALIGN).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        Some(Ram {
            base: NonNull::new(p)?,
            len,
        })
    }

    /// Bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Host-physical address of guest-physical 0.
    pub fn host(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Copies `data` to guest-physical `gpa` (the domain builder's loader).
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), ()> {
        let end = gpa.checked_add(data.len() as u64).ok_or(())?;
        if end > self.len() {
            return Err(());
        }
        // SAFETY: [gpa, end) lies inside this allocation (checked), which
        // this domain owns; the guest does not run while it is built.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.base.as_ptr().add(gpa as usize),
                data.len(),
            );
        }
        Ok(())
    }
}

impl Drop for Ram {
    fn drop(&mut self) {
        // Scrubbed before it goes back: the next owner must not see it.
        // SAFETY: base/len are the allocation made in `new` with this
        // layout; the domain's EPT no longer maps it (torn down first).
        unsafe {
            core::ptr::write_bytes(self.base.as_ptr(), 0, self.len);
            dealloc(
                self.base.as_ptr(),
                Layout::from_size_align_unchecked(self.len, RAM_ALIGN),
            );
        }
    }
}

/// EPT tables from the heap, at most `limit` of them; INVEPT through the
/// CPU.
pub struct Tables {
    /// INVEPT type: 1 single-context, 2 all-context.
    pub invept_kind: u64,
    /// Tables allocated now.
    pub count: usize,
    /// Tables this domain may have: what its RAM needs split to 4 KiB
    /// pages, and a few for Xen-ABI frames mapped outside it. A guest
    /// mapping frames all over its address space gets ENOMEM, never the
    /// hypervisor's whole heap.
    pub limit: usize,
}

impl Tables {
    /// The budget for `ram` bytes of RAM: root, PDPTs, one directory per
    /// GiB and one table per 2 MiB, and 64 more for mappings outside RAM.
    pub fn new(invept_kind: u64, ram: u64) -> Tables {
        let gib = ram.div_ceil(1 << 30) as usize;
        let two_mib = ram.div_ceil(2 << 20) as usize;
        Tables {
            invept_kind,
            count: 0,
            limit: 2 + gib + two_mib + 64,
        }
    }
}

const TABLE_LAYOUT: Layout = match Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!("a page layout"),
};

impl TableMemory for Tables {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.count >= self.limit {
            return None;
        }
        // SAFETY: the layout has a non-zero size; a null result (the heap
        // is out of memory) is an answer, not a panic.
        let p = unsafe { alloc_zeroed(TABLE_LAYOUT) };
        if p.is_null() {
            return None;
        }
        self.count += 1;
        Some(p as u64)
    }

    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: `pa` came from `alloc_table` (a zeroed, page-aligned
        // page the EPT owns alone until `free_table`); the hypervisor is
        // identity mapped.
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }

    fn free_table(&mut self, pa: u64) {
        // SAFETY: `pa` came from `alloc_table` with this layout; the EPT
        // hands each table back once.
        unsafe { dealloc(pa as *mut u8, TABLE_LAYOUT) };
        self.count = self.count.saturating_sub(1);
    }

    fn invept(&mut self, eptp: u64) {
        if hw::invept(self.invept_kind, eptp).is_err() {
            log!("hv-x86: INVEPT failed for eptp {:#x}", eptp);
        }
    }
}

/// One domain.
pub struct Dom {
    pub id: u16,
    pub ram: Ram,
    pub ept: RefCell<Ept>,
    pub tables: RefCell<Tables>,
    pub vcpu: Vcpu,
    pub viridian: Viridian,
    pub lapic: VLapic,
    pub state: State,
    /// The virtual COM1's line-control register (DLAB decides what a
    /// write to the data port means).
    pub uart_lcr: u8,
    /// Set by the Xen core (an event for this domain): unblocks it.
    pub kicked: Cell<bool>,
    console: RefCell<Vec<u8>>,
    /// Guest-caused refusals logged so far (rate limit).
    pub refusals: Cell<u32>,
    /// VM exits taken, by basic exit reason (the last slot counts the
    /// reasons beyond it).
    pub exits: [u32; EXIT_KINDS],
}

/// Exit reasons counted one by one ([`Dom::exits`]).
pub const EXIT_KINDS: usize = 80;

impl Dom {
    pub fn new(id: u16, ram: Ram, ept: Ept, tables: Tables, vcpu: Vcpu, viridian: Viridian) -> Dom {
        Dom {
            id,
            ram,
            ept: RefCell::new(ept),
            tables: RefCell::new(tables),
            vcpu,
            viridian,
            lapic: VLapic::new(0),
            state: State::Runnable,
            uart_lcr: 0x03,
            kicked: Cell::new(false),
            console: RefCell::new(Vec::new()),
            refusals: Cell::new(0),
            exits: [0; EXIT_KINDS],
        }
    }

    /// Guest console output: whole lines go to the log as "(dN) ...".
    pub fn console_write(&self, bytes: &[u8]) {
        let mut line = self.console.borrow_mut();
        for &b in bytes {
            match b {
                b'\n' => {
                    log!("(d{}) {}", self.id, String::from_utf8_lossy(&line));
                    line.clear();
                }
                b'\r' => {}
                // Control characters would let a guest forge hypervisor
                // log lines or terminal escapes.
                0x20..0x7f => line.push(b),
                _ => line.push(b'?'),
            }
            if line.len() >= CONSOLE_LINE {
                log!("(d{}) {}", self.id, String::from_utf8_lossy(&line));
                line.clear();
            }
        }
    }

    /// Counts one VM exit.
    pub fn count_exit(&mut self, reason: u32) {
        let i = ((reason & 0xffff) as usize).min(EXIT_KINDS - 1);
        if let Some(n) = self.exits.get_mut(i) {
            *n = n.saturating_add(1);
        }
    }

    /// One log line: how many exits of each reason the domain took.
    pub fn log_exits(&self) {
        let mut line = String::new();
        let mut total: u64 = 0;
        for (reason, &n) in self.exits.iter().enumerate().filter(|(_, n)| **n > 0) {
            total += u64::from(n);
            let _ = core::fmt::Write::write_fmt(
                &mut line,
                format_args!(", {} {n}", hv_x86::vmx::exit::name(reason as u32)),
            );
        }
        log!("d{}: {total} VM exits{line}", self.id);
    }

    /// Flushes a partial console line (the domain ended mid-line).
    pub fn console_flush(&self) {
        let mut line = self.console.borrow_mut();
        if !line.is_empty() {
            log!("(d{}) {}", self.id, String::from_utf8_lossy(&line));
            line.clear();
        }
    }

    /// A guest-caused refusal: logged for the first 32, then every 1024th.
    pub fn refuse(&self, what: core::fmt::Arguments) {
        let n = self.refusals.get().saturating_add(1);
        self.refusals.set(n);
        if n <= 32 || n.is_multiple_of(1024) {
            log!("d{}: {} (refusal {})", self.id, what, n);
        }
    }

    /// Host-physical address behind guest-physical `gpa` and whether it is
    /// writable, through the domain's EPT.
    pub fn translate(&self, gpa: u64) -> Option<(u64, bool)> {
        let ept = self.ept.borrow();
        let mut tables = self.tables.borrow_mut();
        ept.translate(&mut *tables, gpa)
            .map(|(hpa, p): (u64, Perm)| (hpa, p.write))
    }

    /// Tears the domain's hardware state down: the EPT's tables freed,
    /// then (dropped with `self`) the VMCS cleared and the RAM scrubbed and
    /// freed. The Xen core must have let go of it first.
    pub fn teardown(self) {
        self.console_flush();
        let Dom { ept, tables, .. } = self;
        destroy_ept(ept.into_inner(), &mut tables.into_inner());
    }
}

/// Frees an EPT's tables, then drops what the CPU cached of it: a later
/// domain's EPT may get the same root address (and so the same EPTP).
pub fn destroy_ept(ept: Ept, tables: &mut Tables) {
    let eptp = ept.eptp();
    ept.destroy(tables);
    tables.invept(eptp);
}
