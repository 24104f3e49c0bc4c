//! From real mode to Rust, and the guest's own exception handling.
//!
//! The 16-bit entry stashes what the hypervisor handed over (EAX, EBX,
//! EFLAGS, CR0), enters 32-bit protected mode through its own GDT, zeroes
//! the bss, identity-maps the first 4 GiB with 2 MiB pages, enters long
//! mode, installs an IDT (the 32 exception vectors and the event-channel
//! upcall) and calls `guest_main`.
//!
//! Exceptions: a check that expects one arms `RECOVERY_RIP` with the
//! address after the instruction that should fault; the handler records
//! vector, error code and RIP, disarms, and resumes there with every
//! register as it was. An exception with nothing armed is a finding of its
//! own: `guest_main`'s fatal path reports it and ends the run. This module
//! owns the GDT, TSS, IDT, page tables and stack; nothing else may change
//! them, and it writes no memory outside the image.

use core::arch::{asm, global_asm};
use core::fmt;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::Relaxed;

/// The event-channel upcall vector (HVM_PARAM_CALLBACK_IRQ, type vector).
pub const UPCALL_VECTOR: u8 = 0xF3;
/// Exception vectors the checks provoke.
pub const VECTOR_UD: u64 = 6;
pub const VECTOR_GP: u64 = 13;

/// Where the handler resumes a guarded instruction that faulted; 0 when
/// none is armed (the exception is then unexpected, and fatal).
static RECOVERY_RIP: AtomicU64 = AtomicU64::new(0);
/// Exceptions recovered from, and what the last one was.
static FAULTS: AtomicU64 = AtomicU64::new(0);
static FAULT_VECTOR: AtomicU64 = AtomicU64::new(0);
static FAULT_ERROR: AtomicU64 = AtomicU64::new(0);
static FAULT_RIP: AtomicU64 = AtomicU64::new(0);

