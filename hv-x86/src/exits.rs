//! VM exits: what each one means for the domain that caused it.
//!
//! Every exit is guest input. An instruction the guest may not execute
//! becomes the exception real hardware would raise (#GP, #UD) and a log
//! line; an access to guest-physical memory nothing is mapped at becomes
//! #GP(0) (the guest-fault path); a state the guest cannot leave (a triple
//! fault, a halt with interrupts off, an event delivery that faults on
//! unmapped memory) crashes that domain alone. Nothing here may panic on
//! what a guest does.
//!
//! Hypercalls: VMCALL with Xen's x86 ABI (number in rax; arguments in rdi,
//! rsi, rdx, r10, r8 in 64-bit mode, ebx, ecx, edx, esi, edi otherwise) go
//! to the common dispatcher; with eax bit 31 set and viridian on, to the
//! Hyper-V hypercalls.

use alloc::vec::Vec;
use core::fmt;

use common::xen::abi::{self, DomId};
use common::xen::{self, Action, Env, HostFrame, Page, Xen};
use hv_x86::ept::Perm;
use hv_x86::gwalk::{self, Access, GuestPhys, Paging};
use hv_x86::viridian::{self, Msr};
use hv_x86::vmx::{self, CrAccess, EptViolation, IntrInfo, IoExit, exit, field};
use hv_x86::xencpuid;

use crate::domain::{Dom, GPA_LIMIT};
use crate::hw;
use crate::log::log;
use crate::vcpu::{vmread, vmwrite};
use crate::vmm::Hv;

/// What the scheduler does after an exit.
#[derive(Debug)]
pub enum Outcome {
    /// Enter the same domain again.
    Continue,
    /// Let another runnable domain have the CPU.
    Yield,
    /// Wait for an event (HLT, SCHEDOP_block).
    Block,
    /// The domain asked to shut down with this SHUTDOWN_* reason.
    Shutdown(u32),
    /// Another domain shuts down (the caller holds CAP_CONTROL).
    RemoteShutdown(DomId, u32),
    /// The domain is crashed.
    Crash(Reason),
}

/// Why a domain was crashed (for the log line).
#[derive(Debug)]
pub enum Reason {
    TripleFault,
    HaltedForGood,
    FaultInDelivery(u64),
    EntryFailed(u32, u64),
    Unhandled(u32),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TripleFault => f.write_str("triple fault"),
            Self::HaltedForGood => f.write_str("halted with interrupts off: nothing can wake it"),
            Self::FaultInDelivery(gpa) => write!(
                f,
                "event delivery touched guest-physical {gpa:#x}, where nothing is mapped"
            ),
            Self::EntryFailed(reason, qual) => write!(
                f,
                "VM entry failed (reason {}, qualification {qual:#x}): bad guest state",
                reason & 0xffff
            ),
            Self::Unhandled(reason) => {
                write!(f, "unhandled VM exit {} ({})", reason, exit::name(reason))
            }
        }
    }
}

const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const CR0_PE: u64 = 1 << 0;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const CR4_PCIDE: u64 = 1 << 17;
const RFLAGS_IF: u64 = 1 << 9;
const VECTOR_UD: u8 = 6;
const VECTOR_GP: u8 = 13;
/// HVM_PARAM_CALLBACK_IRQ type 2: the upcall is this vector.
const CALLBACK_TYPE_VECTOR: u64 = 2;

/// A domain's RAM and mappings, as guest-physical reads for the walker.
struct Phys<'a>(&'a Dom);

impl GuestPhys for Phys<'_> {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let (hpa, _) = self.0.translate(gpa)?;
        if !hpa.is_multiple_of(8) {
            return None;
        }
        // SAFETY: `hpa` is inside a page the domain's EPT maps (its RAM or
        // a hypervisor page given to it), identity mapped and aligned; the
        // guest is not running while the hypervisor reads it.
        Some(unsafe { core::ptr::read_volatile(hpa as *const u64) })
    }

    fn read_u32(&self, gpa: u64) -> Option<u32> {
        let (hpa, _) = self.0.translate(gpa)?;
        if !hpa.is_multiple_of(4) {
            return None;
        }
        // SAFETY: as in `read_u64`.
        Some(unsafe { core::ptr::read_volatile(hpa as *const u32) })
    }
}

/// The architecture's side of the Xen core for one exit.
pub struct XenEnv<'a> {
    pub doms: &'a [Option<Dom>],
    /// Index of the calling domain.
    pub caller: usize,
    pub paging: Paging,
    pub hv: &'a Hv,
}

