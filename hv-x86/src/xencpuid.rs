//! Xen's own CPUID leaves and hypercall page for x86 HVM guests (Xen's
//! public arch-x86/cpuid.h): how a guest finds Xen, its version, the
//! MSR that places the hypercall page, and its vCPU and domain ids.
//!
//! It owns the leaf values, the MSR number and the page's bytes. It never
//! writes guest memory (the arch copies [`hypercall_page`] to the address
//! [`hypercall_page_request`] returns, after checking it is the guest's
//! RAM) and never answers a leaf or MSR that belongs to viridian: with
//! viridian on, Hyper-V owns 0x40000000.. and Xen moves up by 0x100 (its
//! MSR by 0x200), the first free 0x100-aligned block, as Xen does.

use core::fmt;

use common::xen::abi::{XEN_MAJOR, XEN_MINOR};

/// First Xen leaf without viridian.
pub const XEN_CPUID_BASE: u32 = 0x4000_0000;
/// First Xen leaf with viridian on (viridian owns 0x40000000..=0x400000ff).
pub const XEN_CPUID_BASE_VIRIDIAN: u32 = 0x4000_0100;
/// Leaves base..=base+4.
const LAST_LEAF_OFFSET: u32 = 4;

/// "XenVMMXenVMM" as ebx, ecx, edx.
pub const XEN_SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];

/// Hypercall-page MSR without viridian.
pub const XEN_MSR_BASE: u32 = 0x4000_0000;
/// Hypercall-page MSR with viridian on (viridian's MSRs sit at 0x40000000..).
pub const XEN_MSR_BASE_VIRIDIAN: u32 = 0x4000_0200;

/// Leaf base+4, EAX: EBX holds the vCPU id.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf base+4, EAX: ECX holds the domain id.
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;

/// Entries in the hypercall page, one per hypercall number.
pub const HYPERCALL_ENTRIES: usize = 128;
/// Bytes per entry.
pub const HYPERCALL_ENTRY_SIZE: usize = 32;
/// One page.
pub const HYPERCALL_PAGE_SIZE: usize = 4096;

/// Guest-physical addresses stop below 2^52 (the architectural maximum).
const MAX_GPA_BITS: u32 = 52;

/// The first Xen leaf.
pub fn base(viridian_on: bool) -> u32 {
    if viridian_on {
        XEN_CPUID_BASE_VIRIDIAN
    } else {
        XEN_CPUID_BASE
    }
}

/// Xen's leaves as [eax, ebx, ecx, edx]; None for a leaf that is not one
/// of base..=base+4. `subleaf` only matters for base+4 (sub-leaf 0 holds
/// the ids; others are zero). Base+3 (TSC information) is all zeros: we
/// describe no TSC mode.
pub fn cpuid(
    viridian_on: bool,
    leaf: u32,
    subleaf: u32,
    domid: u16,
    vcpu: u32,
) -> Option<[u32; 4]> {
    let base = base(viridian_on);
    let offset = leaf.checked_sub(base).filter(|o| *o <= LAST_LEAF_OFFSET)?;
    Some(match offset {
        0 => [
            base + LAST_LEAF_OFFSET,
            XEN_SIGNATURE[0],
            XEN_SIGNATURE[1],
            XEN_SIGNATURE[2],
        ],
        1 => [((XEN_MAJOR << 16) | XEN_MINOR) as u32, 0, 0, 0],
        2 => [1, msr_index(viridian_on), 0, 0],
        4 if subleaf == 0 => [
            XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT,
            vcpu,
            u32::from(domid),
            0,
        ],
        _ => [0; 4],
    })
}

/// The MSR a guest writes to place the hypercall page.
pub fn msr_index(viridian_on: bool) -> u32 {
    if viridian_on {
        XEN_MSR_BASE_VIRIDIAN
    } else {
        XEN_MSR_BASE
    }
}

/// A refused write to the hypercall-page MSR: the arch injects #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallPageError {
    /// Bits 11:0 ask for a page other than 0; there is one page.
    PageIndex(u16),
    /// The address is at or above 2^52.
    AddressTooHigh(u64),
}

impl fmt::Display for HypercallPageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HypercallPageError::PageIndex(i) => {
                write!(f, "hypercall page index {i} (only page 0 exists)")
            }
            HypercallPageError::AddressTooHigh(a) => {
                write!(f, "hypercall page address {a:#x} beyond 52 bits")
            }
        }
    }
}

/// A WRMSR of `value` to `idx`: None when `idx` is not the hypercall-page
/// MSR; else the page's guest-physical address (value bits 63:12), or why
/// the write is refused (#GP). Bits 11:0 are the page index within the
/// hypercall area, which has one page.
pub fn hypercall_page_request(
    viridian_on: bool,
    idx: u32,
    value: u64,
) -> Option<Result<u64, HypercallPageError>> {
    if idx != msr_index(viridian_on) {
        return None;
    }
    let page = (value & 0xfff) as u16;
    if page != 0 {
        return Some(Err(HypercallPageError::PageIndex(page)));
    }
    if value >> MAX_GPA_BITS != 0 {
        return Some(Err(HypercallPageError::AddressTooHigh(value)));
    }
    Some(Ok(value))
}

