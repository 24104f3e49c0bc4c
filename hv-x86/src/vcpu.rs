//! One virtual CPU: its VMCS, the registers the VMCS does not hold, and
//! the VM entry and exit path.
//!
//! A vCPU starts in real mode at the image's entry (unrestricted guest
//! runs it natively). Registers outside the VMCS (the general-purpose
//! ones, CR2, the x87/SSE state and the SYSCALL MSRs) are saved here and
//! swapped in only while this vCPU owns the CPU, so nothing of one domain
//! is ever visible to another.

use alloc::boxed::Box;
use core::arch::global_asm;

use hv_x86::vmx::{Controls, field};

use crate::cpu::{self, PerCpu};
use crate::hw::{self, FxArea, VmFail};

/// The general-purpose registers and CR2 across a VM exit (the layout the
/// entry/exit code below reads and writes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub cr2: u64,
}

impl Regs {
    /// Sets general-purpose register `n` (encoding order; 4 is RSP).
    pub fn set_gpr(&mut self, n: u8, v: u64) {
        let slot = match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => {
                let _ = vmwrite(field::GUEST_RSP, v);
                return;
            }
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            _ => &mut self.r15,
        };
        *slot = v;
    }

    /// General-purpose register `n` in the instruction encoding's order
    /// (4 is RSP, which lives in the VMCS).
    pub fn gpr(&self, n: u8) -> u64 {
        match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => vmread(field::GUEST_RSP),
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            _ => self.r15,
        }
    }
}

/// The MSRs a guest's SYSCALL path uses, which the VMCS does not switch.
#[derive(Clone, Copy, Default)]
pub struct SyscallMsrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub tsc_aux: u64,
}

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_TSC_AUX: u32 = 0xc000_0103;

impl SyscallMsrs {
    /// Loads them into the CPU (when this vCPU takes it).
    pub fn load(&self, rdtscp: bool) {
        // SAFETY: these MSRs only matter to code running SYSCALL/SWAPGS/
        // RDTSCP, which the hypervisor never does; they exist on every
        // x86-64 CPU (TSC_AUX only with RDTSCP, checked).
        unsafe {
            hw::wrmsr(MSR_STAR, self.star);
            hw::wrmsr(MSR_LSTAR, self.lstar);
            hw::wrmsr(MSR_CSTAR, self.cstar);
            hw::wrmsr(MSR_SFMASK, self.sfmask);
            hw::wrmsr(MSR_KERNEL_GS_BASE, self.kernel_gs_base);
            if rdtscp {
                hw::wrmsr(MSR_TSC_AUX, self.tsc_aux);
            }
        }
    }

    /// The value of SYSCALL MSR `msr`, if it is one.
    pub fn get(&self, msr: u32) -> Option<u64> {
        Some(match msr {
            MSR_STAR => self.star,
            MSR_LSTAR => self.lstar,
            MSR_CSTAR => self.cstar,
            MSR_SFMASK => self.sfmask,
            MSR_KERNEL_GS_BASE => self.kernel_gs_base,
            MSR_TSC_AUX => self.tsc_aux,
            _ => return None,
        })
    }

    /// Sets SYSCALL MSR `msr` (and the CPU's copy, this vCPU running);
    /// false when `msr` is not one of them or the value is not canonical.
    pub fn set(&mut self, msr: u32, v: u64, rdtscp: bool) -> bool {
        let canonical = |a: u64| ((a as i64) << 16 >> 16) as u64 == a;
        let slot = match msr {
            MSR_STAR => &mut self.star,
            MSR_LSTAR if canonical(v) => &mut self.lstar,
            MSR_CSTAR if canonical(v) => &mut self.cstar,
            MSR_SFMASK if v >> 32 == 0 => &mut self.sfmask,
            MSR_KERNEL_GS_BASE if canonical(v) => &mut self.kernel_gs_base,
            MSR_TSC_AUX if rdtscp && v >> 32 == 0 => &mut self.tsc_aux,
            _ => return false,
        };
        *slot = v;
        self.load(rdtscp);
        true
    }
}

/// A 4 KiB VMX region (VMXON or VMCS), page aligned.
#[repr(C, align(4096))]
pub struct Region(pub [u32; 1024]);

impl Region {
    /// A zeroed region with the revision id in its first word.
    pub fn new(revision: u32) -> Box<Region> {
        let mut r = Box::new(Region([0; 1024]));
        r.0[0] = revision & 0x7fff_ffff;
        r
    }

