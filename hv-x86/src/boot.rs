//! From the boot loader to Rust: Multiboot headers, then 32-bit protected
//! mode to long mode with an identity map of the first 4 GiB in 2 MiB pages.
//!
//! The image carries two headers. Multiboot2 is what GRUB and Bochs use (a
//! later issue boots it under Bochs from a GRUB rescue ISO). QEMU's `-kernel`
//! only speaks Multiboot1 and refuses 64-bit ELFs, so a Multiboot1 header
//! with the a.out-kludge address fields (flag 16) lets it load the same file
//! as a flat image at 1 MiB. Both enter `hv_x86_start` in 32-bit protected
//! mode with the loader's magic in eax and its info pointer in ebx.

/// Multiboot1 header magic.
pub const MB1_HEADER_MAGIC: u32 = 0x1bad_b002;
/// Multiboot1 flags: memory info, and the address fields are valid.
const MB1_FLAGS: u32 = (1 << 1) | (1 << 16);
/// Multiboot2 header magic.
pub const MB2_HEADER_MAGIC: u32 = 0xe852_50d6;
/// Value in eax when a Multiboot1 loader enters us.
pub const MB1_BOOT_MAGIC: u32 = 0x2bad_b002;
/// Value in eax when a Multiboot2 loader enters us.
pub const MB2_BOOT_MAGIC: u32 = 0x36d7_6289;

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
    // No long mode: say so on COM1 and stop.
    "9:  movl $no_lm_msg, %esi",
    "8:  movb (%esi), %al",
    "    testb %al, %al",
    "    jz 7f",
    "    movw $0x3f8, %dx",
    "    outb %al, %dx",
    "    incl %esi",
    "    jmp 8b",
    "7:  hlt",
    "    jmp 7b",
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
    "boot_stack: .skip 16384",
    "boot_stack_top:",
    mb1_magic = const MB1_HEADER_MAGIC,
    mb1_flags = const MB1_FLAGS,
    mb2_magic = const MB2_HEADER_MAGIC,
    main = sym crate::main,
    options(att_syntax),
);
