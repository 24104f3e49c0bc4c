//! Each CPU's own descriptor tables: a GDT with the 64-bit code and data
//! segments and this CPU's TSS, the TSS with separate stacks for double
//! faults and NMIs, and an IDT whose 32 exception vectors report the fault
//! and stop. hv-x86 never runs with interrupts enabled, so no other vector
//! is used. A fault in the hypervisor is a bug: it is reported, never
//! resumed.
//!
//! Selectors (the same on every CPU, used as the VMCS host state):
//! 0x08 code, 0x10 data, 0x18 the TSS (two GDT slots).

use alloc::boxed::Box;
use core::arch::{asm, global_asm};

/// 64-bit code segment selector.
pub const CODE: u16 = 0x08;
/// Data segment selector.
pub const DATA: u16 = 0x10;
/// This CPU's TSS selector.
pub const TSS: u16 = 0x18;

const IST_STACK: usize = 16 * 1024;

/// The 64-bit TSS (only the stack pointers matter in long mode).
#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

/// One IDT gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    kind: u8,
    offset_mid: u16,
    offset_high: u32,
    _reserved: u32,
}

/// What one CPU's tables are; leaked, they live as long as the CPU runs.
pub struct PerCpu {
    gdt: [u64; 5],
    tss: Tss,
    idt: [Gate; 32],
    /// Stacks of their own for double faults and NMIs (heap allocated:
    /// built on the boot stack they would overflow it).
    df_stack: Box<[u8]>,
    nmi_stack: Box<[u8]>,
}

/// The descriptor-table registers' operand.
#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

unsafe extern "C" {
    /// The 32 exception entry stubs, 16 bytes apart (below).
    static hv_exception_stubs: u8;
}

/// Sets up and loads this CPU's GDT, TSS and IDT; returns them for the
/// VMCS host state (TR, GDTR and IDTR bases).
pub fn init() -> &'static PerCpu {
    let mut cpu = Box::new(PerCpu {
        gdt: [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0, 0],
        tss: Tss {
            _reserved0: 0,
            rsp: [0; 3],
            _reserved1: 0,
            ist: [0; 7],
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: size_of::<Tss>() as u16,
        },
        idt: [Gate {
            offset_low: 0,
            selector: 0,
            ist: 0,
            kind: 0,
            offset_mid: 0,
            offset_high: 0,
            _reserved: 0,
        }; 32],
        df_stack: alloc::vec![0; IST_STACK].into_boxed_slice(),
        nmi_stack: alloc::vec![0; IST_STACK].into_boxed_slice(),
    });
    // Stack tops, 16-byte aligned as the ABI wants at a call.
    cpu.tss.ist[0] = cpu.df_stack.as_ptr_range().end as u64 & !0xf;
    cpu.tss.ist[1] = cpu.nmi_stack.as_ptr_range().end as u64 & !0xf;
    let tss = &raw const cpu.tss as u64;
    let limit = (size_of::<Tss>() - 1) as u64;
    // Available 64-bit TSS (type 9), present, base split over two slots.
    cpu.gdt[3] = (limit & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((tss >> 24) & 0xff) << 56);
    cpu.gdt[4] = tss >> 32;
    let stubs = (&raw const hv_exception_stubs) as u64;
    for (vector, gate) in cpu.idt.iter_mut().enumerate() {
        let at = stubs + 16 * vector as u64;
        *gate = Gate {
            offset_low: at as u16,
            selector: CODE,
            // Double fault (8) and NMI (2) on their own stacks: a stack
            // overflow must still be reported.
            ist: match vector {
                8 => 1,
                2 => 2,
                _ => 0,
            },
            kind: 0x8e, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (at >> 16) as u16,
            offset_high: (at >> 32) as u32,
            _reserved: 0,
        };
    }
    let cpu: &'static PerCpu = Box::leak(cpu);
    let gdt = Pointer {
        limit: (size_of::<[u64; 5]>() - 1) as u16,
        base: cpu.gdt.as_ptr() as u64,
    };
    let idt = Pointer {
        limit: (size_of::<[Gate; 32]>() - 1) as u16,
        base: cpu.idt.as_ptr() as u64,
    };
    // SAFETY: the new GDT has the boot GDT's code and data descriptors at
    // the same selectors, so reloading CS/SS/DS keeps every segment as it
    // was; the TSS descriptor points at a leaked (never freed) TSS, and
    // the IDT at leaked gates whose stubs are in this image. Interrupts
    // are off throughout.
    unsafe {
        asm!(
            "lgdt [{gdt}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {data:x}",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "ltr {tss:x}",
            "lidt [{idt}]",
            gdt = in(reg) &gdt,
            idt = in(reg) &idt,
            code = in(reg) u64::from(CODE),
            data = in(reg) u64::from(DATA),
            tss = in(reg) u64::from(TSS),
            tmp = out(reg) _,
        );
    }
    cpu
}

impl PerCpu {
    /// TR base.
    pub fn tss_base(&self) -> u64 {
        &raw const self.tss as u64
    }
    /// GDTR base.
    pub fn gdt_base(&self) -> u64 {
        self.gdt.as_ptr() as u64
    }
    /// IDTR base.
    pub fn idt_base(&self) -> u64 {
        self.idt.as_ptr() as u64
    }
}

/// What an exception stub pushed, lowest address first.
#[repr(C)]
struct Frame {
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// A fault in the hypervisor itself: report it and stop.
extern "C" fn exception(frame: &Frame) -> ! {
    panic!(
        "exception {} (error {:#x}) at rip {:#x}, rsp {:#x}, cr2 {:#x}",
        frame.vector,
        frame.error,
        frame.rip,
        frame.rsp,
        crate::hw::cr2()
    );
}

// Vectors that push an error code: 8, 10-14, 17, 21, 29, 30. The others
// push a zero in its place so the frame has one shape.
global_asm!(
    ".section .text",
    ".balign 16",
    ".global hv_exception_stubs",
    "hv_exception_stubs:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".balign 16",
    ".if (\\v == 8) || (\\v >= 10 && \\v <= 14) || (\\v == 17) || (\\v == 21) || (\\v == 29) || (\\v == 30)",
    "    push \\v",
    ".else",
    "    push 0",
    "    push \\v",
    ".endif",
    "    jmp hv_exception_common",
    ".endr",
    "hv_exception_common:",
    "    mov rdi, rsp",
    "    and rsp, -16",
    "    call {handler}",
    "    ud2",
    handler = sym exception,
);