impl XenEnv<'_> {
    fn dom(&self, id: DomId) -> Option<&Dom> {
        self.doms.iter().flatten().find(|d| d.id == id)
    }

    fn caller(&self) -> Option<&Dom> {
        self.doms.get(self.caller)?.as_ref()
    }

    /// Runs `f` on each host-physical piece of the caller's virtual range.
    fn each_piece(
        &self,
        va: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), i32> {
        let dom = self.caller().ok_or(abi::EFAULT)?;
        let acc = if write { Access::WRITE } else { Access::READ };
        let mut pieces: Vec<(u64, usize, usize)> = Vec::new();
        for c in gwalk::chunks(&Phys(dom), self.paging, va, len, acc) {
            let c = c.map_err(|_| abi::EFAULT)?;
            let (hpa, writable) = dom.translate(c.gpa).ok_or(abi::EFAULT)?;
            if write && !writable {
                return Err(abi::EFAULT);
            }
            pieces.push((hpa, c.offset, c.len));
        }
        for (hpa, off, n) in pieces {
            f(hpa, off, n);
        }
        Ok(())
    }
}

impl Env for XenEnv<'_> {
    fn now_ns(&self) -> u64 {
        self.hv.now_ns()
    }

    fn read_virt(&self, va: u64, out: &mut [u8]) -> Result<(), i32> {
        let len = out.len();
        self.each_piece(va, len, false, |hpa, off, n| {
            // SAFETY: [hpa, hpa + n) lies in one page the caller's EPT maps
            // (checked per chunk), identity mapped; `out[off..off + n]` is in
            // bounds (chunks cover exactly `len` bytes).
            unsafe {
                core::ptr::copy_nonoverlapping(hpa as *const u8, out.as_mut_ptr().add(off), n)
            }
        })
    }

    fn write_virt(&self, va: u64, data: &[u8]) -> Result<(), i32> {
        self.each_piece(va, data.len(), true, |hpa, off, n| {
            // SAFETY: as in `read_virt`, and the page is mapped writable.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr().add(off), hpa as *mut u8, n) }
        })
    }

    fn virt_to_phys(&self, va: u64, write: bool) -> Result<u64, i32> {
        let dom = self.caller().ok_or(abi::EFAULT)?;
        let acc = if write { Access::WRITE } else { Access::READ };
        gwalk::translate(&Phys(dom), self.paging, va, acc).map_err(|_| abi::EFAULT)
    }

    fn ram_page(&self, dom: DomId, gfn: u64) -> Option<&Page> {
        let d = self.dom(dom)?;
        if gfn >= d.ram.len() / 4096 {
            return None;
        }
        let hpa = d.ram.host() + gfn * 4096;
        // SAFETY: the frame is inside the domain's RAM allocation, which
        // lives as long as the domain (longer than this borrow of the
        // domain table); Page is a page of atomics, so the guest writing it
        // concurrently is allowed.
        Some(unsafe { &*(hpa as *const Page) })
    }

    fn map_frame(&self, dom: DomId, gfn: u64, frame: HostFrame, writable: bool) -> Result<(), i32> {
        let d = self.dom(dom).ok_or(abi::ESRCH)?;
        let gpa = gfn
            .checked_mul(4096)
            .filter(|&g| g < GPA_LIMIT)
            .ok_or(abi::EINVAL)?;
        let perm = Perm {
            read: true,
            write: writable,
            exec: false,
        };
        d.ept
            .borrow_mut()
            .map(&mut *d.tables.borrow_mut(), gpa, frame.0, 4096, perm)
            .map_err(|_| abi::ENOMEM)
    }

    fn unmap_frame(&self, dom: DomId, gfn: u64) -> Result<(), i32> {
        let d = self.dom(dom).ok_or(abi::ESRCH)?;
        let gpa = gfn
            .checked_mul(4096)
            .filter(|&g| g < GPA_LIMIT)
            .ok_or(abi::EINVAL)?;
        d.ept
            .borrow_mut()
            .unmap(&mut *d.tables.borrow_mut(), gpa, 4096)
            .map_err(|_| abi::ENOMEM)
    }

    fn restore_ram(&self, dom: DomId, gfn: u64) -> Result<(), i32> {
        let d = self.dom(dom).ok_or(abi::ESRCH)?;
        if gfn >= d.ram.len() / 4096 {
            return Err(abi::EINVAL);
        }
        d.ept
            .borrow_mut()
            .map(
                &mut *d.tables.borrow_mut(),
                gfn * 4096,
                d.ram.host() + gfn * 4096,
                4096,
                Perm::RWX,
            )
            .map_err(|_| abi::ENOMEM)
    }

    fn raise_upcall(&self, dom: DomId, _vcpu: u32) {
        if let Some(d) = self.dom(dom) {
            d.kicked.set(true);
        }
    }

    fn console_write(&self, dom: DomId, bytes: &[u8]) {
        if let Some(d) = self.dom(dom) {
            d.console_write(bytes);
        }
    }

    fn arch_features(&self) -> u32 {
        // XENFEAT_hvm_callback_vector: the upcall can be a plain vector.
        1 << 8
    }

    fn capabilities(&self) -> &'static str {
        "hvm-3.0-x86_64 "
    }

    fn log(&self, args: fmt::Arguments) {
        log!("{}", args);
    }
}

/// The current vCPU's paging state (for walking its page tables).
pub fn paging(hv: &Hv) -> Paging {
    let mut p = Paging::new(
        vmread(field::GUEST_CR0),
        vmread(field::GUEST_CR3),
        vmread(field::GUEST_CR4),
        vmread(field::GUEST_IA32_EFER),
    );
    p.maxphyaddr = hv.maxphyaddr;
    p
}