    /// Its physical address (the hypervisor is identity mapped).
    pub fn phys(&self) -> u64 {
        core::ptr::from_ref(self) as u64
    }
}

/// One vCPU.
pub struct Vcpu {
    vmcs: Box<Region>,
    pub regs: Regs,
    launched: bool,
    pub fx: Box<FxArea>,
    pub msrs: SyscallMsrs,
    /// The guest's view of CR0 and CR4 (what it wrote; the real registers
    /// carry the VMX-fixed bits on top).
    pub cr0_shadow: u64,
    pub cr4_shadow: u64,
    /// DR0-DR3 and DR6, which the VMCS does not switch (DR7 it does).
    pub debug: [u64; 5],
}

/// Reads a VMCS field of the current VMCS; 0 when it cannot be read (a
/// field this CPU lacks), which the callers treat as a plain value.
pub fn vmread(f: u32) -> u64 {
    hw::vmread(f).unwrap_or(0)
}

/// Writes a field of the current VMCS that only changes what the guest
/// sees: guest state (but the VMCS link pointer), the event to inject at
/// the next entry and the CR0/CR4 read shadows. Controls, host state and
/// every address the CPU follows are refused: they are written by
/// `Vcpu::setup`, and the two control bits that change at run time by
/// [`set_interrupt_window`] and [`set_long_mode_entry`].
pub fn vmwrite(f: u32, v: u64) -> Result<(), VmFail> {
    let guest_state = (f >> 10) & 3 == 2 && f != field::VMCS_LINK_POINTER;
    let injection = [
        field::VM_ENTRY_INTR_INFO,
        field::ENTRY_EXCEPTION_ERROR_CODE,
        field::ENTRY_INSTRUCTION_LEN,
        field::CR0_READ_SHADOW,
        field::CR4_READ_SHADOW,
    ]
    .contains(&f);
    if !(guest_state || injection) {
        return Err(VmFail::Invalid);
    }
    // SAFETY: guest state, the event to inject and the read shadows
    // (checked above) change what the guest sees, never what the CPU does
    // on the hypervisor's behalf or where it reads memory for it.
    unsafe { hw::vmwrite(f, v) }
}

/// Turns interrupt-window exiting on or off (to deliver the upcall as
/// soon as the guest can take it).
pub fn set_interrupt_window(on: bool) {
    set_control_bit(
        field::PROC_CONTROLS,
        hv_x86::vmx::proc::INTERRUPT_WINDOW_EXITING,
        on,
    );
}

/// Makes the "IA-32e mode guest" entry control follow the guest's
/// EFER.LMA.
pub fn set_long_mode_entry(on: bool) {
    set_control_bit(
        field::ENTRY_CONTROLS,
        hv_x86::vmx::entry::IA32E_MODE_GUEST,
        on,
    );
}

/// Sets or clears one bit of a control word, leaving the others.
fn set_control_bit(f: u32, bit: u32, on: bool) {
    let cur = vmread(f);
    let want = if on {
        cur | u64::from(bit)
    } else {
        cur & !u64::from(bit)
    };
    if want != cur {
        // SAFETY: the two callers change one bit each: interrupt-window
        // exiting (allowed-1 on every VMX CPU) or the IA-32e entry control
        // (set to match the guest's own EFER.LMA, as VM entry checks).
        // Neither touches host state or an address the CPU follows.
        let _ = unsafe { setup_write(f, want) };
    }
}

/// Writes any VMCS field: for `Vcpu::setup` only.
///
/// # Safety
/// Host-state fields decide where the CPU jumps and which tables it uses on
/// a VM exit; the EPT pointer and bitmap addresses what it reads. The
/// value must be this CPU's own state or memory this vCPU owns.
unsafe fn setup_write(f: u32, v: u64) -> Result<(), VmFail> {
    // SAFETY: forwarded to the caller.
    unsafe { hw::vmwrite(f, v) }
}

/// The VM-instruction error of the current VMCS (after VMfailValid).
pub fn instruction_error() -> u64 {
    vmread(field::VM_INSTRUCTION_ERROR)
}

