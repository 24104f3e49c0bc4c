//! From the boot loader to Rust: Multiboot headers, then 32-bit protected
//! mode to long mode with an identity map of the first 4 GiB in 2 MiB pages;
//! and the window through which Rust reads what the loader left in memory.
//!
//! The image carries two headers. Multiboot2 is what GRUB and Bochs use (a
//! later issue boots it under Bochs from a GRUB rescue ISO). QEMU's `-kernel`
//! only speaks Multiboot1 and refuses 64-bit ELFs, so a Multiboot1 header
//! with the a.out-kludge address fields (flag 16) lets it load the same file
//! as a flat image at 1 MiB: linker.ld keeps everything in one segment, so
//! those addresses and the ELF program header describe the same bytes. Both
//! enter `hv_x86_start` in 32-bit protected mode with the loader's magic in
//! eax and its info pointer in ebx; Rust gets them as its two arguments.

use hv_x86::multiboot::{MB1_HEADER_MAGIC, MB2_HEADER_MAGIC, Memory};

/// Multiboot1 flags: memory info wanted, and the address fields are valid.
const MB1_FLAGS: u32 = (1 << 1) | (1 << 16);
/// End of what the boot page tables map.
const IDENTITY_MAPPED: u64 = 4 << 30;

core::arch::global_asm!(
    ".section .multiboot1, \"a\"",
    ".balign 4",
    "mb1_header:",
    ".long {mb1_magic}",
    ".long {mb1_flags}",
    ".long -({mb1_magic} + {mb1_flags})",
    ".long mb1_header",   // header_addr
    ".long hv_load_start", // load_addr
    ".long hv_load_end",  // load_end_addr
    ".long hv_bss_end",   // bss_end_addr
    ".long hv_x86_start", // entry_addr
    "",
    ".section .multiboot2, \"a\"",
    ".balign 8",
    "mb2_header:",
    ".long {mb2_magic}",
    ".long 0",            // architecture: i386 protected mode
    ".long mb2_end - mb2_header",
    ".long -({mb2_magic} + (mb2_end - mb2_header))",
    ".short 0",           // end tag
    ".short 0",
    ".long 8",
    "mb2_end:",
    "",
    ".section .boot32, \"ax\"",
    ".code32",
    ".global hv_x86_start",
    "hv_x86_start:",
    "    cli",
    "    cld",
    "    movl $boot_stack_top, %esp",
    "    movl %eax, boot_magic",
    "    movl %ebx, boot_info",
    // Zero the bss (QEMU's kludge loader does; not every loader must).
    "    movl $hv_load_end, %edi",
    "    movl $hv_bss_end, %ecx",
    "    subl %edi, %ecx",
    "    xorl %eax, %eax",
    "    rep stosb",
    // Long mode present? CPUID 0x80000001 EDX bit 29.
    "    movl $0x80000000, %eax",
    "    cpuid",
    "    cmpl $0x80000001, %eax",
    "    jb 9f",
    "    movl $0x80000001, %eax",
    "    cpuid",
    "    btl $29, %edx",
    "    jnc 9f",
    // PML4[0] -> PDPT; PDPT[0..4] -> PD0..3; PDs map 4 GiB in 2 MiB pages.
    "    movl $pdpt, %eax",
    "    orl $0x3, %eax",
    "    movl %eax, pml4",
    "    movl $pds, %eax",
    "    orl $0x3, %eax",
    "    movl $pdpt, %edi",
    "    movl $4, %ecx",
    "1:  movl %eax, (%edi)",
    "    addl $0x1000, %eax",
    "    addl $8, %edi",
    "    loop 1b",
    "    movl $pds, %edi",
    "    movl $0x83, %eax",    // present, writable, 2 MiB page
    "    xorl %edx, %edx",
    "    movl $2048, %ecx",
    "2:  movl %eax, (%edi)",
    "    movl %edx, 4(%edi)",
    "    addl $0x200000, %eax",
    "    adcl $0, %edx",
    "    addl $8, %edi",
    "    loop 2b",
    "    movl %cr4, %eax",
    "    orl $(1 << 5), %eax",  // PAE
    "    movl %eax, %cr4",
    "    movl $pml4, %eax",
    "    movl %eax, %cr3",
    "    movl $0xc0000080, %ecx", // EFER
    "    rdmsr",
    "    orl $(1 << 8), %eax",  // LME
    "    wrmsr",
    "    movl %cr0, %eax",
    "    orl $0x80000001, %eax", // PG | PE
    "    movl %eax, %cr0",
    "    lgdt gdt64_pointer",
    "    ljmp $0x08, $3f",
    // No long mode: say so on COM1 and stop as a panic does.
    "9:  movl $no_lm_msg, %esi",
    "8:  movb (%esi), %al",
    "    testb %al, %al",
    "    jz 7f",
    "    movw ${com1}, %dx",
    "    outb %al, %dx",
    "    incl %esi",
    "    jmp 8b",
    "7:  movb ${exit_failure}, %al",
    "    movw ${exit_port}, %dx",
    "    outb %al, %dx",
    "6:  cli",
    "    hlt",
    "    jmp 6b",
    ".code64",
    "3:  movw $0x10, %ax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %ss",
    "    movw %ax, %fs",
    "    movw %ax, %gs",
    "    movq $boot_stack_top, %rsp",
    "    movl boot_magic, %edi",
    "    movl boot_info, %esi",
    "    call {main}",
    "4:  hlt",
    "    jmp 4b",
    "",
    ".section .rodata",
    "no_lm_msg: .asciz \"hv-x86: this CPU has no long mode\\r\\n\"",
    ".balign 8",
    "gdt64:",
    "    .quad 0",
    "    .quad 0x00af9a000000ffff", // 0x08: 64-bit code
    "    .quad 0x00cf92000000ffff", // 0x10: data
    "gdt64_end:",
    "gdt64_pointer:",
    "    .short gdt64_end - gdt64 - 1",
    "    .long gdt64",
    "",
    ".section .data",
    ".balign 4",
    "boot_magic: .long 0",
    "boot_info: .long 0",
    "",
    ".section .bss",
    ".balign 4096",
    "pml4: .skip 4096",
    "pdpt: .skip 4096",
    "pds: .skip 4 * 4096",
    "boot_stack: .skip 65536",
    "boot_stack_top:",
    mb1_magic = const MB1_HEADER_MAGIC,
    mb1_flags = const MB1_FLAGS,
    mb2_magic = const MB2_HEADER_MAGIC,
    com1 = const boards::PC.console.base,
    exit_port = const crate::DEBUG_EXIT_PORT,
    exit_failure = const crate::EXIT_FAILURE,
    main = sym crate::main,
    options(att_syntax),
);