/// Moves the guest past the instruction that exited.
fn advance() {
    let len = vmread(field::EXIT_INSTRUCTION_LEN);
    let _ = vmwrite(field::GUEST_RIP, vmread(field::GUEST_RIP).wrapping_add(len));
    // The instruction completed: STI/MOV SS blocking no longer applies.
    let intr = vmread(field::GUEST_INTERRUPTIBILITY);
    if intr & 3 != 0 {
        let _ = vmwrite(field::GUEST_INTERRUPTIBILITY, intr & !3);
    }
}

/// Delivers hardware exception `vector` to the guest at the next entry.
/// In real mode exceptions push no error code (and VM entry refuses one).
fn inject(vector: u8, error: Option<u32>) {
    let error = error.filter(|_| vmread(field::GUEST_CR0) & CR0_PE != 0);
    let _ = vmwrite(
        field::VM_ENTRY_INTR_INFO,
        u64::from(IntrInfo::hardware_exception(vector, error).0),
    );
    if let Some(e) = error {
        let _ = vmwrite(field::ENTRY_EXCEPTION_ERROR_CODE, u64::from(e));
    }
}

fn inject_gp() {
    inject(VECTOR_GP, Some(0));
}

/// Keeps the "IA-32e mode guest" entry control equal to EFER.LMA.
fn sync_long_mode(efer: u64) {
    crate::vcpu::set_long_mode_entry(efer & EFER_LMA != 0);
}

/// CR0 as the guest sees it now: the bits it owns from the real register
/// (PE and PG change without an exit), the others from its shadow.
fn guest_cr0(dom: &Dom, hv: &Hv) -> u64 {
    let mask = hv.controls.guest_cr0_mask();
    (vmread(field::GUEST_CR0) & !mask) | (dom.vcpu.cr0_shadow & mask)
}

/// Whether the guest runs 64-bit code (EFER.LMA and CS.L).
fn in_64bit_mode() -> bool {
    vmread(field::GUEST_IA32_EFER) & EFER_LMA != 0
        && vmread(field::GUEST_CS_ACCESS_RIGHTS) & (1 << 13) != 0
}

/// Handles exit `reason` of domain `i`.
pub fn handle(reason: u32, i: usize, doms: &mut [Option<Dom>], xen: &mut Xen, hv: &Hv) -> Outcome {
    if reason & (1 << 31) != 0 {
        return Outcome::Crash(Reason::EntryFailed(
            reason,
            vmread(field::EXIT_QUALIFICATION),
        ));
    }
    let basic = reason & 0xffff;
    // The guest may have switched long mode on or off by itself (CR0.PG
    // is not intercepted): the entry control must follow EFER.LMA.
    sync_long_mode(vmread(field::GUEST_IA32_EFER));
    // An exit in the middle of delivering an event: deliver it again on
    // the next entry (unless this exit is the delivery failing for good).
    let vectoring = vmread(field::IDT_VECTORING_INFO);
    if vectoring & (1 << 31) != 0 && basic != exit::EPT_VIOLATION && basic != exit::TRIPLE_FAULT {
        let _ = vmwrite(field::VM_ENTRY_INTR_INFO, vectoring & !(1 << 12));
        let _ = vmwrite(
            field::ENTRY_EXCEPTION_ERROR_CODE,
            vmread(field::IDT_VECTORING_ERROR),
        );
        let _ = vmwrite(
            field::ENTRY_INSTRUCTION_LEN,
            vmread(field::EXIT_INSTRUCTION_LEN),
        );
    }
    let Some(dom) = doms.get(i).and_then(Option::as_ref) else {
        return Outcome::Continue;
    };
    match basic {
        exit::TRIPLE_FAULT => Outcome::Crash(Reason::TripleFault),
        exit::CPUID => {
            cpuid(doms, i);
            advance();
            Outcome::Continue
        }
        exit::RDMSR | exit::WRMSR => msr(basic == exit::WRMSR, doms, i, hv),
        exit::IO => {
            io(doms, i);
            Outcome::Continue
        }
        exit::EPT_VIOLATION => {
            let gpa = vmread(field::GUEST_PHYSICAL_ADDRESS);
            if vectoring & (1 << 31) != 0 {
                return Outcome::Crash(Reason::FaultInDelivery(gpa));
            }
            let q = EptViolation::decode(vmread(field::EXIT_QUALIFICATION));
            let what = if q.fetch {
                "instruction fetch"
            } else if q.write {
                "write"
            } else {
                "read"
            };
            dom.refuse(format_args!(
                "{what} of guest-physical {gpa:#x} at rip {:#x}: nothing mapped there; #GP injected",
                vmread(field::GUEST_RIP)
            ));
            inject_gp();
            Outcome::Continue
        }
        exit::HLT => {
            advance();
            let rflags = vmread(field::GUEST_RFLAGS);
            if upcall_ready(dom, xen, doms, i, hv).is_some() && rflags & RFLAGS_IF != 0 {
                Outcome::Continue
            } else if rflags & RFLAGS_IF == 0 {
                Outcome::Crash(Reason::HaltedForGood)
            } else {
                Outcome::Block
            }
        }
        exit::VMCALL => vmcall(doms, i, xen, hv),
        exit::CR_ACCESS => {
            cr_access(doms, i, hv);
            Outcome::Continue
        }
        exit::XSETBV
        | exit::GETSEC
        | exit::VMCLEAR..=exit::VMXON
        | exit::INVEPT
        | exit::INVVPID => {
            // No XSAVE (hidden in CPUID) and no nested VMX.
            dom.refuse(format_args!(
                "{} at rip {:#x}: #UD injected",
                exit::name(basic),
                vmread(field::GUEST_RIP)
            ));
            inject(VECTOR_UD, None);
            Outcome::Continue
        }
        exit::INVD | exit::WBINVD | exit::MWAIT | exit::MONITOR => {
            // Nothing for a guest to flush or wait on that it owns alone.
            advance();
            Outcome::Continue
        }
        exit::RDPMC => {
            inject_gp();
            Outcome::Continue
        }
        exit::INTERRUPT_WINDOW => {
            crate::vcpu::set_interrupt_window(false);
            Outcome::Continue
        }
        exit::PAUSE => {
            advance();
            Outcome::Yield
        }
        exit::PREEMPTION_TIMER => Outcome::Yield,
        exit::EXTERNAL_INTERRUPT | exit::EXCEPTION_NMI | exit::INIT => Outcome::Continue,
        _ => Outcome::Crash(Reason::Unhandled(basic)),
    }
}

