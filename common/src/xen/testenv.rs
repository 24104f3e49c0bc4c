//! A host stand-in for the architecture, for unit tests and fuzzing:
//! domains with RAM frames on the heap, a calling vCPU whose virtual
//! addresses equal its guest-physical ones, and a record of every mapping,
//! upcall and log line.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::fmt;

use super::abi::*;
use super::{Env, HostFrame, Page, Xen};

/// Guest-physical frame where test RAM starts (the arm layout's 1 GiB).
pub const RAM_BASE_GFN: u64 = 0x40000;
/// First frame of the grant-table region.
pub const GRANT_GFN: u64 = 0x38000;
/// Frames [`TestEnv::map_frame`] refuses (an emulated device window).
pub const MMIO_GFN: core::ops::Range<u64> = 0x8000..0x8010;

/// What a translation shows at a frame: a host frame and whether it is
/// writable, or nothing.
pub type Mapped = Option<(HostFrame, bool)>;

/// The fake architecture.
pub struct TestEnv {
    /// RAM frames per domain id.
    pub ram: BTreeMap<DomId, Vec<Box<Page>>>,
    /// What each domain's translation shows where it differs from its
    /// RAM: Some(frame, writable) or None (unmapped).
    pub map: RefCell<BTreeMap<(DomId, u64), Mapped>>,
    /// Upcalls raised, in order.
    pub upcalls: RefCell<Vec<(DomId, u32)>>,
    /// Console output per domain.
    pub console: RefCell<BTreeMap<DomId, Vec<u8>>>,
    /// Log lines.
    pub logs: RefCell<Vec<String>>,
    /// The calling domain (whose virtual addresses `read_virt` sees).
    pub current: Cell<DomId>,
    /// The clock.
    pub now: Cell<u64>,
}

impl TestEnv {
    /// Domains `ids` with `pages` RAM frames each.
    pub fn new(ids: &[DomId], pages: usize) -> Self {
        let mut ram = BTreeMap::new();
        for &id in ids {
            ram.insert(id, (0..pages).map(|_| Page::new_zeroed()).collect());
        }
        TestEnv {
            ram,
            map: RefCell::new(BTreeMap::new()),
            upcalls: RefCell::new(Vec::new()),
            console: RefCell::new(BTreeMap::new()),
            logs: RefCell::new(Vec::new()),
            current: Cell::new(ids.first().copied().unwrap_or(1)),
            now: Cell::new(1000),
        }
    }

    /// `Xen` with these domains added (RAM as in `new`, 2 vCPUs each,
    /// default limits, no capabilities).
    pub fn xen(&self) -> Xen {
        let mut xen = Xen::new();
        for (&id, frames) in &self.ram {
            xen.add_domain(super::DomainConfig {
                id,
                name: alloc::format!("d{}", id),
                nr_vcpus: 2,
                caps: 0,
                ram_base_gfn: RAM_BASE_GFN,
                ram_pages: frames.len() as u64,
                max_grant_frames: 4,
                max_evtchn_ports: super::DEFAULT_EVTCHN_PORTS,
                tmem: Default::default(),
            })
            .expect("test domain");
        }
        xen
    }

    /// What `dom` sees at `gfn`: its own RAM page, a mapped frame, or
    /// nothing.
    pub fn seen(&self, dom: DomId, gfn: u64) -> Option<(HostFrame, bool)> {
        if let Some(v) = self.map.borrow().get(&(dom, gfn)) {
            return *v;
        }
        self.ram_page(dom, gfn).map(|p| (p.frame(), true))
    }

    /// The page behind a host frame: some domain's RAM page (the fake
    /// cannot dereference a frame number the core made itself).
    fn page_of(&self, f: HostFrame) -> Option<&Page> {
        self.ram
            .values()
            .flatten()
            .map(|b| &**b)
            .find(|p| p.frame() == f)
    }

    /// Writes `data` at guest-physical `addr` of the current domain.
    pub fn poke(&self, addr: u64, data: &[u8]) {
        self.write_virt(addr, data).expect("poke inside test RAM");
    }

    /// Reads `n` bytes at guest-physical `addr` of the current domain.
    pub fn peek(&self, addr: u64, n: usize) -> Vec<u8> {
        let mut v = alloc::vec![0u8; n];
        self.read_virt(addr, &mut v).expect("peek inside test RAM");
        v
    }

