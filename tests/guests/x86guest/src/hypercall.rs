//! The hypervisor interfaces as an x86 HVM domain sees them: Xen's CPUID
//! leaves, hypercall page and hypercalls (with their argument structs),
//! the shared-info page and the event-channel upcall, and viridian's
//! (Hyper-V's) MSRs and hypercall page.
//!
//! Numbers and layouts are Xen's public headers (xen.h, arch-x86/xen.h,
//! arch-x86/cpuid.h, event_channel.h, grant_table.h, memory.h,
//! hvm/hvm_op.h, hvm/params.h, sched.h, version.h) and the Hyper-V TLFS.
//! Code here never jumps into a hypercall page before checking that the
//! stub it is about to run is a call (`vmcall` then `ret`): a hypervisor
//! that fills the page wrongly gets a FAIL line, not a guest running
//! through garbage.

use core::arch::asm;
use core::mem::{offset_of, size_of};
use core::sync::atomic::Ordering::{Relaxed, SeqCst};
use core::sync::atomic::{AtomicBool, AtomicU64};

use crate::boot;
use crate::console::{Msg, msg};

// ----------------------------------------------------------------- pages

/// One 4 KiB page of guest memory shared with the hypervisor (hypercall
/// pages, shared info, grant frames, grant-copy buffers). Only ever
/// accessed through atomics: the hypervisor writes it, or swaps the frame
/// behind it, whenever this vCPU is in a VM exit.
#[repr(C, align(4096))]
pub struct Page([AtomicU64; 512]);

impl Page {
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; 512])
    }

    /// Guest-physical address: the page tables map virtual = physical.
    pub fn gpa(&self) -> u64 {
        core::ptr::from_ref(self) as u64
    }

    pub fn gfn(&self) -> u64 {
        self.gpa() >> 12
    }

    /// The 64-bit word at byte offset `index * 8`.
    pub fn word(&self, index: usize) -> Option<&AtomicU64> {
        self.0.get(index)
    }

    pub fn words(&self) -> &[AtomicU64; 512] {
        &self.0
    }

    /// The byte at `offset`.
    pub fn byte(&self, offset: usize) -> Option<u8> {
        let word = self.0.get(offset / 8)?.load(Relaxed);
        Some((word >> (offset % 8 * 8)) as u8)
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new()
    }
}

// ------------------------------------------------------- Xen CPUID leaves

/// "XenVMMXenVMM" in EBX, ECX, EDX of the leaves' base.
pub const XEN_SIGNATURE: [u8; 12] = *b"XenVMMXenVMM";
/// Where the search for Xen's leaves starts, its step and its last base.
const XEN_LEAVES_FIRST: u32 = 0x4000_0000;
const XEN_LEAVES_STEP: u32 = 0x100;
const XEN_LEAVES_LAST: u32 = 0x4001_0000;
/// Leaf base+4 EAX: EBX holds the vCPU id; ECX holds the domain id.
const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;

/// EBX, ECX, EDX of `leaf` as 12 bytes (a hypervisor signature).
pub fn cpuid_signature(leaf: u32) -> [u8; 12] {
    let [_, b, c, d] = boot::cpuid(leaf);
    let mut sig = [0u8; 12];
    for (chunk, reg) in sig.chunks_exact_mut(4).zip([b, c, d]) {
        chunk.copy_from_slice(&reg.to_le_bytes());
    }
    sig
}

/// What Xen's CPUID leaves say.
#[derive(Clone, Copy, Debug)]
pub struct XenLeaves {
    pub base: u32,
    /// EAX of the base leaf: the highest leaf.
    pub max_leaf: u32,
    /// base+1 EAX: major << 16 | minor.
    pub version: u32,
    /// base+2: hypercall pages, and the MSR that places them.
    pub pages: u32,
    pub msr: u32,
    /// base+4, when its flags say present.
    pub vcpu_id: Option<u32>,
    pub domid: Option<u16>,
}