/// The vector to inject now if the domain has an upcall pending.
pub fn upcall_ready(dom: &Dom, xen: &Xen, doms: &[Option<Dom>], i: usize, hv: &Hv) -> Option<u8> {
    let xd = xen.domain(dom.id)?;
    let cb = xd.param(abi::HVM_PARAM_CALLBACK_IRQ);
    if cb >> 56 != CALLBACK_TYPE_VECTOR {
        return None;
    }
    let vector = (cb & 0xff) as u8;
    // Below 16 is no interrupt vector; at or under the task priority the
    // guest has said it will not take it now.
    if vector < 16 || vector >> 4 <= dom.lapic.tpr() >> 4 {
        return None;
    }
    let env = XenEnv {
        doms,
        caller: i,
        paging: paging(hv),
        hv,
    };
    xd.upcall_pending(&env, 0).then_some(vector)
}

/// Before entering domain `i`: deliver its pending upcall, or ask for an
/// exit as soon as it can take one.
pub fn prepare_entry(doms: &[Option<Dom>], i: usize, xen: &Xen, hv: &Hv) {
    let Some(dom) = doms.get(i).and_then(Option::as_ref) else {
        return;
    };
    let Some(vector) = upcall_ready(dom, xen, doms, i, hv) else {
        return;
    };
    let busy = vmread(field::VM_ENTRY_INTR_INFO) & (1 << 31) != 0;
    let open = vmread(field::GUEST_RFLAGS) & RFLAGS_IF != 0
        && vmread(field::GUEST_INTERRUPTIBILITY) & 3 == 0;
    if !busy && open {
        let _ = vmwrite(
            field::VM_ENTRY_INTR_INFO,
            u64::from(IntrInfo::external(vector).0),
        );
    } else {
        crate::vcpu::set_interrupt_window(true);
    }
}

fn cpuid(doms: &mut [Option<Dom>], i: usize) {
    let Some(dom) = doms.get_mut(i).and_then(Option::as_mut) else {
        return;
    };
    let regs = &mut dom.vcpu.regs;
    let (leaf, sub) = (regs.rax as u32, regs.rcx as u32);
    let mask = dom.viridian.mask();
    let r = if let Some(r) = viridian::cpuid(mask, leaf, sub, 1) {
        r
    } else if let Some(r) = xencpuid::cpuid(mask != 0, leaf, sub, dom.id, 0) {
        r
    } else if (0x4000_0000..0x5000_0000).contains(&leaf) {
        [0; 4]
    } else {
        let mut r = hw::cpuid(leaf, sub);
        match leaf {
            1 => {
                // No VMX, SMX, XSAVE/AVX (their state is not switched), no
                // MONITOR; x2APIC absent; "running under a hypervisor" set.
                r[2] &= !((1 << 3)
                    | (1 << 5)
                    | (1 << 6)
                    | (1 << 21)
                    | (1 << 26)
                    | (1 << 27)
                    | (1 << 28));
                r[2] |= 1 << 31;
                r[1] &= 0x00ff_ffff; // initial APIC id 0
            }
            7 if sub == 0 => {
                // No AVX2/AVX-512 (XSAVE state), no speculation-control
                // MSRs the hypervisor does not emulate.
                r[1] &= !((1 << 5)
                    | (1 << 16)
                    | (1 << 17)
                    | (1 << 21)
                    | (1 << 26)
                    | (1 << 27)
                    | (1 << 28)
                    | (1 << 30)
                    | (1 << 31));
                r[2] = 0;
                r[3] &= !(0xfc00_0000);
            }
            7 | 0xd => r = [0; 4],
            _ => {}
        }
        r
    };
    regs.rax = u64::from(r[0]);
    regs.rbx = u64::from(r[1]);
    regs.rcx = u64::from(r[2]);
    regs.rdx = u64::from(r[3]);
}