/// How a vCPU starts.
pub struct Start {
    /// Entry IP (real mode, CS base 0).
    pub ip: u16,
    pub eax: u32,
    pub ebx: u32,
    /// EPT pointer of the domain.
    pub eptp: u64,
    /// VPID (non-zero) when the CPU has VPIDs.
    pub vpid: Option<u16>,
    /// Pause-loop exiting gap and window, when used.
    pub ple: Option<(u32, u32)>,
    /// Address of an all-ones MSR bitmap / the two I/O bitmaps, when the
    /// controls use them.
    pub msr_bitmap: u64,
    pub io_bitmaps: (u64, u64),
}

impl Vcpu {
    /// A vCPU whose VMCS is set up for a real-mode start; it is left
    /// current on this CPU.
    pub fn new(revision: u32, ctl: &Controls, cpu: &PerCpu, start: &Start) -> Result<Vcpu, VmFail> {
        let vmcs = Region::new(revision);
        // SAFETY: the region is this vCPU's own, holds the revision id,
        // and lives as long as the vCPU (VMCLEARed in `Drop`).
        unsafe {
            hw::vmclear(vmcs.phys())?;
            hw::vmptrld(vmcs.phys())?;
        }
        let mut v = Vcpu {
            vmcs,
            regs: Regs {
                rax: u64::from(start.eax),
                rbx: u64::from(start.ebx),
                ..Regs::default()
            },
            launched: false,
            fx: Box::new(FxArea::reset()),
            msrs: SyscallMsrs::default(),
            cr0_shadow: 0x10,
            cr4_shadow: 0,
            debug: [0, 0, 0, 0, 0xffff_0ff0],
        };
        v.setup(ctl, cpu, start)?;
        Ok(v)
    }