/// Scans 0x40000000, 0x40000100, ... 0x40010000 for Xen's signature.
pub fn find_xen_leaves() -> Option<XenLeaves> {
    let base = (XEN_LEAVES_FIRST..=XEN_LEAVES_LAST)
        .step_by(XEN_LEAVES_STEP as usize)
        .find(|&leaf| cpuid_signature(leaf) == XEN_SIGNATURE)?;
    let max_leaf = boot::cpuid(base)[0];
    let [version, ..] = boot::cpuid(base + 1);
    let [pages, msr, ..] = boot::cpuid(base + 2);
    let (mut vcpu_id, mut domid) = (None, None);
    if max_leaf >= base + 4 {
        let [flags, vcpu, dom, _] = boot::cpuid(base + 4);
        if flags & XEN_HVM_CPUID_VCPU_ID_PRESENT != 0 {
            vcpu_id = Some(vcpu);
        }
        if flags & XEN_HVM_CPUID_DOMID_PRESENT != 0 {
            // A domain id is 16 bits; anything wider is no id.
            domid = u16::try_from(dom).ok();
        }
    }
    Some(XenLeaves {
        base,
        max_leaf,
        version,
        pages,
        msr,
        vcpu_id,
        domid,
    })
}

// ------------------------------------------------------------ hypercalls

/// The hypercalls this guest makes; only these stubs are ever checked and
/// run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Hypercall {
    MemoryOp = 12,
    XenVersion = 17,
    GrantTableOp = 20,
    SchedOp = 29,
    EventChannelOp = 32,
    HvmOp = 34,
    /// Xen defines nothing at 60 (hypfs_op is 42, the arch slots 48..=55,
    /// the table 64 long): -ENOSYS.
    Undefined = 60,
}

impl Hypercall {
    /// The calls the ABI defines, checked when the page is placed. The
    /// undefined one is checked only when made: a hypervisor may leave its
    /// stub out, and that alone must not cost every other check.
    const DEFINED: [Hypercall; 6] = [
        Hypercall::MemoryOp,
        Hypercall::XenVersion,
        Hypercall::GrantTableOp,
        Hypercall::SchedOp,
        Hypercall::EventChannelOp,
        Hypercall::HvmOp,
    ];
}

/// The MSR range hypervisors own (the TLFS reserves it for them).
const HYPERVISOR_MSRS: core::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_ffff;
/// Each hypercall's stub in the page.
const STUB_SIZE: usize = 32;

pub const DOMID_SELF: u16 = 0x7FF0;

/// Negative errno values (Xen's are Linux's numbers).
pub const EPERM: i64 = 1;
pub const EFAULT: i64 = 14;
pub const EINVAL: i64 = 22;
pub const ENOSYS: i64 = 38;

pub const XENVER_VERSION: u64 = 0;
pub const XENVER_EXTRAVERSION: u64 = 1;

const SCHEDOP_SHUTDOWN: u64 = 2;
pub const SHUTDOWN_POWEROFF: u32 = 0;

const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;

const HVMOP_SET_PARAM: u64 = 0;
const HVMOP_GET_PARAM: u64 = 1;
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
/// HVM_PARAM_CALLBACK_IRQ value bits 63:56: delivery type 2 = a vector.
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u64 = 2 << 56;

const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
const EVTCHNOP_CLOSE: u64 = 3;
const EVTCHNOP_SEND: u64 = 4;
const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;

const GNTTABOP_COPY: u64 = 5;
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
pub const GTF_PERMIT_ACCESS: u64 = 1 << 0;
pub const GNTST_OKAY: i16 = 0;
pub const GNTST_BAD_GNTREF: i16 = -3;

#[repr(C)]
struct AddToPhysmap {
    domid: u16,
    size: u16,
    space: u32,
    idx: u64,
    gpfn: u64,
}

#[repr(C)]
struct HvmParam {
    domid: u16,
    pad: u16,
    index: u32,
    value: u64,
}

#[repr(C)]
struct EvtchnAllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

#[repr(C)]
struct EvtchnBindInterdomain {
    remote_dom: u16,
    pad: u16,
    remote_port: u32,
    local_port: u32,
}

/// EVTCHNOP_send and EVTCHNOP_close take just the port.
#[repr(C)]
struct EvtchnPort {
    port: u32,
}

#[repr(C)]
struct SchedShutdown {
    reason: u32,
}