/// Writes `bytes` at guest-physical `gpa` of `dom` (a hypercall page);
/// false when any of it is not writable RAM.
fn fill_page(dom: &Dom, gpa: u64, bytes: &[u8]) -> bool {
    if !gpa.is_multiple_of(4096) || bytes.len() > 4096 {
        return false;
    }
    match dom.translate(gpa) {
        Some((hpa, true)) => {
            // SAFETY: `hpa` is a writable page the domain's EPT maps,
            // identity mapped; `bytes` fits in it (checked).
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), hpa as *mut u8, bytes.len()) };
            true
        }
        _ => false,
    }
}

fn msr(write: bool, doms: &mut [Option<Dom>], i: usize, hv: &Hv) -> Outcome {
    let Some(dom) = doms.get_mut(i).and_then(Option::as_mut) else {
        return Outcome::Continue;
    };
    let idx = dom.vcpu.regs.rcx as u32;
    let value = (dom.vcpu.regs.rdx << 32) | (dom.vcpu.regs.rax & 0xffff_ffff);
    let mut platform = crate::vmm::Platform {
        hv,
        lapic: &mut dom.lapic,
    };
    let v = if write {
        dom.viridian.wrmsr(0, idx, value, &mut platform)
    } else {
        dom.viridian.rdmsr(0, idx, &mut platform)
    };
    let result: Result<Option<u64>, ()> = match v {
        Msr::Value(x) => Ok(Some(x)),
        Msr::Done => Ok(None),
        Msr::Gp => Err(()),
        Msr::FillHypercallPage { gpa } => {
            if fill_page(dom, gpa, &viridian::hypercall_page()) {
                Ok(None)
            } else {
                Err(())
            }
        }
        Msr::Ipi { icr, reason } => {
            // One vCPU per domain: there is nobody else to interrupt.
            dom.refuse(format_args!(
                "IPI {icr:#x} through the viridian ICR not delivered: {reason:?}"
            ));
            Ok(None)
        }
        Msr::NotMine => arch_msr(write, idx, value, dom, hv),
    };
    match result {
        Ok(read) => {
            if let Some(x) = read {
                dom.vcpu.regs.rax = x & 0xffff_ffff;
                dom.vcpu.regs.rdx = x >> 32;
            }
            advance();
        }
        Err(()) => {
            dom.refuse(format_args!(
                "{} of MSR {idx:#x}{}: #GP injected",
                if write { "wrmsr" } else { "rdmsr" },
                if write {
                    alloc::format!(" = {value:#x}")
                } else {
                    alloc::string::String::new()
                }
            ));
            inject_gp();
        }
    }
    Outcome::Continue
}