global_asm!(
    // ------------------------------------------------ real mode (16-bit)
    ".section .boot16, \"awx\"",
    ".code16",
    ".global x86guest_entry16",
    "x86guest_entry16:",
    // EAX and EBX are the hypervisor's; keep them before using EAX. No
    // instruction before `pushfl` may change a flag.
    "    movl %eax, %esi",
    "    movl %ebx, %edi",
    "    movl $0, %eax",
    "    movw %ax, %ds",
    "    movw %ax, %ss",
    "    movl $x86guest_real_mode_stack_top, %esp",
    "    pushfl",
    "    popl %edx",
    "    cli",
    "    cld",
    "    movl %esi, x86guest_entry_eax",
    "    movl %edi, x86guest_entry_ebx",
    "    movl %edx, x86guest_entry_eflags",
    "    movl %cr0, %eax",
    "    movl %eax, x86guest_entry_cr0",
    "    lgdtl x86guest_gdt_pointer",
    "    orl $1, %eax", // PE
    "    movl %eax, %cr0",
    "    ljmpl $0x08, $x86guest_entry32",
    ".balign 8",
    "x86guest_gdt:",
    "    .quad 0",
    "    .quad 0x00cf9a000000ffff", // 0x08: 32-bit code
    "    .quad 0x00cf92000000ffff", // 0x10: data
    "    .quad 0x00af9a000000ffff", // 0x18: 64-bit code
    "    .quad 0, 0", // 0x20: the TSS, filled in long mode
    "x86guest_gdt_end:",
    "x86guest_gdt_pointer:",
    "    .short x86guest_gdt_end - x86guest_gdt - 1",
    "    .long x86guest_gdt",
    ".balign 4",
    "x86guest_entry_eax: .long 0",
    "x86guest_entry_ebx: .long 0",
    "x86guest_entry_eflags: .long 0",
    "x86guest_entry_cr0: .long 0",
    // Room for `pushfl` only: no byte outside the image is written before
    // the command line has been read.
    "    .skip 16",
    "x86guest_real_mode_stack_top:",
    ".global x86guest_boot16_end",
    "x86guest_boot16_end:",
    "",
    // ------------------------------------------------- protected mode
    ".section .text.x86guest_boot, \"ax\"",
    ".code32",
    "x86guest_entry32:",
    "    movw $0x10, %ax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %fs",
    "    movw %ax, %gs",
    "    movw %ax, %ss",
    // The loader should have zeroed the bss; do not depend on it.
    "    movl $x86guest_bss_start, %edi",
    "    movl $x86guest_bss_end, %ecx",
    "    subl %edi, %ecx",
    "    xorl %eax, %eax",
    "    rep stosb",
    "    movl $x86guest_stack_top, %esp",
    // Long mode offered? CPUID 0x80000001 EDX bit 29.
    "    movl $0x80000000, %eax",
    "    cpuid",
    "    cmpl $0x80000001, %eax",
    "    jb 9f",
    "    movl $0x80000001, %eax",
    "    cpuid",
    "    btl $29, %edx",
    "    jnc 9f",
    // PML4[0] -> PDPT; PDPT[0..4] -> four PDs of 512 2 MiB pages: 4 GiB.
    "    movl $x86guest_pdpt, %eax",
    "    orl $0x3, %eax",
    "    movl %eax, x86guest_pml4",
    "    movl $x86guest_pds, %eax",
    "    orl $0x3, %eax",
    "    movl $x86guest_pdpt, %edi",
    "    movl $4, %ecx",
    "1:  movl %eax, (%edi)",
    "    addl $0x1000, %eax",
    "    addl $8, %edi",
    "    loop 1b",
    "    movl $x86guest_pds, %edi",
    "    movl $0x83, %eax", // present, writable, 2 MiB page
    "    xorl %edx, %edx",
    "    movl $2048, %ecx",
    "2:  movl %eax, (%edi)",
    "    movl %edx, 4(%edi)",
    "    addl $0x200000, %eax",
    "    adcl $0, %edx",
    "    addl $8, %edi",
    "    loop 2b",
    "    movl %cr4, %eax",
    "    orl $(1 << 5), %eax", // PAE
    "    movl %eax, %cr4",
    "    movl $x86guest_pml4, %eax",
    "    movl %eax, %cr3",
    "    movl $0xc0000080, %ecx", // EFER
    "    rdmsr",
    "    orl $(1 << 8), %eax", // LME
    "    wrmsr",
    "    movl %cr0, %eax",
    "    orl $0x80000000, %eax", // PG
    "    movl %eax, %cr0",
    "    ljmp $0x18, $x86guest_entry64",
    // No long mode: say so in the line format and stop.
    "9:  movl $x86guest_no_long_mode, %esi",
    "8:  movb (%esi), %al",
    "    testb %al, %al",
    "    jz 7f",
    "    movw $0x3f8, %dx",
    "    outb %al, %dx",
    "    incl %esi",
    "    jmp 8b",
    "7:  cli",
    "    hlt",
    "    jmp 7b",
    "",
    // ------------------------------------------------------- long mode
    ".code64",
    "x86guest_entry64:",
    "    movw $0x10, %ax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %fs",
    "    movw %ax, %gs",
    "    movw %ax, %ss",
    "    leaq x86guest_stack_top(%rip), %rsp",
    // Our own TSS in TR: entry to a 64-bit guest needs TR to be a busy
    // 64-bit TSS, and the hypervisor's real-mode TR is none. Descriptor:
    // limit 103, base split over bytes 2..5 and 7..12, type 9, present.
    "    leaq x86guest_tss(%rip), %rax",
    "    leaq x86guest_gdt + {tss_selector}(%rip), %rdi",
    "    movw $103, (%rdi)",
    "    movw %ax, 2(%rdi)",
    "    shrq $16, %rax",
    "    movb %al, 4(%rdi)",
    "    movb $0x89, 5(%rdi)",
    "    movb $0, 6(%rdi)",
    "    movb %ah, 7(%rdi)",
    "    shrq $16, %rax",
    "    movl %eax, 8(%rdi)",
    "    movl $0, 12(%rdi)",
    "    movw ${tss_selector}, %ax",
    "    ltr %ax",
    // Gates for vectors 0..32 (the stubs are 16 bytes apart) and the upcall.
    "    leaq x86guest_exc_stubs(%rip), %rax",
    "    leaq x86guest_idt(%rip), %rdi",
    "    movl $32, %ecx",
    "3:  call x86guest_set_gate",
    "    addq $16, %rax",
    "    addq $16, %rdi",
    "    loop 3b",
    "    leaq x86guest_upcall_entry(%rip), %rax",
    "    leaq x86guest_idt + {upcall_gate}(%rip), %rdi",
    "    call x86guest_set_gate",
    "    lidt x86guest_idt_pointer(%rip)",
    "    movl x86guest_entry_eax(%rip), %edi",
    "    movl x86guest_entry_ebx(%rip), %esi",
    "    movl x86guest_entry_cr0(%rip), %edx",
    "    movl x86guest_entry_eflags(%rip), %ecx",
    "    call {main}",
    "4:  cli",
    "    hlt",
    "    jmp 4b",
    "",
    // A 64-bit interrupt gate at (%rdi) for the handler at %rax: present,
    // DPL 0, type 0xE (IF cleared on entry), selector 0x18, no IST.
    "x86guest_set_gate:",
    "    movl %eax, %edx",
    "    andl $0xffff, %edx",
    "    orl $(0x18 << 16), %edx",
    "    movl %edx, (%rdi)",
    "    movl %eax, %edx",
    "    andl $0xffff0000, %edx",
    "    orl $0x8e00, %edx",
    "    movl %edx, 4(%rdi)",
    "    movq %rax, %rdx",
    "    shrq $32, %rdx",
    "    movl %edx, 8(%rdi)",
    "    movl $0, 12(%rdi)",
    "    ret",
    "",
    // One 16-byte stub per exception vector: the same frame for all (a
    // zero where the CPU pushes no error code), then the vector.
    ".macro x86guest_exc_stub vector, has_error",
    "    .balign 16",
    "    .if \\has_error == 0",
    "    pushq $0",
    "    .endif",
    "    pushq $\\vector",
    "    jmp x86guest_exc_common",
    ".endm",
    ".balign 16",
    "x86guest_exc_stubs:",
    "x86guest_exc_stub 0, 0",
    "x86guest_exc_stub 1, 0",
    "x86guest_exc_stub 2, 0",
    "x86guest_exc_stub 3, 0",
    "x86guest_exc_stub 4, 0",
    "x86guest_exc_stub 5, 0",
    "x86guest_exc_stub 6, 0",
    "x86guest_exc_stub 7, 0",
    "x86guest_exc_stub 8, 1",
    "x86guest_exc_stub 9, 0",
    "x86guest_exc_stub 10, 1",
    "x86guest_exc_stub 11, 1",
    "x86guest_exc_stub 12, 1",
    "x86guest_exc_stub 13, 1",
    "x86guest_exc_stub 14, 1",
    "x86guest_exc_stub 15, 0",
    "x86guest_exc_stub 16, 0",
    "x86guest_exc_stub 17, 1",
    "x86guest_exc_stub 18, 0",
    "x86guest_exc_stub 19, 0",
    "x86guest_exc_stub 20, 0",
    "x86guest_exc_stub 21, 1",
    "x86guest_exc_stub 22, 0",
    "x86guest_exc_stub 23, 0",
    "x86guest_exc_stub 24, 0",
    "x86guest_exc_stub 25, 0",
    "x86guest_exc_stub 26, 0",
    "x86guest_exc_stub 27, 0",
    "x86guest_exc_stub 28, 0",
    "x86guest_exc_stub 29, 1",
    "x86guest_exc_stub 30, 1",
    "x86guest_exc_stub 31, 0",
    "",
    // Stack: vector, error code, then the CPU's RIP, CS, RFLAGS, RSP, SS.
    "x86guest_exc_common:",
    "    pushq %rax",
    "    movq 8(%rsp), %rax",
    "    movq %rax, {fault_vector}(%rip)",
    "    movq 16(%rsp), %rax",
    "    movq %rax, {fault_error}(%rip)",
    "    movq 24(%rsp), %rax",
    "    movq %rax, {fault_rip}(%rip)",
    "    movq {recovery}(%rip), %rax",
    "    testq %rax, %rax",
    "    jz 5f",
    "    movq %rax, 24(%rsp)",
    "    movq $0, {recovery}(%rip)",
    "    incq {faults}(%rip)",
    "    popq %rax",
    "    addq $16, %rsp",
    "    iretq",
    "5:  movq 8(%rsp), %rdi",
    "    movq 16(%rsp), %rsi",
    "    movq 24(%rsp), %rdx",
    "    movq %cr2, %rcx",
    "    andq $-16, %rsp",
    "    call {unexpected}",
    "6:  cli",
    "    hlt",
    "    jmp 6b",
    "",
    // The upcall: save what a C call may change (the target has no SSE
    // state), call Rust, return. 5 + 9 quadwords leave RSP 16-aligned.
    "x86guest_upcall_entry:",
    "    pushq %rax",
    "    pushq %rcx",
    "    pushq %rdx",
    "    pushq %rsi",
    "    pushq %rdi",
    "    pushq %r8",
    "    pushq %r9",
    "    pushq %r10",
    "    pushq %r11",
    "    cld",
    "    call {upcall}",
    "    popq %r11",
    "    popq %r10",
    "    popq %r9",
    "    popq %r8",
    "    popq %rdi",
    "    popq %rsi",
    "    popq %rdx",
    "    popq %rcx",
    "    popq %rax",
    "    iretq",
    "",
    ".section .rodata.x86guest_boot, \"a\"",
    "x86guest_no_long_mode:",
    "    .asciz \"x86guest: long-mode FAIL the CPU offers no long mode\\r\\nx86guest: FAIL 1\\r\\n\"",
    ".balign 8",
    ".global x86guest_idt_pointer",
    "x86guest_idt_pointer:",
    "    .short 256 * 16 - 1",
    "    .quad x86guest_idt",
    "",
    ".section .bss.x86guest_boot, \"aw\", @nobits",
    ".balign 4096",
    "x86guest_pml4: .skip 4096",
    "x86guest_pdpt: .skip 4096",
    "x86guest_pds: .skip 4 * 4096",
    "x86guest_idt: .skip 256 * 16",
    // 104 bytes: no stack switch and no I/O bitmap are ever used.
    "x86guest_tss: .skip 104",
    ".balign 16",
    "x86guest_stack: .skip 16384",
    "x86guest_stack_top:",
    tss_selector = const 0x20,
    upcall_gate = const UPCALL_VECTOR as usize * 16,
    main = sym crate::guest_main,
    unexpected = sym crate::unexpected_exception,
    upcall = sym crate::hypercall::upcall,
    recovery = sym RECOVERY_RIP,
    faults = sym FAULTS,
    fault_vector = sym FAULT_VECTOR,
    fault_error = sym FAULT_ERROR,
    fault_rip = sym FAULT_RIP,
    options(att_syntax),
);