/// One side of a grant copy: a grant reference or a frame number (a
/// union in C; a grant_ref_t is the low 32 bits), the domain, the offset.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GnttabCopyPtr {
    pub ref_or_gmfn: u64,
    pub domid: u16,
    pub offset: u16,
    pad: u32,
}

impl GnttabCopyPtr {
    pub const fn new(ref_or_gmfn: u64, domid: u16, offset: u16) -> Self {
        Self {
            ref_or_gmfn,
            domid,
            offset,
            pad: 0,
        }
    }
}

/// struct gnttab_copy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
    pad: u16,
}

impl GnttabCopy {
    /// `status` starts at a value no GNTST_* has, so an op the hypervisor
    /// never answered shows.
    pub const STATUS_UNTOUCHED: i16 = 1;

    pub const fn new(source: GnttabCopyPtr, dest: GnttabCopyPtr, len: u16, flags: u16) -> Self {
        Self {
            source,
            dest,
            len,
            flags,
            status: Self::STATUS_UNTOUCHED,
            pad: 0,
        }
    }
}

const _: () = {
    assert!(size_of::<AddToPhysmap>() == 24 && offset_of!(AddToPhysmap, idx) == 8);
    assert!(size_of::<HvmParam>() == 16 && offset_of!(HvmParam, value) == 8);
    assert!(size_of::<EvtchnAllocUnbound>() == 8 && offset_of!(EvtchnAllocUnbound, port) == 4);
    assert!(size_of::<EvtchnBindInterdomain>() == 12);
    assert!(offset_of!(EvtchnBindInterdomain, remote_port) == 4);
    assert!(offset_of!(EvtchnBindInterdomain, local_port) == 8);
    assert!(size_of::<GnttabCopyPtr>() == 16 && offset_of!(GnttabCopyPtr, offset) == 10);
    assert!(size_of::<GnttabCopy>() == 40);
    assert!(offset_of!(GnttabCopy, dest) == 16 && offset_of!(GnttabCopy, len) == 32);
    assert!(offset_of!(GnttabCopy, status) == 36);
};

/// Xen's hypercall page, filled by the hypervisor when its MSR is written.
static HYPERCALL_PAGE: Page = Page::new();
/// Set once the page is in place and its stubs checked.
static XEN_READY: AtomicBool = AtomicBool::new(false);

/// Why the stub for `call` is not run: its first bytes.
fn stub_refused(call: Hypercall) -> Msg {
    let start = call as usize * STUB_SIZE;
    let head: [u8; 9] = core::array::from_fn(|i| HYPERCALL_PAGE.byte(start + i).unwrap_or(0));
    msg!("stub {} is no vmcall+ret: {head:02x?}", call as u64)
}

/// The stub for `call` is a call: `vmcall` (0f 01 c1), later a `ret`.
fn stub_is_call(call: Hypercall) -> bool {
    let start = call as usize * STUB_SIZE;
    let stub: [u8; STUB_SIZE] =
        core::array::from_fn(|i| HYPERCALL_PAGE.byte(start + i).unwrap_or(0));
    stub.windows(3)
        .position(|w| w == [0x0f, 0x01, 0xc1])
        .and_then(|at| stub.get(at + 3..))
        .is_some_and(|rest| rest.contains(&0xc3))
}

/// Calls through Xen's hypercall page: only exists once the page is in
/// place and the stubs this guest uses are checked.
#[derive(Clone, Copy)]
pub struct Xen(());

impl Xen {
    /// Places the hypercall page through `msr` (CPUID base+2 EBX).
    pub fn install(msr: u32) -> Result<Self, Msg> {
        // CPUID is the hypervisor's word; an MSR outside its own range
        // (EFER, say) would be the CPU's, and must not be written.
        if !HYPERVISOR_MSRS.contains(&msr) {
            return Err(msg!(
                "hypercall MSR {msr:#x} is outside 0x40000000..=0x4000ffff"
            ));
        }
        // SAFETY: the MSR is in the hypervisor's range, not the CPU's;
        // writing it makes the hypervisor write the hypercall stubs into
        // HYPERCALL_PAGE, which nothing but this module touches, and only
        // through atomics.
        unsafe { boot::wrmsr(msr, HYPERCALL_PAGE.gpa()) }
            .map_err(|f| msg!("wrmsr {msr:#x} = {:#x}: {f}", HYPERCALL_PAGE.gpa()))?;
        if let Some(&bad) = Hypercall::DEFINED.iter().find(|&&c| !stub_is_call(c)) {
            return Err(stub_refused(bad));
        }
        XEN_READY.store(true, SeqCst);
        Ok(Self(()))
    }