    fn setup(&mut self, ctl: &Controls, cpu: &PerCpu, s: &Start) -> Result<(), VmFail> {
        use field::*;
        // SAFETY: every value below is this CPU's own state (its control
        // registers, descriptor tables and the exit entry point), this
        // vCPU's EPT and bitmaps, or guest state of a real-mode start.
        let w = |f, v| unsafe { setup_write(f, v) };
        // Controls.
        w(PIN_CONTROLS, u64::from(ctl.pin))?;
        w(PROC_CONTROLS, u64::from(ctl.proc))?;
        w(SECONDARY_PROC_CONTROLS, u64::from(ctl.proc2))?;
        w(EXIT_CONTROLS, u64::from(ctl.exit))?;
        w(ENTRY_CONTROLS, u64::from(ctl.entry))?;
        w(EXCEPTION_BITMAP, 0)?;
        w(PAGE_FAULT_ERROR_MASK, 0)?;
        w(PAGE_FAULT_ERROR_MATCH, 0)?;
        w(CR3_TARGET_COUNT, 0)?;
        w(EXIT_MSR_STORE_COUNT, 0)?;
        w(EXIT_MSR_LOAD_COUNT, 0)?;
        w(ENTRY_MSR_LOAD_COUNT, 0)?;
        w(VM_ENTRY_INTR_INFO, 0)?;
        w(EPT_POINTER, s.eptp)?;
        if let Some(vpid) = s.vpid {
            w(VPID, u64::from(vpid))?;
        }
        if let Some((gap, window)) = s.ple {
            w(PLE_GAP, u64::from(gap))?;
            w(PLE_WINDOW, u64::from(window))?;
        }
        if ctl.proc & hv_x86::vmx::proc::USE_MSR_BITMAPS != 0 {
            w(MSR_BITMAP, s.msr_bitmap)?;
        }
        if ctl.proc & hv_x86::vmx::proc::USE_IO_BITMAPS != 0 {
            w(IO_BITMAP_A, s.io_bitmaps.0)?;
            w(IO_BITMAP_B, s.io_bitmaps.1)?;
        }
        w(VMCS_LINK_POINTER, u64::MAX)?;
        // The guest owns CR0/CR4 except the bits VMX fixes: those it
        // reads from the shadows and changing them exits.
        w(CR0_GUEST_HOST_MASK, ctl.guest_cr0_mask())?;
        w(CR4_GUEST_HOST_MASK, ctl.guest_cr4_mask())?;
        w(CR0_READ_SHADOW, self.cr0_shadow)?;
        w(CR4_READ_SHADOW, self.cr4_shadow)?;

        // Host state: this CPU as it runs now.
        w(HOST_CR0, hw::cr0())?;
        w(HOST_CR3, hw::cr3())?;
        w(HOST_CR4, hw::cr4())?;
        w(HOST_ES_SELECTOR, u64::from(cpu::DATA))?;
        w(HOST_CS_SELECTOR, u64::from(cpu::CODE))?;
        w(HOST_SS_SELECTOR, u64::from(cpu::DATA))?;
        w(HOST_DS_SELECTOR, u64::from(cpu::DATA))?;
        w(HOST_FS_SELECTOR, 0)?;
        w(HOST_GS_SELECTOR, 0)?;
        w(HOST_TR_SELECTOR, u64::from(cpu::TSS))?;
        w(HOST_FS_BASE, 0)?;
        w(HOST_GS_BASE, 0)?;
        w(HOST_TR_BASE, cpu.tss_base())?;
        w(HOST_GDTR_BASE, cpu.gdt_base())?;
        w(HOST_IDTR_BASE, cpu.idt_base())?;
        w(HOST_SYSENTER_CS, 0)?;
        w(HOST_SYSENTER_ESP, 0)?;
        w(HOST_SYSENTER_EIP, 0)?;
        // SAFETY: EFER and PAT exist on every CPU with VMX.
        let (efer, pat) = unsafe {
            (
                hw::rdmsr(hv_x86::vmx::msr::IA32_EFER),
                hw::rdmsr(hv_x86::vmx::msr::IA32_PAT),
            )
        };
        w(HOST_IA32_EFER, efer)?;
        w(HOST_IA32_PAT, pat)?;
        w(HOST_RIP, hv_vmx_exit as *const () as u64)?;

        // Guest state: real mode at the entry point (SDM "unrestricted
        // guest": PE and PG clear, segments as after a far jump to 0:ip).
        for (sel, base, limit, ar) in [
            (
                GUEST_ES_SELECTOR,
                GUEST_ES_BASE,
                GUEST_ES_LIMIT,
                GUEST_ES_ACCESS_RIGHTS,
            ),
            (
                GUEST_SS_SELECTOR,
                GUEST_SS_BASE,
                GUEST_SS_LIMIT,
                GUEST_SS_ACCESS_RIGHTS,
            ),
            (
                GUEST_DS_SELECTOR,
                GUEST_DS_BASE,
                GUEST_DS_LIMIT,
                GUEST_DS_ACCESS_RIGHTS,
            ),
            (
                GUEST_FS_SELECTOR,
                GUEST_FS_BASE,
                GUEST_FS_LIMIT,
                GUEST_FS_ACCESS_RIGHTS,
            ),
            (
                GUEST_GS_SELECTOR,
                GUEST_GS_BASE,
                GUEST_GS_LIMIT,
                GUEST_GS_ACCESS_RIGHTS,
            ),
        ] {
            w(sel, 0)?;
            w(base, 0)?;
            w(limit, 0xffff)?;
            w(ar, 0x93)?; // present, read/write data, accessed
        }
        w(GUEST_CS_SELECTOR, 0)?;
        w(GUEST_CS_BASE, 0)?;
        w(GUEST_CS_LIMIT, 0xffff)?;
        w(GUEST_CS_ACCESS_RIGHTS, 0x9b)?; // present, execute/read code, accessed
        w(GUEST_TR_SELECTOR, 0)?;
        w(GUEST_TR_BASE, 0)?;
        w(GUEST_TR_LIMIT, 0xffff)?;
        w(GUEST_TR_ACCESS_RIGHTS, 0x8b)?; // present, busy 32-bit TSS
        w(GUEST_LDTR_SELECTOR, 0)?;
        w(GUEST_LDTR_BASE, 0)?;
        w(GUEST_LDTR_LIMIT, 0xffff)?;
        w(GUEST_LDTR_ACCESS_RIGHTS, 0x82)?; // present LDT
        w(GUEST_GDTR_BASE, 0)?;
        w(GUEST_GDTR_LIMIT, 0xffff)?;
        w(GUEST_IDTR_BASE, 0)?;
        w(GUEST_IDTR_LIMIT, 0xffff)?;
        w(GUEST_CR0, ctl.guest_cr0(self.cr0_shadow))?;
        w(GUEST_CR3, 0)?;
        w(GUEST_CR4, ctl.guest_cr4(self.cr4_shadow))?;
        w(GUEST_DR7, 0x400)?;
        w(GUEST_RSP, 0)?;
        w(GUEST_RIP, u64::from(s.ip))?;
        w(GUEST_RFLAGS, 0x2)?;
        w(GUEST_IA32_EFER, 0)?;
        w(GUEST_IA32_PAT, 0x0007_0406_0007_0406)?;
        w(GUEST_SYSENTER_CS, 0)?;
        w(GUEST_SYSENTER_ESP, 0)?;
        w(GUEST_SYSENTER_EIP, 0)?;
        w(GUEST_IA32_DEBUGCTL, 0)?;
        w(GUEST_INTERRUPTIBILITY, 0)?;
        w(GUEST_ACTIVITY_STATE, 0)?;
        w(GUEST_PENDING_DBG_EXCEPTIONS, 0)?;
        Ok(())
    }