/// The hypercall page: entry `n` at byte `n * 32` is `mov $n, %eax;
/// vmcall; ret`, padded with int3 so a call into the middle of an entry
/// traps instead of running on.
pub fn hypercall_page() -> [u8; HYPERCALL_PAGE_SIZE] {
    let mut page = [0xcc_u8; HYPERCALL_PAGE_SIZE];
    for (nr, entry) in page.chunks_exact_mut(HYPERCALL_ENTRY_SIZE).enumerate() {
        let imm = (nr as u32).to_le_bytes();
        let code = [
            0xb8, imm[0], imm[1], imm[2], imm[3], // mov $nr, %eax
            0x0f, 0x01, 0xc1, // vmcall
            0xc3, // ret
        ];
        if let Some(dst) = entry.get_mut(..code.len()) {
            dst.copy_from_slice(&code);
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_start_at_0x40000000_without_viridian() {
        let l0 = cpuid(false, 0x4000_0000, 0, 7, 1).unwrap();
        assert_eq!(l0[0], 0x4000_0004, "max leaf");
        let sig: Vec<u8> = l0[1..].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&sig, b"XenVMMXenVMM");
        assert_eq!(
            cpuid(false, 0x4000_0001, 0, 7, 1).unwrap()[0],
            (4 << 16) | 17
        );
        assert_eq!(
            cpuid(false, 0x4000_0002, 0, 7, 1).unwrap(),
            [1, 0x4000_0000, 0, 0]
        );
        assert_eq!(cpuid(false, 0x4000_0003, 0, 7, 1).unwrap(), [0; 4]);
        assert_eq!(
            cpuid(false, 0x4000_0004, 0, 7, 1).unwrap(),
            [(1 << 3) | (1 << 4), 1, 7, 0]
        );
        assert_eq!(cpuid(false, 0x4000_0004, 1, 7, 1).unwrap(), [0; 4]);
        assert_eq!(cpuid(false, 0x4000_0005, 0, 7, 1), None);
        assert_eq!(cpuid(false, 0x3fff_ffff, 0, 7, 1), None);
        assert_eq!(cpuid(false, 0x4000_0100, 0, 7, 1), None);
    }

    #[test]
    fn leaves_move_to_0x40000100_with_viridian() {
        for leaf in 0x4000_0000..=0x4000_00ff {
            assert_eq!(cpuid(true, leaf, 0, 3, 0), None, "{leaf:#x} is viridian's");
        }
        let l0 = cpuid(true, 0x4000_0100, 0, 3, 0).unwrap();
        assert_eq!(l0, [0x4000_0104, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]);
        assert_eq!(
            cpuid(true, 0x4000_0101, 0, 3, 0).unwrap()[0],
            (4 << 16) | 17
        );
        assert_eq!(
            cpuid(true, 0x4000_0102, 0, 3, 0).unwrap(),
            [1, 0x4000_0200, 0, 0]
        );
        assert_eq!(cpuid(true, 0x4000_0104, 0, 3, 2).unwrap(), [0x18, 2, 3, 0]);
        assert_eq!(cpuid(true, 0x4000_0105, 0, 3, 0), None);
        assert_eq!(cpuid(true, u32::MAX, 0, 3, 0), None);
    }

    #[test]
    fn hypercall_page_msr_follows_the_base() {
        assert_eq!(msr_index(false), 0x4000_0000);
        assert_eq!(msr_index(true), 0x4000_0200);
        assert_eq!(
            hypercall_page_request(false, 0x4000_0000, 0x1234_5000),
            Some(Ok(0x1234_5000))
        );
        assert_eq!(hypercall_page_request(true, 0x4000_0000, 0x1234_5000), None);
        assert_eq!(
            hypercall_page_request(true, 0x4000_0200, 0x1234_5000),
            Some(Ok(0x1234_5000))
        );
        assert_eq!(hypercall_page_request(false, 0x4000_0200, 0x1000), None);
    }

    #[test]
    fn hypercall_page_msr_refusals() {
        assert_eq!(
            hypercall_page_request(false, 0x4000_0000, 0x1234_5001),
            Some(Err(HypercallPageError::PageIndex(1)))
        );
        assert_eq!(
            hypercall_page_request(false, 0x4000_0000, 0x1234_5fff),
            Some(Err(HypercallPageError::PageIndex(0xfff)))
        );
        assert_eq!(
            hypercall_page_request(false, 0x4000_0000, 1 << 52),
            Some(Err(HypercallPageError::AddressTooHigh(1 << 52)))
        );
        assert!(format!("{}", HypercallPageError::PageIndex(3)).contains("index 3"));
        assert!(format!("{}", HypercallPageError::AddressTooHigh(1 << 60)).contains("52 bits"));
    }

    #[test]
    fn hypercall_page_entries() {
        let p = hypercall_page();
        let e = |n: usize| &p[n * 32..n * 32 + 32];
        let mut want0 = [0xcc; 32];
        want0[..9].copy_from_slice(&[0xb8, 0, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3]);
        assert_eq!(e(0), &want0);
        let mut want1 = want0;
        want1[1] = 1;
        assert_eq!(e(1), &want1);
        let mut want127 = want0;
        want127[1] = 127;
        assert_eq!(e(127), &want127);
        assert_eq!(p.len(), HYPERCALL_ENTRIES * HYPERCALL_ENTRY_SIZE);
    }
}