/// An exception a guarded instruction raised.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub vector: u64,
    pub error: u64,
    /// RIP the exception frame held.
    pub rip: u64,
    /// Address of the guarded instruction.
    pub at: u64,
}

impl Fault {
    /// The exception was `vector` with error code `error`, taken as a
    /// fault on the guarded instruction (RIP pointing at it).
    pub fn is(&self, vector: u64, error: u64) -> bool {
        self.vector == vector && self.error == error && self.rip == self.at
    }
}

/// Short, so several fit on one line: `#GP(0x0) at 0xc426`.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match vector_name(self.vector) {
            "?" => write!(f, "vector {}", self.vector)?,
            name => f.write_str(name)?,
        }
        write!(f, "({:#x}) at {:#x}", self.error, self.rip)?;
        if self.rip != self.at {
            write!(f, " (insn {:#x})", self.at)?;
        }
        Ok(())
    }
}

/// The mnemonic of an exception vector.
pub fn vector_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "?", "#TS", "#NP", "#SS",
        "#GP", "#PF", "?", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "?", "?", "?", "?", "?", "?",
        "#HV", "#VC", "#SX", "?",
    ];
    usize::try_from(vector)
        .ok()
        .and_then(|v| NAMES.get(v))
        .copied()
        .unwrap_or("?")
}