    /// The handle, if [`Xen::install`] succeeded (for the fatal paths).
    pub fn get() -> Option<Self> {
        XEN_READY.load(SeqCst).then_some(Self(()))
    }

    /// One hypercall. Its stub must have been checked: [`Xen::install`]
    /// did for the defined calls.
    ///
    /// # Safety
    /// The hypervisor may read and write whatever the arguments point at:
    /// every pointer among them must name memory that is free to change.
    unsafe fn call(self, call: Hypercall, args: [u64; 5]) -> i64 {
        let entry = HYPERCALL_PAGE.gpa() + call as u64 * STUB_SIZE as u64;
        let ret: i64;
        // SAFETY: this stub was checked to be a vmcall followed by a ret;
        // the caller vouches for the arguments. Every register a
        // stub or the hypervisor might change is declared clobbered.
        unsafe {
            asm!(
                "call rax",
                inout("rax") entry => ret,
                inout("rdi") args[0] => _,
                inout("rsi") args[1] => _,
                inout("rdx") args[2] => _,
                inout("r10") args[3] => _,
                inout("r8") args[4] => _,
                out("rcx") _, out("r9") _, out("r11") _,
            )
        };
        ret
    }

    /// A hypercall with one argument struct, `op`.
    fn call_with<T>(self, call: Hypercall, cmd: u64, op: &mut T) -> i64 {
        let arg = core::ptr::from_mut(op) as u64;
        // SAFETY: the only pointer is to `op`, which the caller lent
        // mutably for the call.
        unsafe { self.call(call, [cmd, arg, 0, 0, 0]) }
    }

    /// xen_version(XENVER_version): major << 16 | minor.
    pub fn version(self) -> i64 {
        // SAFETY: XENVER_version takes no buffer; the null pointer names
        // nothing.
        unsafe { self.call(Hypercall::XenVersion, [XENVER_VERSION, 0, 0, 0, 0]) }
    }

    /// xen_version(`cmd`) with its buffer at `buffer`.
    ///
    /// # Safety
    /// `buffer` must be memory that is free to change, or backed by nothing.
    pub unsafe fn version_into(self, cmd: u64, buffer: u64) -> i64 {
        // SAFETY: the caller vouches for `buffer`.
        unsafe { self.call(Hypercall::XenVersion, [cmd, buffer, 0, 0, 0]) }
    }

    /// A hypercall number Xen does not define, with all arguments 0; not
    /// made if its stub is no call.
    pub fn undefined(self) -> Result<i64, Msg> {
        if !stub_is_call(Hypercall::Undefined) {
            return Err(stub_refused(Hypercall::Undefined));
        }
        // SAFETY: all arguments are 0; no pointer names our memory.
        Ok(unsafe { self.call(Hypercall::Undefined, [0; 5]) })
    }