    /// Makes this vCPU's VMCS current.
    pub fn load(&self) -> Result<(), VmFail> {
        // SAFETY: the region is this vCPU's VMCS, initialised in `new`.
        unsafe { hw::vmptrld(self.vmcs.phys()) }
    }

    /// Enters the guest until the next VM exit; the exit reason, or
    /// VmFail when the entry itself failed (the VM-instruction error
    /// field says why).
    pub fn run(&mut self) -> Result<u32, VmFail> {
        // SAFETY: this vCPU's VMCS is current (the caller loaded it), its
        // host state returns to `hv_vmx_exit` on this stack with this
        // CPU's tables, and the guest can reach only what its EPT maps.
        let failed = unsafe { hv_vmx_run(&raw mut self.regs, u64::from(self.launched)) };
        if failed != 0 {
            return Err(if instruction_error() != 0 {
                VmFail::Valid
            } else {
                VmFail::Invalid
            });
        }
        self.launched = true;
        Ok(vmread(field::EXIT_REASON) as u32)
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // SAFETY: the region is this vCPU's VMCS; clearing it makes the CPU
        // forget it before its memory is freed.
        let _ = unsafe { hw::vmclear(self.vmcs.phys()) };
    }
}

unsafe extern "C" {
    /// Enters the guest (VMLAUNCH when `launched` is 0, else VMRESUME);
    /// returns 0 after a VM exit, 1 when the entry failed.
    fn hv_vmx_run(regs: *mut Regs, launched: u64) -> u64;
    /// The VM-exit entry point (HOST_RIP).
    fn hv_vmx_exit();
}

global_asm!(
    ".section .text",
    ".global hv_vmx_run",
    ".global hv_vmx_exit",
    "hv_vmx_run:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rdi",
    "    mov rax, {host_rsp}",
    "    vmwrite rax, rsp",
    "    mov rax, [rdi + 120]",
    "    mov cr2, rax",
    "    test rsi, rsi",
    "    mov rax, [rdi + 0]",
    "    mov rbx, [rdi + 8]",
    "    mov rcx, [rdi + 16]",
    "    mov rdx, [rdi + 24]",
    "    mov rsi, [rdi + 32]",
    "    mov rbp, [rdi + 48]",
    "    mov r8, [rdi + 56]",
    "    mov r9, [rdi + 64]",
    "    mov r10, [rdi + 72]",
    "    mov r11, [rdi + 80]",
    "    mov r12, [rdi + 88]",
    "    mov r13, [rdi + 96]",
    "    mov r14, [rdi + 104]",
    "    mov r15, [rdi + 112]",
    "    mov rdi, [rdi + 40]",
    "    jnz 2f",
    "    vmlaunch",
    "    jmp 3f",
    "2:  vmresume",
    // Only reached when the entry failed.
    "3:  pop rdi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    mov eax, 1",
    "    ret",
    "hv_vmx_exit:",
    "    push rdi",
    "    mov rdi, [rsp + 8]",
    "    mov [rdi + 0], rax",
    "    mov [rdi + 8], rbx",
    "    mov [rdi + 16], rcx",
    "    mov [rdi + 24], rdx",
    "    mov [rdi + 32], rsi",
    "    mov [rdi + 48], rbp",
    "    mov [rdi + 56], r8",
    "    mov [rdi + 64], r9",
    "    mov [rdi + 72], r10",
    "    mov [rdi + 80], r11",
    "    mov [rdi + 88], r12",
    "    mov [rdi + 96], r13",
    "    mov [rdi + 104], r14",
    "    mov [rdi + 112], r15",
    "    pop rax",
    "    mov [rdi + 40], rax",
    "    mov rax, cr2",
    "    mov [rdi + 120], rax",
    "    pop rdi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    xor eax, eax",
    "    ret",
    host_rsp = const field::HOST_RSP,
);