    /// Guest-physical address of byte `off` of RAM frame `i`.
    pub fn addr(i: u64, off: u64) -> u64 {
        ((RAM_BASE_GFN + i) << 12) + off
    }

    fn copy(
        &self,
        va: u64,
        len: usize,
        mut f: impl FnMut(&Page, usize, core::ops::Range<usize>) -> bool,
    ) -> Result<(), i32> {
        let dom = self.current.get();
        let mut done = 0usize;
        while done < len {
            let a = va.checked_add(done as u64).ok_or(EFAULT)?;
            let gfn = a >> 12;
            let off = (a & 0xfff) as usize;
            let n = (4096 - off).min(len - done);
            // Through the current translation: RAM or a writable mapping.
            let page = match self.map.borrow().get(&(dom, gfn)) {
                Some(None) => return Err(EFAULT),
                Some(Some((f, _))) => self.page_of(*f).ok_or(EFAULT)? as *const Page,
                None => self.ram_page(dom, gfn).ok_or(EFAULT)? as *const Page,
            };
            // The pointer comes from a reference into `self.ram`, alive as
            // long as `self`.
            let page = self
                .ram
                .values()
                .flatten()
                .map(|b| &**b)
                .find(|p| core::ptr::eq(*p, page))
                .ok_or(EFAULT)?;
            if !f(page, off, done..done + n) {
                return Err(EFAULT);
            }
            done += n;
        }
        Ok(())
    }
}

impl Env for TestEnv {
    fn now_ns(&self) -> u64 {
        self.now.get()
    }
    fn read_virt(&self, va: u64, out: &mut [u8]) -> Result<(), i32> {
        let len = out.len();
        self.copy(va, len, |p, off, r| p.read(off, &mut out[r]))
    }
    fn write_virt(&self, va: u64, data: &[u8]) -> Result<(), i32> {
        self.copy(va, data.len(), |p, off, r| p.write(off, &data[r]))
    }
    fn virt_to_phys(&self, va: u64, _write: bool) -> Result<u64, i32> {
        let dom = self.current.get();
        if self.seen(dom, va >> 12).is_some() {
            Ok(va)
        } else {
            Err(EFAULT)
        }
    }
    fn ram_page(&self, dom: DomId, gfn: u64) -> Option<&Page> {
        let i = gfn.checked_sub(RAM_BASE_GFN)?;
        self.ram
            .get(&dom)?
            .get(usize::try_from(i).ok()?)
            .map(|b| &**b)
    }
    fn map_frame(&self, dom: DomId, gfn: u64, frame: HostFrame, writable: bool) -> Result<(), i32> {
        if MMIO_GFN.contains(&gfn) || gfn >= 1 << 28 {
            return Err(EINVAL);
        }
        self.map
            .borrow_mut()
            .insert((dom, gfn), Some((frame, writable)));
        Ok(())
    }
    fn unmap_frame(&self, dom: DomId, gfn: u64) -> Result<(), i32> {
        if gfn >= 1 << 28 {
            return Err(EINVAL);
        }
        self.map.borrow_mut().insert((dom, gfn), None);
        Ok(())
    }
    fn restore_ram(&self, dom: DomId, gfn: u64) -> Result<(), i32> {
        self.ram_page(dom, gfn).ok_or(EINVAL)?;
        self.map.borrow_mut().remove(&(dom, gfn));
        Ok(())
    }
    fn raise_upcall(&self, dom: DomId, vcpu: u32) {
        self.upcalls.borrow_mut().push((dom, vcpu));
    }
    fn console_write(&self, dom: DomId, bytes: &[u8]) {
        self.console
            .borrow_mut()
            .entry(dom)
            .or_default()
            .extend_from_slice(bytes);
    }
    fn arch_features(&self) -> u32 {
        1 << XENFEAT_ARM_SMCCC_SUPPORTED
    }
    fn capabilities(&self) -> &'static str {
        "xen-3.0-test"
    }
    fn log(&self, args: fmt::Arguments) {
        self.logs.borrow_mut().push(alloc::format!("{}", args));
    }
}
