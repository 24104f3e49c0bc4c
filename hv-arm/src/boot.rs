//! What runs before any Rust code: the arm64 Image header, the boot page
//! table and the routine that turns the EL2 MMU and caches on.
//!
//! aarch64-rt's entry calls `enable_mmu` first thing (before the bss is
//! zeroed, before any lock can be taken: exclusives are unreliable with the
//! MMU off), on the boot CPU and on every secondary. We provide our own
//! `enable_mmu` rather than aarch64-rt's: at EL2 TCR_EL2.PS sits at bits
//! 18:16 (the crate writes the EL1 IPS position), the stale-TLB flush must be
//! `tlbi alle2`, and the same early routine is the place to stop FP/SIMD
//! trapping and route physical interrupts to EL2.

use aarch64_rt::InitialPagetable;
use boards::{Attr, Profile, SELECTED};

// The arm64 Image header (Documentation/arch/arm64/booting.rst in Linux):
// code0 branches over the header to the entry point; text_offset and
// image_size come from the linker script; flags = little endian, 4 KiB
// pages, placed at (2 MiB aligned RAM base) + text_offset.
core::arch::global_asm!(
    ".section .init.header, \"ax\"",
    ".global hv_image_header",
    "hv_image_header:",
    "    b entry",
    "    .long 0",
    "    .quad hv_text_offset",
    "    .quad hv_image_size",
    "    .quad 0x2",
    "    .quad 0",
    "    .quad 0",
    "    .quad 0",
    "    .ascii \"ARM\\x64\"",
    "    .long 0",
);

/// MAIR_EL2: attribute 0 = Device-nGnRE, attribute 1 = Normal write-back
/// read/write-allocate.
const MAIR: u64 = 0x04 | (0xff << 8);
const ATTR_DEVICE: u64 = 0;
const ATTR_NORMAL: u64 = 1;

/// TCR_EL2: 39-bit VA (T0SZ = 25, walks start at level 1), 4 KiB granule,
/// inner-shareable write-back walks, RES1 bits 23 and 31. PS is filled in
/// from ID_AA64MMFR0_EL1 at run time.
const TCR: u64 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (1 << 31);

/// SCTLR_EL2: MMU, data and instruction caches, SP alignment check, plus the
/// RES1 bits of the non-VHE layout (4, 5, 11, 16, 18, 22, 23, 28, 29).
const SCTLR: u64 = (1 << 0)
    | (1 << 2)
    | (1 << 3)
    | (1 << 12)
    | (1 << 4)
    | (1 << 5)
    | (1 << 11)
    | (1 << 16)
    | (1 << 18)
    | (1 << 22)
    | (1 << 23)
    | (1 << 28)
    | (1 << 29);

/// HCR_EL2: EL1 is AArch64 (RW) and physical IRQ/FIQ/SError are routed to
/// EL2 (IMO/FMO/AMO); without them an IRQ arriving at EL2 would target EL1
/// and stay masked.
const HCR: u64 = (1 << 31) | (1 << 5) | (1 << 4) | (1 << 3);

/// CPTR_EL2 (non-VHE): RES1 bits, nothing trapped (FP/SIMD used by Rust code).
const CPTR: u64 = 0x33ff;

/// A level-1 block descriptor mapping GiB `gib` with `attr`.
const fn block(gib: u64, attr: Attr) -> usize {
    let base = gib << 30;
    let access_flag = 1 << 10;
    let desc = match attr {
        // Normal, inner shareable, executable.
        Attr::Normal => base | access_flag | (3 << 8) | (ATTR_NORMAL << 2) | 0b01,
        // Device, execute-never.
        Attr::Device => base | access_flag | (1 << 54) | (ATTR_DEVICE << 2) | 0b01,
    };
    desc as usize
}

/// The boot page table for a profile: an identity map of its windows in
/// 1 GiB blocks; everything else faults.
const fn boot_table(profile: &Profile) -> InitialPagetable {
    let mut table = [0usize; 512];
    let mut i = 0;
    while i < profile.windows.len() {
        let w = profile.windows[i];
        let mut gib = w.first_gib;
        while gib < w.first_gib + w.gibs && gib < 512 {
            table[gib as usize] = block(gib, w.attr);
            gib += 1;
        }
        i += 1;
    }
    InitialPagetable(table)
}

static BOOT_PAGETABLE: InitialPagetable = boot_table(&SELECTED);

core::arch::global_asm!(
    ".macro mov_imm64, reg:req, imm:req",
    r"    movz \reg, :abs_g3:\imm",
    r"    movk \reg, :abs_g2_nc:\imm",
    r"    movk \reg, :abs_g1_nc:\imm",
    r"    movk \reg, :abs_g0_nc:\imm",
    ".endm",
    ".section .init, \"ax\"",
    ".global enable_mmu",
    // Called with bl; preserves x0-x7 (boot arguments), clobbers x8-x12.
    "enable_mmu:",
    "    mov_imm64 x8, {cptr}",
    "    msr cptr_el2, x8",
    "    mov_imm64 x8, {hcr}",
    "    msr hcr_el2, x8",
    "    mov_imm64 x8, {mair}",
    "    msr mair_el2, x8",
    "    adrp x11, {table}",
    "    add x11, x11, :lo12:{table}",
    "    msr ttbr0_el2, x11",
    // TCR_EL2.PS = min(ID_AA64MMFR0_EL1.PARange, 48 bits).
    "    mov_imm64 x10, {tcr}",
    "    mrs x8, id_aa64mmfr0_el1",
    "    and x8, x8, #0xf",
    "    mov x12, #5",
    "    cmp x8, x12",
    "    csel x8, x8, x12, ls",
    "    bfi x10, x8, #16, #3",
    "    msr tcr_el2, x10",
    "    isb",
    "    tlbi alle2",
    "    ic iallu",
    "    dsb nsh",
    "    isb",
    "    mov_imm64 x9, {sctlr}",
    "    msr sctlr_el2, x9",
    "    isb",
    "    ret",
    ".purgem mov_imm64",
    cptr = const CPTR,
    hcr = const HCR,
    mair = const MAIR,
    tcr = const TCR,
    sctlr = const SCTLR,
    table = sym BOOT_PAGETABLE,
);

unsafe extern "C" {
    static hv_image_start: u8;
    static hv_image_end: u8;
}

/// Physical range of the whole image, bss and boot stack included.
pub fn image_range() -> common::memory::PhysRange {
    common::memory::PhysRange {
        start: (&raw const hv_image_start) as u64,
        end: (&raw const hv_image_end) as u64,
    }
}

/// True when `[addr, addr+len)` lies inside one boot-map window mapped with `attr`.
fn in_window(addr: u64, len: u64, attr: Attr) -> bool {
    let end = addr.saturating_add(len);
    SELECTED
        .windows
        .iter()
        .any(|w| w.attr == attr && w.start() <= addr && end <= w.end())
}

/// True when `[addr, addr+len)` lies inside one window mapped as normal memory.
pub fn in_normal_window(addr: u64, len: u64) -> bool {
    in_window(addr, len, Attr::Normal)
}

/// True when `[addr, addr+len)` lies inside one window mapped as device memory.
pub fn in_device_window(addr: u64, len: u64) -> bool {
    in_window(addr, len, Attr::Device)
}
