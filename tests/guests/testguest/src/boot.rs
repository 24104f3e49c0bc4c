//! What runs outside ordinary Rust code: the arm64 Image header, the two
//! entry points, the exception vectors, and the per-vCPU record the
//! exception handlers keep.
//!
//! Both entries arrive at EL1h with the MMU off and DAIF masked (Linux's
//! boot protocol for vCPU 0, PSCI CPU_ON for vCPU 1). Each turns on FP/SIMD
//! (Rust code may use the vector registers), takes its own stack, installs
//! the vector table and calls Rust with the values the checks need:
//! x0 as handed over, and DAIF as found.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::hw::{self, sysreg_read};

core::arch::global_asm!(
    // The arm64 Image header (Linux, Documentation/arch/arm64/booting.rst):
    // text_offset 0, image_size from the linker script (bss and stacks
    // included), flags = little endian, 4 KiB pages, placement anywhere.
    ".section .head, \"ax\"",
    ".global testguest_header",
    "testguest_header:",
    "    b primary_entry",
    "    .long 0",
    "    .quad 0",
    "    .quad image_size",
    "    .quad 0xa",
    "    .quad 0",
    "    .quad 0",
    "    .quad 0",
    "    .ascii \"ARM\\x64\"",
    "    .long 0",
    "",
    // vCPU 0: x0 = the DTB. The bss is zeroed here, before Rust runs
    // (the loader need not do it).
    "primary_entry:",
    "    mov x19, x0",
    "    mrs x20, daif",
    "    mov x1, #(3 << 20)",
    "    msr cpacr_el1, x1",
    "    isb",
    "    adrp x1, bss_begin",
    "    add x1, x1, :lo12:bss_begin",
    "    adrp x2, bss_end",
    "    add x2, x2, :lo12:bss_end",
    "2:  cmp x1, x2",
    "    b.hs 3f",
    "    stp xzr, xzr, [x1], #16",
    "    b 2b",
    "3:  adrp x1, stack0_top",
    "    add x1, x1, :lo12:stack0_top",
    "    mov sp, x1",
    "    adrp x1, vectors",
    "    add x1, x1, :lo12:vectors",
    "    msr vbar_el1, x1",
    "    isb",
    "    mov x0, x19",
    "    mov x1, x20",
    "    bl primary_main",
    "4:  wfe",
    "    b 4b",
    "",
    // vCPU 1, from PSCI CPU_ON: x0 = the context id.
    ".section .text.secondary_entry, \"ax\"",
    ".global secondary_entry",
    "secondary_entry:",
    "    mov x19, x0",
    "    mrs x20, daif",
    "    mov x1, #(3 << 20)",
    "    msr cpacr_el1, x1",
    "    isb",
    "    adrp x1, stack1_top",
    "    add x1, x1, :lo12:stack1_top",
    "    mov sp, x1",
    "    adrp x1, vectors",
    "    add x1, x1, :lo12:vectors",
    "    msr vbar_el1, x1",
    "    isb",
    "    mov x0, x19",
    "    mov x1, x20",
    "    bl secondary_main",
    "5:  wfe",
    "    b 5b",
    "",
    // The vector table: 16 slots of 0x80 bytes. Each pushes a frame and
    // calls `handle_exception(slot, frame)`; the handler may change the
    // saved ELR. The frame holds x0..x18, x29, x30, ELR, SPSR and the
    // caller-saved vector registers (q0..q7, q16..q31): 576 bytes.
    ".section .text.vectors, \"ax\"",
    ".macro vector slot",
    ".balign 0x80",
    "    sub sp, sp, #576",
    "    stp x0, x1, [sp]",
    "    mov x0, #\\slot",
    "    b exception_common",
    ".endm",
    ".balign 0x800",
    ".global vectors",
    "vectors:",
    "    vector 0",
    "    vector 1",
    "    vector 2",
    "    vector 3",
    "    vector 4",
    "    vector 5",
    "    vector 6",
    "    vector 7",
    "    vector 8",
    "    vector 9",
    "    vector 10",
    "    vector 11",
    "    vector 12",
    "    vector 13",
    "    vector 14",
    "    vector 15",
    "exception_common:",
    "    stp x2, x3, [sp, #16]",
    "    stp x4, x5, [sp, #32]",
    "    stp x6, x7, [sp, #48]",
    "    stp x8, x9, [sp, #64]",
    "    stp x10, x11, [sp, #80]",
    "    stp x12, x13, [sp, #96]",
    "    stp x14, x15, [sp, #112]",
    "    stp x16, x17, [sp, #128]",
    "    stp x18, x29, [sp, #144]",
    "    mrs x2, elr_el1",
    "    mrs x3, spsr_el1",
    "    stp x30, x2, [sp, #160]",
    "    str x3, [sp, #176]",
    "    stp q0, q1, [sp, #192]",
    "    stp q2, q3, [sp, #224]",
    "    stp q4, q5, [sp, #256]",
    "    stp q6, q7, [sp, #288]",
    "    stp q16, q17, [sp, #320]",
    "    stp q18, q19, [sp, #352]",
    "    stp q20, q21, [sp, #384]",
    "    stp q22, q23, [sp, #416]",
    "    stp q24, q25, [sp, #448]",
    "    stp q26, q27, [sp, #480]",
    "    stp q28, q29, [sp, #512]",
    "    stp q30, q31, [sp, #544]",
    "    mov x1, sp",
    "    bl handle_exception",
    "    ldp q0, q1, [sp, #192]",
    "    ldp q2, q3, [sp, #224]",
    "    ldp q4, q5, [sp, #256]",
    "    ldp q6, q7, [sp, #288]",
    "    ldp q16, q17, [sp, #320]",
    "    ldp q18, q19, [sp, #352]",
    "    ldp q20, q21, [sp, #384]",
    "    ldp q22, q23, [sp, #416]",
    "    ldp q24, q25, [sp, #448]",
    "    ldp q26, q27, [sp, #480]",
    "    ldp q28, q29, [sp, #512]",
    "    ldp q30, q31, [sp, #544]",
    "    ldr x3, [sp, #176]",
    "    ldp x30, x2, [sp, #160]",
    "    msr elr_el1, x2",
    "    msr spsr_el1, x3",
    "    ldp x18, x29, [sp, #144]",
    "    ldp x16, x17, [sp, #128]",
    "    ldp x14, x15, [sp, #112]",
    "    ldp x12, x13, [sp, #96]",
    "    ldp x10, x11, [sp, #80]",
    "    ldp x8, x9, [sp, #64]",
    "    ldp x6, x7, [sp, #48]",
    "    ldp x4, x5, [sp, #32]",
    "    ldp x2, x3, [sp, #16]",
    "    ldp x0, x1, [sp]",
    "    add sp, sp, #576",
    "    eret",
);