/// Runs `guarded_asm`, which arms `RECOVERY_RIP`, runs one instruction
/// that may fault and disarms, returning that instruction's address.
fn guarded(guarded_asm: impl FnOnce() -> u64) -> Result<(), Fault> {
    let before = FAULTS.load(Relaxed);
    let at = guarded_asm();
    if FAULTS.load(Relaxed) == before {
        return Ok(());
    }
    Err(Fault {
        vector: FAULT_VECTOR.load(Relaxed),
        error: FAULT_ERROR.load(Relaxed),
        rip: FAULT_RIP.load(Relaxed),
        at,
    })
}

/// `ud2`, which must reach the #UD handler and come back.
pub fn ud2() -> Result<(), Fault> {
    guarded(|| {
        let at: u64;
        // SAFETY: the armed handler resumes at label 2 with all registers
        // as they were; `ud2` changes nothing else.
        unsafe {
            asm!(
                "lea {at}, [rip + 3f]",
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [rip + {recovery}], {tmp}",
                "3: ud2",
                "2: mov qword ptr [rip + {recovery}], 0",
                at = out(reg) at, tmp = out(reg) _, recovery = sym RECOVERY_RIP,
                options(nostack),
            )
        };
        at
    })
}

/// RDMSR, or the exception it raised.
pub fn rdmsr(msr: u32) -> Result<u64, Fault> {
    let (mut lo, mut hi) = (0u32, 0u32);
    guarded(|| {
        let at: u64;
        // SAFETY: reading an MSR changes no state Rust relies on; a fault
        // resumes at label 2 with the registers unchanged.
        unsafe {
            asm!(
                "lea {at}, [rip + 3f]",
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [rip + {recovery}], {tmp}",
                "3: rdmsr",
                "2: mov qword ptr [rip + {recovery}], 0",
                at = out(reg) at, tmp = out(reg) _, recovery = sym RECOVERY_RIP,
                in("ecx") msr, inout("eax") lo, inout("edx") hi,
                options(nostack),
            )
        };
        at
    })?;
    Ok(u64::from(hi) << 32 | u64::from(lo))
}