/// MSRs outside viridian: the Xen hypercall page, and what a guest kernel
/// touches on its way up. Ok(Some(v)) for a read, Ok(None) for a write
/// done, Err for #GP.
fn arch_msr(write: bool, idx: u32, value: u64, dom: &mut Dom, hv: &Hv) -> Result<Option<u64>, ()> {
    use vmx::msr::*;
    let viridian_on = dom.viridian.mask() != 0;
    if write && let Some(req) = xencpuid::hypercall_page_request(viridian_on, idx, value) {
        let Ok(gpa) = req else { return Err(()) };
        return if fill_page(dom, gpa, &xencpuid::hypercall_page()) {
            Ok(None)
        } else {
            Err(())
        };
    }
    let canonical = |a: u64| ((a as i64) << 16 >> 16) as u64 == a;
    let rw = |f: u32, ok: bool| -> Result<Option<u64>, ()> {
        if !write {
            Ok(Some(vmread(f)))
        } else if ok {
            vmwrite(f, value).map(|_| None).map_err(|_| ())
        } else {
            Err(())
        }
    };
    match idx {
        0x10 => Ok((!write).then(hw::rdtsc)),    // TSC: writes ignored
        0x1b if !write => Ok(Some(0xfee0_0900)), // APIC base: enabled, BSP
        0x1b => Ok(None),
        IA32_FEATURE_CONTROL if !write => Ok(Some(1)), // locked, VMX off
        0x8b => Ok((!write).then_some(0)),             // microcode revision
        0xfe if !write => Ok(Some(0)),                 // MTRRcap: none
        0x2ff if !write => Ok(Some(0x806)),            // MTRRs on, default WB
        0x2ff => Ok(None),
        0x1a0 if !write => Ok(Some(1)), // misc enable: fast strings
        0x1a0 => Ok(None),
        IA32_SYSENTER_CS => rw(field::GUEST_SYSENTER_CS, true),
        IA32_SYSENTER_ESP => rw(field::GUEST_SYSENTER_ESP, canonical(value)),
        IA32_SYSENTER_EIP => rw(field::GUEST_SYSENTER_EIP, canonical(value)),
        IA32_FS_BASE => rw(field::GUEST_FS_BASE, canonical(value)),
        IA32_GS_BASE => rw(field::GUEST_GS_BASE, canonical(value)),
        IA32_PAT => {
            let valid = (0..8).all(|b| matches!((value >> (b * 8)) & 0xff, 0 | 1 | 4 | 5 | 6 | 7));
            rw(field::GUEST_IA32_PAT, valid)
        }
        IA32_EFER if !write => Ok(Some(vmread(field::GUEST_IA32_EFER))),
        IA32_EFER => {
            if value & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE) != 0 {
                return Err(());
            }
            // A bit the CPU lacks would make the next VM entry fail.
            let ext = hw::cpuid(0x8000_0001, 0)[3];
            let missing = [(EFER_SCE, 11), (EFER_LME, 29), (EFER_NXE, 20)]
                .iter()
                .any(|&(bit, feature)| value & bit != 0 && ext & (1 << feature) == 0);
            if missing {
                return Err(());
            }
            let cur = vmread(field::GUEST_IA32_EFER);
            // LME may not change while paging is on; LMA is the CPU's.
            let paging_on = vmread(field::GUEST_CR0) & CR0_PG != 0;
            if paging_on && (value ^ cur) & EFER_LME != 0 {
                return Err(());
            }
            let new = (value & !EFER_LMA) | (cur & EFER_LMA);
            vmwrite(field::GUEST_IA32_EFER, new).map_err(|_| ())?;
            sync_long_mode(new);
            Ok(None)
        }
        _ => {
            if let Some(v) = dom.vcpu.msrs.get(idx) {
                if !write {
                    return Ok(Some(v));
                }
                return if dom.vcpu.msrs.set(idx, value, hv.rdtscp) {
                    Ok(None)
                } else {
                    Err(())
                };
            }
            Err(())
        }
    }
}

/// The virtual COM1 (16550 registers at 0x3f8..0x3ff) and the 0xE9 debug
/// port carry the guest's console; other ports read as all ones and drop
/// writes, as a PC does for ports nothing decodes.
fn io(doms: &mut [Option<Dom>], i: usize) {
    let Some(dom) = doms.get_mut(i).and_then(Option::as_mut) else {
        return;
    };
    let qual = vmread(field::EXIT_QUALIFICATION);
    advance();
    let Ok(q) = IoExit::decode(qual) else {
        dom.refuse(format_args!(
            "I/O exit with qualification {qual:#x}: ignored"
        ));
        return;
    };
    if q.string {
        dom.refuse(format_args!("string I/O on port {:#x}: ignored", q.port));
        return;
    }
    let mask: u64 = match q.size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    };
    let al = dom.vcpu.regs.rax as u8;
    let value: Option<u64> = match (q.port, q.input) {
        (0x3f8, false) if dom.uart_lcr & 0x80 == 0 => {
            dom.console_write(&[al]);
            None
        }
        (0x3fb, false) => {
            dom.uart_lcr = al;
            None
        }
        (0xe9, false) => {
            dom.console_write(&[al]);
            None
        }
        (0x3f8..=0x3ff, false) => None,
        (0x3fd, true) => Some(0x60), // transmitter empty
        (0x3fa, true) => Some(0x01), // no interrupt pending
        (0x3fb, true) => Some(u64::from(dom.uart_lcr)),
        (0x3fe, true) => Some(0xb0), // DCD, DSR, CTS
        (0x3f8..=0x3ff, true) => Some(0),
        (port, input) => {
            dom.refuse(format_args!(
                "{} port {port:#x}: nothing there",
                if input { "in from" } else { "out to" }
            ));
            input.then_some(mask)
        }
    };
    if let Some(v) = value {
        let r = &mut dom.vcpu.regs.rax;
        *r = if q.size == 4 {
            v & mask
        } else {
            (*r & !mask) | (v & mask)
        };
    }
}

