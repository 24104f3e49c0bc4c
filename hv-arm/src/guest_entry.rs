//! Entering and leaving a guest: the EL2 vector table and the world switch
//! of the general-purpose and FP/SIMD registers.
//!
//! `hv_guest_enter(regs)` saves the hypervisor's callee-saved registers on
//! its own stack, loads the guest's registers from `regs` and ERETs. Any
//! exception from the guest (lower EL) lands in this table, which stores the
//! guest's registers back into the same `regs` (found on the stack, where
//! the enter path left the pointer), restores the hypervisor's registers and
//! returns from `hv_guest_enter` with the exit kind. The trap handlers are
//! then ordinary Rust on an ordinary stack.
//!
//! FP/SIMD: the hypervisor is built for a hard-float target, so Rust code at
//! EL2 may use the vector registers. The guest's Q0-Q31, FPSR and FPCR are
//! therefore saved on every exit and restored on every entry (about 40
//! instructions each way), and the hypervisor's callee-saved D8-D15 are kept
//! across the call as the procedure call standard requires.
//!
//! Exceptions taken at EL2 itself go to aarch64-rt's handlers (the
//! `exceptions` module): the current-EL entries here branch into its table.

use core::arch::global_asm;
use core::mem::offset_of;

/// Guest registers kept across the world switch. The layout is shared
/// with the assembly below: change both together.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct GuestRegs {
    /// X0-X30.
    pub x: [u64; 31],
    /// Where the guest resumes (ELR_EL2).
    pub pc: u64,
    /// Its PSTATE (SPSR_EL2).
    pub pstate: u64,
    _pad: u64,
    /// Q0-Q31.
    pub q: [u128; 32],
    /// FPSR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
}

impl GuestRegs {
    /// All zero, resuming at `pc` in `pstate`.
    pub const fn new(pc: u64, pstate: u64) -> Self {
        Self {
            x: [0; 31],
            pc,
            pstate,
            _pad: 0,
            q: [0; 32],
            fpsr: 0,
            fpcr: 0,
        }
    }

    /// Register `n` as an instruction operand names it (31 = XZR).
    pub fn get(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes register `n` (writes to 31, XZR, are discarded).
    pub fn set(&mut self, n: u8, v: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = v;
        }
    }
}

const _: () = {
    assert!(offset_of!(GuestRegs, pc) == 248);
    assert!(offset_of!(GuestRegs, pstate) == 256);
    assert!(offset_of!(GuestRegs, q) == 272);
    assert!(offset_of!(GuestRegs, fpsr) == 784);
    assert!(offset_of!(GuestRegs, fpcr) == 792);
};

/// Why the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A synchronous exception (trap): ESR_EL2 says which.
    Sync,
    /// A physical IRQ.
    Irq,
    /// A physical FIQ.
    Fiq,
    /// An SError.
    SError,
}

unsafe extern "C" {
    fn hv_guest_enter(regs: *mut GuestRegs) -> u64;
    static hv_vectors: u8;
}

/// Runs the guest whose registers are `regs` until it traps; EL2 system
/// state (HCR_EL2, VTTBR_EL2, the EL1 registers, the vGIC) must already be
/// that of this guest.
pub fn run(regs: &mut GuestRegs) -> Exit {
    // SAFETY: `regs` is a valid, exclusively borrowed register block; the
    // assembly saves and restores every callee-saved register and returns
    // on the same stack. The guest runs at EL1 under stage 2, so it cannot
    // reach hypervisor memory.
    let kind = unsafe { hv_guest_enter(regs) };
    match kind {
        0 => Exit::Sync,
        1 => Exit::Irq,
        2 => Exit::Fiq,
        _ => Exit::SError,
    }
}

/// Points VBAR_EL2 at this table; each CPU calls it once, after
/// aarch64-rt's own set-up.
pub fn install_vectors() {
    // SAFETY: `hv_vectors` is a correctly aligned vector table whose
    // current-EL entries reach aarch64-rt's handlers and whose lower-EL
    // entries reach the exit path below.
    unsafe {
        core::arch::asm!(
            "msr vbar_el2, {0}",
            "isb",
            in(reg) &raw const hv_vectors,
            options(nostack, preserves_flags),
        );
    }
}