/// WRMSR, or the exception it raised.
///
/// # Safety
/// `msr` must not change the environment Rust code runs in (EFER, the
/// segment bases, ...), and if writing it makes the hypervisor write guest
/// memory (a hypercall page), `value` must name a page nothing else uses.
pub unsafe fn wrmsr(msr: u32, value: u64) -> Result<(), Fault> {
    guarded(|| {
        let at: u64;
        // SAFETY: the caller vouches for the MSR and value; a fault
        // resumes at label 2 with the registers unchanged.
        unsafe {
            asm!(
                "lea {at}, [rip + 3f]",
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [rip + {recovery}], {tmp}",
                "3: wrmsr",
                "2: mov qword ptr [rip + {recovery}], 0",
                at = out(reg) at, tmp = out(reg) _, recovery = sym RECOVERY_RIP,
                in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
                options(nostack),
            )
        };
        at
    })
}

/// MOV to CR4, or the exception it raised.
///
/// # Safety
/// `value` must keep paging as it is (PAE, and PSE/PGE only as the page
/// tables allow); bits the hypervisor refuses fault and change nothing.
pub unsafe fn write_cr4(value: u64) -> Result<(), Fault> {
    guarded(|| {
        let at: u64;
        // SAFETY: the caller vouches for the value; a fault resumes at
        // label 2 with CR4 unchanged.
        unsafe {
            asm!(
                "lea {at}, [rip + 3f]",
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [rip + {recovery}], {tmp}",
                "3: mov cr4, {value}",
                "2: mov qword ptr [rip + {recovery}], 0",
                at = out(reg) at, tmp = out(reg) _, recovery = sym RECOVERY_RIP,
                value = in(reg) value,
                options(nostack),
            )
        };
        at
    })
}

/// MOV to CR8 (the task priority), or the exception it raised.
pub fn write_cr8(value: u64) -> Result<(), Fault> {
    guarded(|| {
        let at: u64;
        // SAFETY: the TPR only decides which interrupts the guest takes;
        // this guest only takes its upcall, checked with CR8 back at 0. A
        // fault resumes at label 2 with CR8 unchanged.
        unsafe {
            asm!(
                "lea {at}, [rip + 3f]",
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [rip + {recovery}], {tmp}",
                "3: mov cr8, {value}",
                "2: mov qword ptr [rip + {recovery}], 0",
                at = out(reg) at, tmp = out(reg) _, recovery = sym RECOVERY_RIP,
                value = in(reg) value,
                options(nostack),
            )
        };
        at
    })
}