unsafe extern "C" {
    /// First byte of the image (linker.ld).
    static hv_load_start: u8;
    /// End of the image's bss, page tables and boot stack included.
    static hv_bss_end: u8;
}

/// What the loader left in memory: the identity-mapped 4 GiB, minus this
/// image (whose data and stack change under Rust's feet). Read freely only
/// before the heap exists (the loader's information and the firmware's
/// tables); after that, only boot modules ([`LoaderMemory::read_module`]),
/// which the heap never gets, and firmware tables, which lie outside the
/// available RAM the heap is made of.
pub struct LoaderMemory;

impl LoaderMemory {
    /// Exactly the `len` bytes of a boot module at `start` (heap::init keeps
    /// every module's range out of the heap, so they stay as loaded).
    pub fn read_module(start: u64, len: usize) -> Option<&'static [u8]> {
        static MEM: LoaderMemory = LoaderMemory;
        let b = MEM.read(start, len)?;
        (b.len() == len).then_some(b)
    }
}

impl Memory for LoaderMemory {
    fn read(&self, addr: u64, max: usize) -> Option<&[u8]> {
        let image = (&raw const hv_load_start) as u64..(&raw const hv_bss_end) as u64;
        let limit = if addr < image.start {
            image.start
        } else if addr >= image.end {
            IDENTITY_MAPPED
        } else {
            return None;
        };
        if addr == 0 || addr >= limit {
            return None;
        }
        let len = (max as u64).min(limit - addr) as usize;
        // SAFETY: [addr, addr + len) is non-null, below 4 GiB (identity
        // mapped by the boot page tables, so reading it cannot fault) and
        // outside this image, so nothing in this program writes it while the
        // slice lives: one CPU runs, and callers read only what the heap
        // never gets (see the type's comment); u8 has no alignment or
        // validity requirement. A
        // loader pointing into MMIO could make this read a device register:
        // that is the loader's lie to tell, and the parser bounds how much.
        Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
    }
}