global_asm!(
    r#"
.macro hv_exit_entry kind
    .balign 0x80
    stp x0, x1, [sp, #-16]!
    mov x0, #\kind
    b hv_guest_exit
.endm

.macro hv_current_entry offset
    .balign 0x80
    b vector_table_el2 + \offset
.endm

.section .text.hv_vectors, "ax"
.global hv_vectors
.balign 0x800
hv_vectors:
    hv_current_entry 0x000
    hv_current_entry 0x080
    hv_current_entry 0x100
    hv_current_entry 0x180
    hv_current_entry 0x200
    hv_current_entry 0x280
    hv_current_entry 0x300
    hv_current_entry 0x380
    hv_exit_entry 0
    hv_exit_entry 1
    hv_exit_entry 2
    hv_exit_entry 3
    hv_exit_entry 0
    hv_exit_entry 1
    hv_exit_entry 2
    hv_exit_entry 3

.section .text.hv_guest_enter, "ax"
.global hv_guest_enter
.balign 4
hv_guest_enter:
    stp x29, x30, [sp, #-16]!
    stp x27, x28, [sp, #-16]!
    stp x25, x26, [sp, #-16]!
    stp x23, x24, [sp, #-16]!
    stp x21, x22, [sp, #-16]!
    stp x19, x20, [sp, #-16]!
    stp d14, d15, [sp, #-16]!
    stp d12, d13, [sp, #-16]!
    stp d10, d11, [sp, #-16]!
    stp d8, d9, [sp, #-16]!
    stp x0, xzr, [sp, #-16]!

    add x1, x0, #272
    ldp q0, q1, [x1, #0]
    ldp q2, q3, [x1, #32]
    ldp q4, q5, [x1, #64]
    ldp q6, q7, [x1, #96]
    ldp q8, q9, [x1, #128]
    ldp q10, q11, [x1, #160]
    ldp q12, q13, [x1, #192]
    ldp q14, q15, [x1, #224]
    ldp q16, q17, [x1, #256]
    ldp q18, q19, [x1, #288]
    ldp q20, q21, [x1, #320]
    ldp q22, q23, [x1, #352]
    ldp q24, q25, [x1, #384]
    ldp q26, q27, [x1, #416]
    ldp q28, q29, [x1, #448]
    ldp q30, q31, [x1, #480]
    ldr x2, [x0, #784]
    msr fpsr, x2
    ldr x2, [x0, #792]
    msr fpcr, x2

    ldp x2, x3, [x0, #248]
    msr elr_el2, x2
    msr spsr_el2, x3

    ldp x2, x3, [x0, #16]
    ldp x4, x5, [x0, #32]
    ldp x6, x7, [x0, #48]
    ldp x8, x9, [x0, #64]
    ldp x10, x11, [x0, #80]
    ldp x12, x13, [x0, #96]
    ldp x14, x15, [x0, #112]
    ldp x16, x17, [x0, #128]
    ldp x18, x19, [x0, #144]
    ldp x20, x21, [x0, #160]
    ldp x22, x23, [x0, #176]
    ldp x24, x25, [x0, #192]
    ldp x26, x27, [x0, #208]
    ldp x28, x29, [x0, #224]
    ldr x30, [x0, #240]
    ldp x0, x1, [x0, #0]
    eret
    dsb nsh
    isb

.balign 4
hv_guest_exit:
    ldr x1, [sp, #16]
    stp x2, x3, [x1, #16]
    stp x4, x5, [x1, #32]
    stp x6, x7, [x1, #48]
    stp x8, x9, [x1, #64]
    stp x10, x11, [x1, #80]
    stp x12, x13, [x1, #96]
    stp x14, x15, [x1, #112]
    stp x16, x17, [x1, #128]
    stp x18, x19, [x1, #144]
    stp x20, x21, [x1, #160]
    stp x22, x23, [x1, #176]
    stp x24, x25, [x1, #192]
    stp x26, x27, [x1, #208]
    stp x28, x29, [x1, #224]
    str x30, [x1, #240]
    ldp x2, x3, [sp], #16
    stp x2, x3, [x1, #0]
    mrs x2, elr_el2
    mrs x3, spsr_el2
    stp x2, x3, [x1, #248]

    add x2, x1, #272
    stp q0, q1, [x2, #0]
    stp q2, q3, [x2, #32]
    stp q4, q5, [x2, #64]
    stp q6, q7, [x2, #96]
    stp q8, q9, [x2, #128]
    stp q10, q11, [x2, #160]
    stp q12, q13, [x2, #192]
    stp q14, q15, [x2, #224]
    stp q16, q17, [x2, #256]
    stp q18, q19, [x2, #288]
    stp q20, q21, [x2, #320]
    stp q22, q23, [x2, #352]
    stp q24, q25, [x2, #384]
    stp q26, q27, [x2, #416]
    stp q28, q29, [x2, #448]
    stp q30, q31, [x2, #480]
    mrs x3, fpsr
    str x3, [x1, #784]
    mrs x3, fpcr
    str x3, [x1, #792]

    add sp, sp, #16
    ldp d8, d9, [sp], #16
    ldp d10, d11, [sp], #16
    ldp d12, d13, [sp], #16
    ldp d14, d15, [sp], #16
    ldp x19, x20, [sp], #16
    ldp x21, x22, [sp], #16
    ldp x23, x24, [sp], #16
    ldp x25, x26, [sp], #16
    ldp x27, x28, [sp], #16
    ldp x29, x30, [sp], #16
    ret
"#
);