    /// XENMEM_add_to_physmap: puts frame `idx` of `space` at `page`.
    pub fn add_to_physmap(self, space: u32, idx: u64, page: &'static Page) -> i64 {
        let mut op = AddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space,
            idx,
            gpfn: page.gfn(),
        };
        self.call_with(Hypercall::MemoryOp, XENMEM_ADD_TO_PHYSMAP, &mut op)
    }

    /// HVMOP_set_param on this domain.
    pub fn set_param(self, index: u32, value: u64) -> i64 {
        let mut op = HvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index,
            value,
        };
        self.call_with(Hypercall::HvmOp, HVMOP_SET_PARAM, &mut op)
    }

    /// HVMOP_get_param on this domain: the value, or the error.
    pub fn get_param(self, index: u32) -> Result<u64, i64> {
        let mut op = HvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index,
            value: 0,
        };
        match self.call_with(Hypercall::HvmOp, HVMOP_GET_PARAM, &mut op) {
            0 => Ok(op.value),
            e => Err(e),
        }
    }

    /// EVTCHNOP_alloc_unbound in this domain for `remote`: the port.
    pub fn evtchn_alloc_unbound(self, remote: u16) -> Result<u32, i64> {
        let mut op = EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom: remote,
            port: 0,
        };
        match self.call_with(Hypercall::EventChannelOp, EVTCHNOP_ALLOC_UNBOUND, &mut op) {
            0 => Ok(op.port),
            e => Err(e),
        }
    }

    /// EVTCHNOP_bind_interdomain to `remote`'s `remote_port`: the local port.
    pub fn evtchn_bind_interdomain(self, remote: u16, remote_port: u32) -> Result<u32, i64> {
        let mut op = EvtchnBindInterdomain {
            remote_dom: remote,
            pad: 0,
            remote_port,
            local_port: 0,
        };
        match self.call_with(
            Hypercall::EventChannelOp,
            EVTCHNOP_BIND_INTERDOMAIN,
            &mut op,
        ) {
            0 => Ok(op.local_port),
            e => Err(e),
        }
    }

    pub fn evtchn_send(self, port: u32) -> i64 {
        self.call_with(
            Hypercall::EventChannelOp,
            EVTCHNOP_SEND,
            &mut EvtchnPort { port },
        )
    }

    pub fn evtchn_close(self, port: u32) -> i64 {
        self.call_with(
            Hypercall::EventChannelOp,
            EVTCHNOP_CLOSE,
            &mut EvtchnPort { port },
        )
    }

    /// GNTTABOP_copy over `ops`.
    ///
    /// # Safety
    /// Every frame the ops name as a destination must be free to change.
    pub unsafe fn grant_copy(self, ops: &mut [GnttabCopy]) -> i64 {
        let count = ops.len() as u64;
        let arg = ops.as_mut_ptr() as u64;
        // SAFETY: the ops are lent mutably; the caller vouches for the
        // frames they name.
        unsafe { self.call(Hypercall::GrantTableOp, [GNTTABOP_COPY, arg, count, 0, 0]) }
    }

    /// SCHEDOP_shutdown; returns only if the hypervisor refused.
    pub fn shutdown(self, reason: u32) -> i64 {
        self.call_with(
            Hypercall::SchedOp,
            SCHEDOP_SHUTDOWN,
            &mut SchedShutdown { reason },
        )
    }
}

// ------------------------------------------- shared info and the upcall

/// x86's vcpu_info is 64 bytes, and shared_info holds
/// XEN_LEGACY_MAX_VCPUS (32) of them before the event bitmaps.
const VCPU_INFO_SIZE: usize = 64;
const LEGACY_MAX_VCPUS: usize = 32;
/// vcpu_info of vCPU 0: upcall_pending is byte 0 and upcall_mask byte 1
/// of word 0; evtchn_pending_sel is word 1.
const UPCALL_PENDING_BYTE: u64 = 0xff;
const UPCALL_MASK_BYTE: u64 = 0xff << 8;
const PENDING_SEL_WORD: usize = 1;
/// evtchn_pending at byte 2048, evtchn_mask at 2560: 64 words each.
pub const EVTCHN_PENDING_OFFSET: usize = VCPU_INFO_SIZE * LEGACY_MAX_VCPUS;
pub const EVTCHN_MASK_OFFSET: usize = EVTCHN_PENDING_OFFSET + 64 * 8;
/// Ports the 2-level event ABI covers.
pub const EVTCHN_2L_PORTS: u32 = 64 * 64;

/// Where XENMEM_add_to_physmap puts shared_info.
pub static SHARED_INFO: Page = Page::new();

/// Upcalls taken, ports the handler found pending (test-and-cleared) and
/// the last of them.
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);
pub static PORTS_SEEN: AtomicU64 = AtomicU64::new(0);
pub static LAST_PORT: AtomicU64 = AtomicU64::new(u64::MAX);

/// The word and bit of `port` in an event bitmap at `offset`.
fn port_bit(offset: usize, port: u32) -> Option<(&'static AtomicU64, u64)> {
    let port = usize::try_from(port).ok()?;
    let word = SHARED_INFO.word(offset / 8 + port / 64)?;
    Some((word, 1 << (port % 64)))
}