/// MOV to/from CR0, CR3, CR4 and CR8, and LMSW, when they exit: CR0/CR4
/// writes touching bits the hypervisor owns (the guest keeps its view in
/// the read shadows, the real registers keep the VMX-fixed bits), CR8
/// always (the guest's TPR lives in its vLAPIC, not in the host's), CR3
/// where the CPU forces it (no true controls).
fn cr_access(doms: &mut [Option<Dom>], i: usize, hv: &Hv) {
    let Some(dom) = doms.get_mut(i).and_then(Option::as_mut) else {
        return;
    };
    let q = CrAccess::decode(vmread(field::EXIT_QUALIFICATION));
    // Outside 64-bit mode the instruction moves 32 bits.
    let width = |v: u64| if in_64bit_mode() { v } else { v & 0xffff_ffff };
    let value = match q.access {
        vmx::CrAccessType::MovTo => width(dom.vcpu.regs.gpr(q.gpr)),
        vmx::CrAccessType::MovFrom => {
            let v = match q.cr {
                3 => vmread(field::GUEST_CR3),
                8 => u64::from(dom.lapic.tpr() >> 4),
                _ => 0,
            };
            dom.vcpu.regs.set_gpr(q.gpr, v);
            advance();
            return;
        }
        vmx::CrAccessType::Lmsw => {
            // LMSW sets PE, MP, EM, TS; it can set PE but never clear it.
            let old = guest_cr0(dom, hv);
            (old & !0xe) | u64::from(q.lmsw_source & 0xf) | (old & CR0_PE)
        }
        vmx::CrAccessType::Clts => guest_cr0(dom, hv) & !(1 << 3),
    };
    let (ok, flush) = match q.cr {
        0 => (write_cr0(dom, value, hv), true),
        3 => (write_cr3(dom, value, hv), true),
        4 => (write_cr4(dom, value, hv), true),
        8 if value >> 4 == 0 => {
            dom.lapic.set_tpr((value as u8) << 4);
            (true, false)
        }
        _ => (false, false),
    };
    if ok {
        advance();
        if flush {
            // The write took effect here, not in the guest: drop what the
            // guest's old paging mode cached.
            flush_guest_tlb(dom.id, hv);
        }
    } else {
        dom.refuse(format_args!(
            "mov to cr{} of {value:#x}: #GP injected",
            q.cr
        ));
        inject_gp();
    }
}

/// Drops the guest-virtual translations cached for domain `id` (its VPID,
/// or every VPID where the CPU can only do that). Without VPIDs every VM
/// entry flushes them anyway.
fn flush_guest_tlb(id: u16, hv: &Hv) {
    if let (Some(vpid), Some(kind)) = (hv.vpid_of(id), hv.controls.invvpid) {
        let _ = hw::invvpid(kind as u64, vpid);
    }
}

/// PAE paging outside long mode: the four PDPTEs at CR3 are loaded when
/// paging turns on or CR3/CR4 change, and the guest-state fields must hold
/// them when the hypervisor made that change. False (#GP, as the CPU
/// would raise) when one is unreadable or has reserved bits set.
fn load_pdptes(dom: &Dom, cr3: u64, hv: &Hv) -> bool {
    let base = cr3 & 0xffff_ffe0;
    let reserved = 0x1e6 | !((1u64 << hv.maxphyaddr) - 1);
    let fields = [
        field::GUEST_PDPTE0,
        field::GUEST_PDPTE1,
        field::GUEST_PDPTE2,
        field::GUEST_PDPTE3,
    ];
    let mut values = [0u64; 4];
    for (k, v) in values.iter_mut().enumerate() {
        let Some(e) = Phys(dom).read_u64(base + 8 * k as u64) else {
            return false;
        };
        if e & 1 != 0 && e & reserved != 0 {
            return false;
        }
        *v = e;
    }
    fields
        .iter()
        .zip(values)
        .all(|(&f, v)| vmwrite(f, v).is_ok())
}

/// Whether the guest is in PAE paging outside long mode with these values.
fn pae_legacy(cr0: u64, cr4: u64, efer: u64) -> bool {
    cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0 && efer & EFER_LMA == 0
}

fn write_cr0(dom: &mut Dom, v: u64, hv: &Hv) -> bool {
    if v >> 32 != 0 || (v & CR0_PG != 0 && v & CR0_PE == 0) || (v & CR0_NW != 0 && v & CR0_CD == 0)
    {
        return false;
    }
    let mut efer = vmread(field::GUEST_IA32_EFER);
    let was_paging = vmread(field::GUEST_CR0) & CR0_PG != 0;
    if v & CR0_PG != 0 && !was_paging && efer & EFER_LME != 0 {
        // Long mode comes on: PAE needed, and not from a 64-bit code
        // segment (CS.L must be clear until then).
        if dom.vcpu.cr4_shadow & CR4_PAE == 0
            || vmread(field::GUEST_CS_ACCESS_RIGHTS) & (1 << 13) != 0
        {
            return false;
        }
        efer |= EFER_LMA;
    } else if v & CR0_PG == 0 && was_paging {
        // Paging goes off: never from 64-bit code, never with PCIDE on.
        if in_64bit_mode() || dom.vcpu.cr4_shadow & CR4_PCIDE != 0 {
            return false;
        }
        efer &= !EFER_LMA;
    }
    if !was_paging
        && pae_legacy(v, dom.vcpu.cr4_shadow, efer)
        && !load_pdptes(dom, vmread(field::GUEST_CR3), hv)
    {
        return false;
    }
    dom.vcpu.cr0_shadow = v;
    let ok = vmwrite(field::GUEST_CR0, hv.controls.guest_cr0(v)).is_ok()
        && vmwrite(field::CR0_READ_SHADOW, v).is_ok()
        && vmwrite(field::GUEST_IA32_EFER, efer).is_ok();
    sync_long_mode(efer);
    ok
}

