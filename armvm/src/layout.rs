//! The guest physical (IPA) memory map every domain sees.
//!
//! Modelled on Xen's arm guest map (xen/include/public/arch-arm.h), so a
//! guest or tool that knows Xen's layout finds the same things in the same
//! places: the GICv3 distributor at 0x0300_1000, redistributors from
//! 0x0302_0000 (one 128 KiB frame per vCPU), the vPL011 at 0x2200_0000 on
//! SPI 0 (INTID 32), the grant-table window at 0x3800_0000 and RAM from
//! 0x4000_0000. Everything not RAM is left out of stage 2, so every access
//! to it traps to the hypervisor, which emulates it or injects an abort.
//!
//! Above RAM bank 0's window, from 4 GiB to the top of the IPA space, lies
//! one extended region ([`EXT_REGION_BASE`], [`EXT_REGION_SIZE`]): guest
//! physical space that holds nothing, which the `/hypervisor` node offers
//! a Xen-aware guest for mapping foreign pages (grants of other domains).
//! Xen computes its extended regions per domain from the holes of its
//! guest map; ours has no second RAM bank, so the whole space above 4 GiB
//! is one hole. Static shared memory mapped there is cut out of it by the
//! builder (`guest_dt::extended_regions`).

/// Virtual GICv3 distributor.
pub const GICD_BASE: u64 = 0x0300_1000;
/// Size of the distributor frame.
pub const GICD_SIZE: u64 = 0x1_0000;
/// First virtual redistributor; vCPU n's frame is at `GICR_BASE + n * GICR_STRIDE`.
pub const GICR_BASE: u64 = 0x0302_0000;
/// One redistributor: RD_base and SGI_base, 64 KiB each.
pub const GICR_STRIDE: u64 = 0x2_0000;
/// The window reserved for redistributors (room for 128 vCPUs).
pub const GICR_WINDOW: u64 = 0x0100_0000;

/// Virtual PL011 UART.
pub const VPL011_BASE: u64 = 0x2200_0000;
/// Its MMIO frame.
pub const VPL011_SIZE: u64 = 0x1000;
/// Its interrupt: SPI 0, INTID 32, level-high.
pub const VPL011_INTID: u32 = 32;

/// Grant-table frames are mapped here (the Xen-ABI issue).
pub const GNTTAB_BASE: u64 = 0x3800_0000;
/// Size of the grant-table window.
pub const GNTTAB_SIZE: u64 = 0x0100_0000;

/// Guest RAM bank 0.
pub const RAM0_BASE: u64 = 0x4000_0000;
/// The most RAM bank 0 can hold (up to the 4 GiB line, as in Xen).
pub const RAM0_MAX: u64 = 0xc000_0000;

/// Timer PPIs in the guest DT: secure physical, non-secure physical,
/// virtual, hypervisor physical (the architected BSA numbers).
pub const TIMER_PPIS: [u32; 4] = [29, 30, 27, 26];
/// The virtual timer interrupt the guest uses at EL1.
pub const VTIMER_INTID: u32 = 27;
/// The event-channel upcall PPI (the Xen-ABI issue).
pub const EVTCHN_INTID: u32 = 31;

/// Number of SPIs the virtual distributor implements (INTIDs 32..32+N).
pub const VGIC_SPIS: u32 = 32;

/// Bits of IPA the stage-2 tables translate (VTCR_EL2.T0SZ = 64 - this).
pub const IPA_BITS: u32 = 40;

/// The extended region: from the end of RAM bank 0's window (4 GiB)...
pub const EXT_REGION_BASE: u64 = RAM0_BASE + RAM0_MAX;
/// ... to the top of the IPA space (1 TiB - 4 GiB).
pub const EXT_REGION_SIZE: u64 = (1 << IPA_BITS) - EXT_REGION_BASE;

/// MPIDR_EL1 value a guest reads on vCPU `n`: Aff0 = n % 16, Aff1 = n / 16,
/// bit 31 RES1 (16 CPUs per cluster, as the GICv3 SGI target list allows).
pub const fn vcpu_mpidr(n: u32) -> u64 {
    (1 << 31) | (((n / 16) as u64) << 8) | (n % 16) as u64
}

/// The vCPU a guest MPIDR names, if it names one of `nr_vcpus`.
pub const fn vcpu_of_mpidr(mpidr: u64, nr_vcpus: u32) -> Option<u32> {
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    if mpidr & 0xff_00ff_0000 != 0 || aff0 >= 16 {
        return None;
    }
    let n = aff1 * 16 + aff0;
    if n < nr_vcpus as u64 {
        Some(n as u32)
    } else {
        None
    }
}