/// Readies `port` for delivery: not masked, nothing stale pending, and
/// vCPU 0 not masking upcalls.
pub fn evtchn_prepare(port: u32) -> Result<(), Msg> {
    let ((mask, bit), (pending, _)) = port_bit(EVTCHN_MASK_OFFSET, port)
        .zip(port_bit(EVTCHN_PENDING_OFFSET, port))
        .ok_or_else(|| msg!("port {port} is outside the 2-level bitmaps"))?;
    mask.fetch_and(!bit, SeqCst);
    pending.fetch_and(!bit, SeqCst);
    // Binding made the new port pending once (Xen does, so that an event
    // sent to the unbound end is not lost): drop that upcall too, so the
    // check counts only what the send delivers.
    if let Some(vcpu0) = SHARED_INFO.word(0) {
        vcpu0.fetch_and(!(UPCALL_MASK_BYTE | UPCALL_PENDING_BYTE), SeqCst);
    }
    if let Some(sel) = SHARED_INFO.word(PENDING_SEL_WORD) {
        sel.store(0, SeqCst);
    }
    UPCALLS.store(0, SeqCst);
    PORTS_SEEN.store(0, SeqCst);
    LAST_PORT.store(u64::MAX, SeqCst);
    Ok(())
}

/// Masks `port` in shared_info (2-level ABI): events still become pending
/// but raise no upcall.
pub fn evtchn_mask(port: u32) -> Result<(), Msg> {
    let (mask, bit) = port_bit(EVTCHN_MASK_OFFSET, port)
        .ok_or_else(|| msg!("port {port} is outside the 2-level bitmaps"))?;
    mask.fetch_or(bit, SeqCst);
    Ok(())
}

/// The set bits of `v`, lowest first.
fn set_bits(mut v: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        if v == 0 {
            return None;
        }
        let bit = v.trailing_zeros() as usize;
        v &= v - 1;
        Some(bit)
    })
}

/// The upcall vector's handler (called from boot.rs with IF clear): as
/// Linux does, clear upcall_pending, take pending_sel, then test-and-clear
/// each pending, unmasked port of the words it names.
pub extern "C" fn upcall() {
    UPCALLS.fetch_add(1, SeqCst);
    if let Some(vcpu0) = SHARED_INFO.word(0) {
        vcpu0.fetch_and(!UPCALL_PENDING_BYTE, SeqCst);
    }
    let selected = SHARED_INFO
        .word(PENDING_SEL_WORD)
        .map_or(0, |w| w.swap(0, SeqCst));
    for index in set_bits(selected) {
        let pending = SHARED_INFO.word(EVTCHN_PENDING_OFFSET / 8 + index);
        let mask = SHARED_INFO.word(EVTCHN_MASK_OFFSET / 8 + index);
        let (Some(pending), Some(mask)) = (pending, mask) else {
            continue;
        };
        for bit in set_bits(pending.load(SeqCst) & !mask.load(SeqCst)) {
            if pending.fetch_and(!(1 << bit), SeqCst) & (1 << bit) != 0 {
                PORTS_SEEN.fetch_add(1, SeqCst);
                LAST_PORT.store((index * 64 + bit) as u64, SeqCst);
            }
        }
    }
}

// ---------------------------------------------------------------- viridian

/// Leaves 0x40000000 (signature, highest leaf), 0x40000001 (interface id)
/// and 0x40000003 (features: EAX is the partition privilege mask's low
/// half).
pub const HV_CPUID_VENDOR: u32 = 0x4000_0000;
pub const HV_CPUID_INTERFACE: u32 = 0x4000_0001;
pub const HV_CPUID_FEATURES: u32 = 0x4000_0003;
pub const HV_SIGNATURE: [u8; 12] = *b"Microsoft Hv";
/// "Hv#1".
pub const HV_INTERFACE_HV1: u32 = 0x3123_7648;
/// The vendor leaf must reach at least the implementation-limits leaf.
pub const HV_MIN_MAX_LEAF: u32 = 0x4000_0005;
/// 0x40000003 EAX bits.
pub const HV_TIME_REF_COUNT_AVAILABLE: u32 = 1 << 1;
pub const HV_APIC_ACCESS_AVAILABLE: u32 = 1 << 4;
pub const HV_HYPERCALL_AVAILABLE: u32 = 1 << 5;
pub const HV_VP_INDEX_AVAILABLE: u32 = 1 << 6;
pub const HV_ACCESS_FREQUENCY_MSRS: u32 = 1 << 11;