/// CR8.
pub fn read_cr8() -> u64 {
    let v: u64;
    // SAFETY: reading CR8 has no side effect.
    unsafe { asm!("mov {}, cr8", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// MONITOR on `addr` then MWAIT: under hv-x86 both exit and are no-ops.
pub fn monitor_mwait(addr: u64) {
    // SAFETY: MONITOR arms a watch on a readable address (a static of the
    // caller's); MWAIT waits for a write there or an event. Neither
    // changes memory.
    unsafe {
        asm!(
            "monitor",
            "mwait",
            in("rax") addr, in("ecx") 0u32, in("edx") 0u32,
            options(nostack),
        )
    };
}

/// A 64-bit load from `addr`, or the exception it raised.
///
/// # Safety
/// Reading `addr` must have no side effect and must not race a write to
/// memory Rust owns (an address with nothing behind it is the intent).
pub unsafe fn load_u64(addr: u64) -> Result<u64, Fault> {
    let mut value = 0u64;
    guarded(|| {
        let at: u64;
        // SAFETY: the caller vouches for the address; a fault resumes at
        // label 2 with `value` still 0.
        unsafe {
            asm!(
                "lea {at}, [rip + 3f]",
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [rip + {recovery}], {tmp}",
                "3: mov {value}, qword ptr [{addr}]",
                "2: mov qword ptr [rip + {recovery}], 0",
                at = out(reg) at, tmp = out(reg) _, recovery = sym RECOVERY_RIP,
                value = inout(reg) value, addr = in(reg) addr,
                options(nostack),
            )
        };
        at
    })?;
    Ok(value)
}

/// An 8-bit IN from `port`, or the exception it raised.
///
/// # Safety
/// Reading `port` must not disturb a device something else relies on.
pub unsafe fn inb(port: u16) -> Result<u8, Fault> {
    let mut value = 0u8;
    guarded(|| {
        let at: u64;
        // SAFETY: the caller vouches for the port; a fault resumes at
        // label 2 with `value` unchanged.
        unsafe {
            asm!(
                "lea {at}, [rip + 3f]",
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [rip + {recovery}], {tmp}",
                "3: in al, dx",
                "2: mov qword ptr [rip + {recovery}], 0",
                at = out(reg) at, tmp = out(reg) _, recovery = sym RECOVERY_RIP,
                inout("al") value, in("dx") port,
                options(nostack),
            )
        };
        at
    })?;
    Ok(value)
}

/// CPUID leaf `leaf`, subleaf 0: [eax, ebx, ecx, edx].
pub fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 at CPL 0 has no side effect.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 at CPL 0 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_cs() -> u16 {
    let v: u16;
    // SAFETY: reading a segment selector has no side effect.
    unsafe { asm!("mov {:x}, cs", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Lets the upcall in. Not `nomem`: the handler changes memory, so no
/// access may move across this.
pub fn interrupts_on() {
    // SAFETY: the IDT is installed before Rust runs and the upcall handler
    // saves every register a call may change.
    unsafe { asm!("sti", options(nostack)) };
}

/// Shuts the upcall out; a compiler barrier like [`interrupts_on`].
pub fn interrupts_off() {
    // SAFETY: masking interrupts cannot break an invariant.
    unsafe { asm!("cli", options(nostack)) };
}

/// Stops this vCPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts masked `hlt` only waits; no state changes.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Loads an empty IDT and raises #BP: #BP, then #GP and #DF, find no gate,
/// which is a triple fault. Returns only if the hypervisor resumed the
/// vCPU anyway; the real IDT is then back in place.
pub fn triple_fault() {
    let empty_idt = [0u16; 5];
    // SAFETY: nothing runs between the two LIDTs but `int3`, whose
    // delivery must fail; if the hypervisor resumes after it, the real IDT
    // is reloaded before any Rust code runs.
    unsafe {
        asm!(
            "lidt [{empty}]",
            "int3",
            "lidt [rip + x86guest_idt_pointer]",
            empty = in(reg) empty_idt.as_ptr(),
            options(nostack),
        )
    };
}