/// Is `ipa..ipa+len` inside RAM of `ram_size` bytes?
pub const fn in_ram(ipa: u64, len: u64, ram_size: u64) -> bool {
    match ipa.checked_add(len) {
        Some(end) => ipa >= RAM0_BASE && end <= RAM0_BASE + ram_size,
        None => false,
    }
}

/// A frame the hypervisor emulates: nothing may be mapped over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceFrame {
    /// GICD and the GICR window.
    Gic,
    /// The vPL011.
    Uart,
}

/// The emulated device frame guest-physical `base..end` (exclusive)
/// touches, if any.
pub fn device_frame(base: u64, end: u64) -> Option<DeviceFrame> {
    let touches = |s: u64, len: u64| base < s + len && s < end;
    if touches(GICD_BASE, GICD_SIZE) || touches(GICR_BASE, GICR_WINDOW) {
        Some(DeviceFrame::Gic)
    } else if touches(VPL011_BASE, VPL011_SIZE) {
        Some(DeviceFrame::Uart)
    } else {
        None
    }
}

/// Why guest range `base..base+size` cannot hold static shared memory in
/// a domain with `ram_size` bytes of RAM, or None when that space is free:
/// inside the IPA space and clear of the RAM, the grant-table window and
/// the emulated device frames. (The extended regions are cut around it
/// by [`crate::guest_dt::extended_regions`].)
pub fn shm_conflict(base: u64, size: u64, ram_size: u64) -> Option<&'static str> {
    let Some(end) = base.checked_add(size) else {
        return Some("wraps");
    };
    let clear = |s: u64, len: u64| end <= s || base >= s + len;
    if size == 0 {
        Some("is empty")
    } else if end > 1 << IPA_BITS {
        Some("lies beyond the guest's 40-bit address space")
    } else if !clear(RAM0_BASE, ram_size) {
        Some("overlaps the domain's RAM")
    } else if !clear(GNTTAB_BASE, GNTTAB_SIZE) {
        Some("overlaps the grant-table window")
    } else {
        device_frame(base, end).map(|f| match f {
            DeviceFrame::Gic => "overlaps the virtual GIC",
            DeviceFrame::Uart => "overlaps the virtual UART",
        })
    }
}

#[cfg(test)]
mod shm_tests {
    use super::*;

    #[test]
    fn shared_memory_must_sit_in_free_guest_space() {
        let ram = 256 << 20;
        assert_eq!(shm_conflict(0x1_0000_0000, 0x20_0000, ram), None);
        assert_eq!(
            shm_conflict(RAM0_BASE + ram, 0x1000, ram),
            None,
            "just above RAM"
        );
        assert_eq!(shm_conflict(0x1000_0000, 0x1000, ram), None, "a low hole");
        assert_eq!(
            shm_conflict(RAM0_BASE + ram - 0x1000, 0x2000, ram),
            Some("overlaps the domain's RAM")
        );
        assert_eq!(
            shm_conflict(GNTTAB_BASE + 0x1000, 0x1000, ram),
            Some("overlaps the grant-table window")
        );
        assert_eq!(
            shm_conflict(GICR_BASE, 0x1000, ram),
            Some("overlaps the virtual GIC")
        );
        assert_eq!(
            shm_conflict(VPL011_BASE - 0x1000, 0x2000, ram),
            Some("overlaps the virtual UART")
        );
        assert_eq!(
            shm_conflict((1 << IPA_BITS) - 0x1000, 0x2000, ram),
            Some("lies beyond the guest's 40-bit address space")
        );
        assert_eq!(shm_conflict(u64::MAX - 0xfff, 0x2000, ram), Some("wraps"));
        assert_eq!(shm_conflict(0x1000_0000, 0, ram), Some("is empty"));
    }

    #[test]
    fn device_frames_are_where_the_layout_puts_them() {
        let page = |a: u64| device_frame(a, a + 0x1000);
        assert_eq!(page(GICD_BASE), Some(DeviceFrame::Gic));
        assert_eq!(
            page(GICR_BASE + GICR_WINDOW - 0x1000),
            Some(DeviceFrame::Gic)
        );
        assert_eq!(page(GICR_BASE + GICR_WINDOW), None);
        assert_eq!(page(VPL011_BASE), Some(DeviceFrame::Uart));
        assert_eq!(page(VPL011_BASE + VPL011_SIZE), None);
        assert_eq!(page(GNTTAB_BASE), None);
    }
}