fn write_cr3(dom: &mut Dom, v: u64, hv: &Hv) -> bool {
    let efer = vmread(field::GUEST_IA32_EFER);
    // Bit 63 (keep PCID translations) is an instruction flag, not CR3, and
    // only exists with PCIDE.
    if efer & EFER_LMA != 0 && v >> 63 != 0 && dom.vcpu.cr4_shadow & CR4_PCIDE == 0 {
        return false;
    }
    let v = if efer & EFER_LMA != 0 {
        v & !(1 << 63)
    } else {
        v & 0xffff_ffff
    };
    if v >> hv.maxphyaddr != 0 {
        return false;
    }
    if pae_legacy(guest_cr0(dom, hv), dom.vcpu.cr4_shadow, efer) && !load_pdptes(dom, v, hv) {
        return false;
    }
    vmwrite(field::GUEST_CR3, v).is_ok()
}

fn write_cr4(dom: &mut Dom, v: u64, hv: &Hv) -> bool {
    let efer = vmread(field::GUEST_IA32_EFER);
    let lma = efer & EFER_LMA != 0;
    // UMIP and LA57: CPUID leaf 7 ECX, where they are announced, reads 0.
    const NOT_OFFERED: u64 = (1 << 11) | (1 << 12);
    if v & CR4_VMXE != 0
        || (lma && v & CR4_PAE == 0)
        || v & !hv.controls.guest_cr4_allowed() != 0
        || v & NOT_OFFERED != 0
    {
        return false;
    }
    // PCIDE only in long mode (VM entry would refuse it otherwise), and
    // only turned on with PCID 0 in CR3.
    let pcide_on = v & CR4_PCIDE != 0 && dom.vcpu.cr4_shadow & CR4_PCIDE == 0;
    if (!lma && v & CR4_PCIDE != 0) || (pcide_on && vmread(field::GUEST_CR3) & 0xfff != 0) {
        return false;
    }
    let paging_bits = CR4_PAE | (1 << 4) | (1 << 7); // PAE, PSE, PGE
    if (v ^ dom.vcpu.cr4_shadow) & paging_bits != 0
        && pae_legacy(guest_cr0(dom, hv), v, efer)
        && !load_pdptes(dom, vmread(field::GUEST_CR3), hv)
    {
        return false;
    }
    dom.vcpu.cr4_shadow = v;
    vmwrite(field::GUEST_CR4, hv.controls.guest_cr4(v)).is_ok()
        && vmwrite(field::CR4_READ_SHADOW, v).is_ok()
}

fn vmcall(doms: &mut [Option<Dom>], i: usize, xen: &mut Xen, hv: &Hv) -> Outcome {
    let Some(dom) = doms.get(i).and_then(Option::as_ref) else {
        return Outcome::Continue;
    };
    let regs = dom.vcpu.regs;
    let cpl = (vmread(field::GUEST_SS_ACCESS_RIGHTS) >> 5) & 3;
    let long = in_64bit_mode();
    let id = dom.id;
    let mut ret: u64;
    let mut outcome = Outcome::Continue;
    let mut cont: Option<[u64; 5]> = None;
    if cpl != 0 {
        ret = (-i64::from(abi::EPERM)) as u64;
    } else if regs.rax & 0x8000_0000 != 0 && dom.viridian.mask() != 0 {
        let Some(d) = doms.get_mut(i).and_then(Option::as_mut) else {
            return Outcome::Continue;
        };
        let (status, action) = d.viridian.hypercall(regs.rcx);
        ret = status;
        if matches!(action, Action::Yield) {
            outcome = Outcome::Yield;
        }
    } else {
        let trunc = |v: u64| if long { v } else { v & 0xffff_ffff };
        let nr = trunc(regs.rax);
        let args = if long {
            [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8]
        } else {
            [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi].map(trunc)
        };
        let reply = match xen::lockless(nr, args) {
            Some(r) => r,
            None => {
                let env = XenEnv {
                    doms,
                    caller: i,
                    paging: paging(hv),
                    hv,
                };
                xen::hypercall(xen, &env, id, 0, nr, args)
            }
        };
        ret = reply.ret as u64;
        cont = reply.cont;
        outcome = match reply.action {
            Action::None => Outcome::Continue,
            Action::Yield => Outcome::Yield,
            Action::Block => Outcome::Block,
            Action::Shutdown(r) => Outcome::Shutdown(r),
            Action::RemoteShutdown(d, r) => Outcome::RemoteShutdown(d, r),
        };
    }
    let Some(d) = doms.get_mut(i).and_then(Option::as_mut) else {
        return outcome;
    };
    let r = &mut d.vcpu.regs;
    match cont {
        // Not finished: the arguments say where to resume; VMCALL runs again.
        Some(a) if long => [r.rdi, r.rsi, r.rdx, r.r10, r.r8] = a,
        Some(a) => [r.rbx, r.rcx, r.rdx, r.rsi, r.rdi] = a,
        None => {
            if !long {
                ret &= 0xffff_ffff;
            }
            r.rax = ret;
            advance();
        }
    }
    outcome
}