pub const HV_X64_MSR_GUEST_OS_ID: u32 = 0x4000_0000;
pub const HV_X64_MSR_HYPERCALL: u32 = 0x4000_0001;
pub const HV_X64_MSR_VP_INDEX: u32 = 0x4000_0002;
pub const HV_X64_MSR_TIME_REF_COUNT: u32 = 0x4000_0020;
pub const HV_X64_MSR_TSC_FREQUENCY: u32 = 0x4000_0022;
pub const HV_X64_MSR_APIC_FREQUENCY: u32 = 0x4000_0023;
pub const HV_X64_MSR_EOI: u32 = 0x4000_0070;
pub const HV_X64_MSR_TPR: u32 = 0x4000_0072;
/// HV_X64_MSR_HYPERCALL bit 0: the page is enabled.
pub const HV_HYPERCALL_ENABLE: u64 = 1;

/// Hypercall codes and statuses (TLFS).
pub const HVCALL_NOTIFY_LONG_SPIN_WAIT: u64 = 0x0008;
/// A code nothing defines.
pub const HVCALL_UNDEFINED: u64 = 0x0099;
pub const HV_STATUS_SUCCESS: u64 = 0;
pub const HV_STATUS_INVALID_HYPERCALL_CODE: u64 = 2;

/// What the hypervisor's viridian hypercall page must start with:
/// `mov eax, 0x80000000; vmcall; ret`.
pub const HV_HYPERCALL_STUB: [u8; 9] = [0xb8, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x01, 0xc1, 0xc3];

/// The viridian hypercall page.
static VIRIDIAN_PAGE: Page = Page::new();

/// Calls through the viridian hypercall page: only exists once the page
/// is enabled and holds exactly [`HV_HYPERCALL_STUB`].
#[derive(Clone, Copy)]
pub struct Viridian(());

impl Viridian {
    /// Enables the page through HV_X64_MSR_HYPERCALL and checks what the
    /// MSR reads back and what the page holds.
    pub fn enable() -> Result<Self, Msg> {
        let value = VIRIDIAN_PAGE.gpa() | HV_HYPERCALL_ENABLE;
        // SAFETY: the hypervisor writes the stub into VIRIDIAN_PAGE, which
        // nothing but this module touches, and only through atomics.
        unsafe { boot::wrmsr(HV_X64_MSR_HYPERCALL, value) }
            .map_err(|f| msg!("wrmsr HYPERCALL = {value:#x}: {f}"))?;
        let back = boot::rdmsr(HV_X64_MSR_HYPERCALL).map_err(|f| msg!("rdmsr HYPERCALL: {f}"))?;
        if back & HV_HYPERCALL_ENABLE == 0 || back & !0xfff != VIRIDIAN_PAGE.gpa() {
            return Err(msg!("HYPERCALL reads {back:#x}, wrote {value:#x}"));
        }
        let head: [u8; 9] = core::array::from_fn(|i| VIRIDIAN_PAGE.byte(i).unwrap_or(0));
        if head != HV_HYPERCALL_STUB {
            return Err(msg!("page starts {head:02x?}"));
        }
        Ok(Self(()))
    }

    /// A hypercall with `control` in RCX (a code, no input or output
    /// pages): RAX, the status.
    pub fn call(self, control: u64) -> u64 {
        let status: u64;
        // SAFETY: `enable` checked that the page holds exactly the stub
        // `mov eax, 0x80000000; vmcall; ret`; the input and output page
        // addresses are 0, so the hypervisor is given no memory of ours.
        // Every register it might change is declared clobbered.
        unsafe {
            asm!(
                "call rax",
                inout("rax") VIRIDIAN_PAGE.gpa() => status,
                inout("rcx") control => _,
                inout("rdx") 0u64 => _,
                inout("r8") 0u64 => _,
                out("rsi") _, out("rdi") _, out("r9") _, out("r10") _, out("r11") _,
            )
        };
        status
    }
}
