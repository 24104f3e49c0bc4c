//! The privileged instructions hv-x86 uses, each wrapped once: control and
//! model-specific registers, CPUID, the TSC, and the VMX instructions.
//!
//! Everything here is `unsafe` to call where the instruction can change
//! what memory means (CR0/CR3/CR4, MSRs, VMXON, VMPTRLD); the wrappers that
//! only read are safe. VMX instruction failures come back as
//! [`VmFail`], never as a fault.

use core::arch::asm;

/// A VMX instruction failed: `Invalid` (CF set: no current VMCS or bad
/// pointer) or `Valid` (ZF set: the VM-instruction error field says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid.
    Invalid,
    /// VMfailValid.
    Valid,
}

/// RFLAGS after a VMX instruction: CF or ZF set means it failed.
fn vm_result(rflags: u64) -> Result<(), VmFail> {
    if rflags & 1 != 0 {
        Err(VmFail::Invalid)
    } else if rflags & (1 << 6) != 0 {
        Err(VmFail::Valid)
    } else {
        Ok(())
    }
}

/// CPUID leaf `leaf`, subleaf `sub`: [eax, ebx, ecx, edx].
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; CR4.TSD is clear at CPL 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads MSR `msr`.
///
/// # Safety
/// `msr` must exist on this CPU (a missing one raises #GP, which the
/// hypervisor treats as a bug and panics on).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller vouches that the MSR exists; reading has no side
    // effect on memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes MSR `msr`.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it and keep the memory
/// model intact (EFER, PAT and the segment bases are the caller's to keep
/// consistent).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}

/// CR0.
pub fn cr0() -> u64 {
    let v;
    // SAFETY: reading CR0 has no side effect.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR3.
pub fn cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR4.
pub fn cr4() -> u64 {
    let v;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR2 (the last page-fault address; guests' value lives here too).
pub fn cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// The new value must keep paging, protection and caching as the running
/// code needs them (only NE and the VMX-fixed bits are changed here).
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
/// As for [`write_cr0`]: PAE and the paging bits must stay as they are.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Enters VMX operation with the VMXON region at physical `region`.
///
/// # Safety
/// `region` must be a 4 KiB-aligned page holding the VMCS revision id,
/// owned by this CPU's VMX operation until VMXOFF, and CR0/CR4 must meet
/// the VMX fixed bits.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller vouches for the region and the control registers.
    unsafe {
        asm!("vmxon [{}]", "pushfq", "pop {}", in(reg) &region, lateout(reg) rflags);
    }
    vm_result(rflags)
}

/// VMCLEAR of the VMCS at physical `vmcs`.
///
/// # Safety
/// `vmcs` must be a VMCS region this hypervisor owns.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller vouches for the region.
    unsafe {
        asm!("vmclear [{}]", "pushfq", "pop {}", in(reg) &vmcs, lateout(reg) rflags);
    }
    vm_result(rflags)
}

/// Makes the VMCS at physical `vmcs` current.
///
/// # Safety
/// As for [`vmclear`]; the region must hold the revision id.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller vouches for the region.
    unsafe {
        asm!("vmptrld [{}]", "pushfq", "pop {}", in(reg) &vmcs, lateout(reg) rflags);
    }
    vm_result(rflags)
}

/// Reads field `field` of the current VMCS.
pub fn vmread(field: u32) -> Result<u64, VmFail> {
    let (v, rflags): (u64, u64);
    // SAFETY: VMREAD only reads the current VMCS (or fails without effect
    // when there is none or the field does not exist).
    unsafe {
        asm!("vmread {}, {}", "pushfq", "pop {}", out(reg) v, in(reg) u64::from(field), lateout(reg) rflags);
    }
    vm_result(rflags).map(|()| v)
}

/// Writes field `field` of the current VMCS.
///
/// # Safety
/// Host-state fields decide where the CPU jumps and which page tables it
/// uses on the next VM exit; guest-state fields and controls decide what
/// the guest can reach. The caller vouches for the value.
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller vouches for the field and the value.
    unsafe {
        asm!("vmwrite {}, {}", "pushfq", "pop {}", in(reg) u64::from(field), in(reg) value, lateout(reg) rflags);
    }
    vm_result(rflags)
}

/// INVEPT of type `kind` (1 single-context, 2 all-context) for `eptp`.
pub fn invept(kind: u64, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let rflags: u64;
    // SAFETY: INVEPT only drops cached translations; the descriptor is a
    // local the instruction reads.
    unsafe {
        asm!("invept {}, [{}]", "pushfq", "pop {}", in(reg) kind, in(reg) &desc, lateout(reg) rflags);
    }
    vm_result(rflags)
}

/// Saves the x87/SSE state to `area` (FXSAVE64).
pub fn fxsave(area: &mut FxArea) {
    // SAFETY: FXSAVE writes 512 bytes at a 16-aligned address: `area` is
    // exactly that and exclusively borrowed.
    unsafe {
        asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack, preserves_flags))
    };
}

/// Loads the x87/SSE state from `area` (FXRSTOR64).
pub fn fxrstor(area: &FxArea) {
    // SAFETY: FXRSTOR reads 512 bytes at a 16-aligned address; an area
    // this hypervisor saved (or zeroed, with a valid MXCSR) cannot fault.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack, preserves_flags)) };
}

/// An FXSAVE area: one vCPU's x87/SSE registers while another runs.
#[repr(C, align(16))]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// Reset state: FCW 0x37F, MXCSR 0x1F80, registers zero.
    pub fn reset() -> Self {
        let mut a = FxArea([0; 512]);
        a.0[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        a.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        a
    }
}

/// INVVPID of type `kind` (1 single-context, 2 all-context) for `vpid`.
pub fn invvpid(kind: u64, vpid: u16) -> Result<(), VmFail> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    let rflags: u64;
    // SAFETY: INVVPID only drops cached translations; the descriptor is a
    // local the instruction reads.
    unsafe {
        asm!("invvpid {}, [{}]", "pushfq", "pop {}", in(reg) kind, in(reg) &desc, lateout(reg) rflags);
    }
    vm_result(rflags)
}

/// DR0-DR3 and DR6, in that order.
pub fn read_debug() -> [u64; 5] {
    let (d0, d1, d2, d3, d6): (u64, u64, u64, u64, u64);
    // SAFETY: reading debug registers at CPL 0 has no side effect.
    unsafe {
        asm!(
            "mov {0}, dr0", "mov {1}, dr1", "mov {2}, dr2", "mov {3}, dr3", "mov {4}, dr6",
            out(reg) d0, out(reg) d1, out(reg) d2, out(reg) d3, out(reg) d6,
            options(nomem, nostack, preserves_flags),
        );
    }
    [d0, d1, d2, d3, d6]
}

/// Loads DR0-DR3 and DR6 (a vCPU's, from [`read_debug`] or its reset
/// values).
pub fn write_debug(d: &[u64; 5]) {
    // SAFETY: the breakpoints only fire when DR7 (the guest's, loaded by VM
    // entry; the host's is 0x400 after every exit) enables them, so the
    // hypervisor itself never traps on them. DR6 is what was read from it,
    // or its reset value (0xffff0ff0).
    unsafe {
        asm!(
            "mov dr0, {0}", "mov dr1, {1}", "mov dr2, {2}", "mov dr3, {3}", "mov dr6, {4}",
            in(reg) d[0], in(reg) d[1], in(reg) d[2], in(reg) d[3], in(reg) d[4],
            options(nomem, nostack, preserves_flags),
        );
    }
}