unsafe extern "C" {
    /// The entry point handed to PSCI CPU_ON.
    pub fn secondary_entry();
}

/// The integer part of the frame the vectors push (the vector registers
/// follow it, untouched by Rust).
#[repr(C)]
pub struct Frame {
    /// x0..x18, x29, x30.
    _regs: [u64; 21],
    elr: u64,
    _spsr: u64,
    _pad: u64,
}

/// What the exception handlers saw on one vCPU. Each field has a single
/// writer (that vCPU), so plain loads and stores suffice: with the MMU off
/// the memory is Device, where exclusives (atomic read-modify-write) are
/// not guaranteed to work.
pub struct PerCpu {
    /// Virtual timer interrupts taken.
    pub ticks: AtomicU64,
    /// Test SGIs taken.
    pub sgis: AtomicU64,
    /// Other interrupt ids, and the last one.
    pub other_irqs: AtomicU64,
    pub last_other_irq: AtomicU64,
    /// Synchronous exceptions from EL1 taken, and the last one's syndrome.
    pub syncs: AtomicU64,
    pub esr: AtomicU64,
    pub far: AtomicU64,
    pub elr: AtomicU64,
    /// Exceptions through any other vector (FIQ, SError, lower EL, SP_EL0),
    /// and the last slot.
    pub unexpected: AtomicU64,
    pub last_unexpected: AtomicU64,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            ticks: AtomicU64::new(0),
            sgis: AtomicU64::new(0),
            other_irqs: AtomicU64::new(0),
            last_other_irq: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            esr: AtomicU64::new(0),
            far: AtomicU64::new(0),
            elr: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            last_unexpected: AtomicU64::new(0),
        }
    }
}

pub static CPUS: [PerCpu; 2] = [PerCpu::new(), PerCpu::new()];

/// Counter ticks between timer interrupts (set by vCPU 0 before any
/// timer starts).
pub static TICK_INTERVAL: AtomicU64 = AtomicU64::new(0);

/// Adds one to a counter only this vCPU writes.
pub fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// Vector slot numbers used below (current EL, SP_ELx).
const SLOT_SYNC: u64 = 4;
const SLOT_IRQ: u64 = 5;
const INTID_SPURIOUS: u64 = 1020;

#[unsafe(no_mangle)]
extern "C" fn handle_exception(slot: u64, frame: &mut Frame) {
    let me = &CPUS[hw::cpu_index()];
    match slot {
        SLOT_SYNC => {
            // Recorded, then skipped: the checks provoke these on purpose.
            me.esr.store(sysreg_read!("esr_el1"), Relaxed);
            me.far.store(sysreg_read!("far_el1"), Relaxed);
            me.elr.store(frame.elr, Relaxed);
            bump(&me.syncs);
            frame.elr += 4;
        }
        SLOT_IRQ => irq(me),
        _ => {
            me.last_unexpected.store(slot, Relaxed);
            bump(&me.unexpected);
            // A synchronous one would repeat forever if not skipped.
            if slot.is_multiple_of(4) {
                frame.elr += 4;
            }
        }
    }
}

/// One interrupt: acknowledge, count, rearm the timer, end it.
fn irq(me: &PerCpu) {
    let iar = sysreg_read!("icc_iar1_el1");
    let intid = iar & 0xff_ffff;
    if intid >= INTID_SPURIOUS {
        return;
    }
    if intid == hw::VTIMER_INTID as u64 {
        bump(&me.ticks);
        hw::timer_arm(TICK_INTERVAL.load(Relaxed));
    } else if intid == hw::TEST_SGI as u64 {
        bump(&me.sgis);
    } else {
        me.last_other_irq.store(intid, Relaxed);
        bump(&me.other_irqs);
    }
    hw::sysreg_write!("icc_eoir1_el1", iar);
}
