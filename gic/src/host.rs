//! The physical GICv3, as the hypervisor at EL2 uses it.

use core::ptr::NonNull;

use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicError, GicV3, Group};
use arm_gic::{IntId, Trigger, UniqueMmioPointer};
#[cfg(target_arch = "aarch64")]
use arm_gic::{
    InterruptGroup,
    gicv3::{GicCpuInterface, SgiTarget, SgiTargetGroup},
};
#[cfg(target_arch = "aarch64")]
use arm_sysregs::el1::{
    accessors::{read_icc_ctlr_el1, write_icc_ctlr_el1, write_icc_dir_el1},
    registers::{IccCtlrEl1, IccDirEl1},
};

/// GICR_TYPER.Last: this is the region's last redistributor frame.
const GICR_TYPER_LAST: u64 = 1 << 4;
/// GICR_TYPER.VLPIS: GICv4 frames (two extra 64 KiB pages each).
const GICR_TYPER_VLPIS: u64 = 1 << 1;

/// Priority the hypervisor gives its own interrupts (lower is more urgent).
pub const HYP_PRIORITY: u8 = 0x80;

/// Affinity fields (Aff3..Aff0) of an MPIDR, packed as GICR_TYPER[63:32] does.
pub const fn mpidr_to_gicr_affinity(mpidr: u64) -> u32 {
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    (aff0 | aff1 << 8 | aff2 << 16 | aff3 << 24) as u32
}

/// Finds, among redistributor affinities in frame order, the frame whose
/// affinity matches `mpidr`.
pub fn redistributor_for(
    mpidr: u64,
    frame_affinities: impl IntoIterator<Item = u32>,
) -> Option<usize> {
    let want = mpidr_to_gicr_affinity(mpidr);
    frame_affinities.into_iter().position(|a| a == want)
}

/// Why the GIC could not be brought up.
#[derive(Debug)]
pub enum HostGicError {
    /// arm-gic refused (bad frame layout, index out of range).
    Gic(GicError),
    /// No redistributor frame carries this CPU's affinity.
    NoRedistributor {
        /// The CPU's MPIDR.
        mpidr: u64,
    },
}

impl From<GicError> for HostGicError {
    fn from(e: GicError) -> Self {
        Self::Gic(e)
    }
}

impl core::fmt::Display for HostGicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Gic(e) => write!(f, "{e}"),
            Self::NoRedistributor { mpidr } => write!(f, "no redistributor for mpidr {mpidr:#x}"),
        }
    }
}

/// The physical GICv3 distributor and redistributors.
pub struct HostGic {
    gic: GicV3<'static>,
    frames: usize,
}

// SAFETY: the GIC's registers are MMIO shared by every CPU by design; the
// driver holds raw pointers only because safe-mmio does. Callers serialize
// access through a lock, and per-CPU redistributor frames are only touched
// for the CPU index the caller names.
unsafe impl Send for HostGic {}

impl HostGic {
    /// Takes over the GIC at `gicd` / `gicr` with `frames` redistributor frames.
    ///
    /// # Safety
    ///
    /// `gicd` and `gicr` must be the device-mapped bases of this system's GICv3
    /// distributor and first redistributor region, `frames` must not exceed the
    /// frames in that region, and no other driver instance may exist.
    pub unsafe fn new(gicd: usize, gicr: usize, frames: usize) -> Result<Self, HostGicError> {
        let gicd =
            NonNull::new(gicd as *mut Gicd).ok_or(GicError::InvalidRedistributorFrameLayout)?;
        let gicr =
            NonNull::new(gicr as *mut GicrSgi).ok_or(GicError::InvalidRedistributorFrameLayout)?;
        // Count the frames that exist: the region may be sized for more CPUs
        // than the system has, and arm-gic initializes every frame it is told
        // about. Frames end at the one whose GICR_TYPER.Last is set.
        let mut present = 0;
        let mut offset = 0usize;
        while present < frames {
            // SAFETY: `offset` stays inside the region the caller vouched for
            // (at most `frames` frames of at least 128 KiB); GICR_TYPER is a
            // read-only 64-bit register at offset 8 of each frame.
            let typer =
                unsafe { ((gicr.as_ptr() as usize + offset + 8) as *const u64).read_volatile() };
            present += 1;
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            offset += if typer & GICR_TYPER_VLPIS != 0 {
                0x4_0000
            } else {
                0x2_0000
            };
        }
        // SAFETY: the caller guarantees both are this GIC's mapped registers
        // and that nobody else drives them; `present` frames exist.
        let gic = unsafe { GicV3::new(UniqueMmioPointer::new(gicd), gicr, present)? };
        let frames = present;
        Ok(Self { gic, frames })
    }

    /// Number of redistributor frames this driver covers.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The redistributor frame serving `mpidr`.
    pub fn frame_for(&mut self, mpidr: u64) -> Result<usize, HostGicError> {
        let mut affinities = [0u32; 256];
        let mut n = 0;
        // Walk frames until GICR_TYPER.Last: a region may be sized for more
        // CPUs than exist, and frames past the last one may not decode.
        while n < self.frames.min(affinities.len()) {
            let typer = self.gic.gicr_typer(n)?;
            affinities[n] = mpidr_to_gicr_affinity(typer.core_mpidr());
            n += 1;
            if typer.last_redistributor() {
                break;
            }
        }
        redistributor_for(mpidr, affinities[..n].iter().copied())
            .ok_or(HostGicError::NoRedistributor { mpidr })
    }

    #[cfg(target_arch = "aarch64")]
    /// Resets the distributor and every redistributor to a known state (all
    /// interrupts group 1 non-secure, disabled) and brings the calling CPU's
    /// interface up. Call once, on the boot CPU.
    pub fn init_global(&mut self, frame: usize) {
        self.gic.setup(frame);
        Self::cpu_interface_eoimode1();
    }

    #[cfg(target_arch = "aarch64")]
    /// Wakes the calling CPU's redistributor and interface. Call on each
    /// secondary CPU.
    pub fn init_cpu(&mut self, frame: usize) {
        self.gic.init_cpu(frame);
        GicCpuInterface::enable_group1(true);
        Self::cpu_interface_eoimode1();
    }

    #[cfg(target_arch = "aarch64")]
    /// Sets ICC_CTLR_EL1.EOImode: EOIR drops priority only; DIR deactivates.
    fn cpu_interface_eoimode1() {
        let mut ctlr = read_icc_ctlr_el1();
        ctlr |= IccCtlrEl1::EOIMODE;
        write_icc_ctlr_el1(ctlr);
        GicCpuInterface::set_priority_mask(0xff);
    }

    #[cfg(target_arch = "aarch64")]
    /// True when the calling CPU's interface is in EOImode 1.
    pub fn eoimode1() -> bool {
        read_icc_ctlr_el1().contains(IccCtlrEl1::EOIMODE)
    }

    /// Enables a private interrupt (SGI/PPI) on the CPU served by `frame`.
    pub fn enable_private(
        &mut self,
        intid: IntId,
        frame: usize,
        level: bool,
    ) -> Result<(), HostGicError> {
        let trigger = if level { Trigger::Level } else { Trigger::Edge };
        if !intid.is_sgi() {
            self.gic.set_trigger(intid, Some(frame), trigger)?;
        }
        self.gic.set_group(intid, Some(frame), Group::Group1NS)?;
        self.gic
            .set_interrupt_priority(intid, Some(frame), HYP_PRIORITY)?;
        self.gic.enable_interrupt(intid, Some(frame), true)?;
        Ok(())
    }

    /// Enables a shared interrupt (SPI), routed to the CPU with `mpidr`.
    pub fn enable_shared(
        &mut self,
        intid: IntId,
        mpidr: u64,
        level: bool,
    ) -> Result<(), HostGicError> {
        let trigger = if level { Trigger::Level } else { Trigger::Edge };
        self.gic.set_trigger(intid, None, trigger)?;
        self.gic.set_group(intid, None, Group::Group1NS)?;
        self.gic.set_interrupt_priority(intid, None, HYP_PRIORITY)?;
        self.gic.distributor().set_routing(intid, Some(mpidr))?;
        self.gic.enable_interrupt(intid, None, true)?;
        Ok(())
    }

    #[cfg(target_arch = "aarch64")]
    /// Acknowledges the highest-priority pending group 1 interrupt.
    pub fn acknowledge() -> Option<IntId> {
        GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1)
    }

    #[cfg(target_arch = "aarch64")]
    /// Drops the running priority (EOImode 1: does not deactivate).
    pub fn priority_drop(intid: IntId) {
        GicCpuInterface::end_interrupt(intid, InterruptGroup::Group1);
    }

    #[cfg(target_arch = "aarch64")]
    /// Deactivates an interrupt whose priority was dropped.
    pub fn deactivate(intid: IntId) {
        write_icc_dir_el1(IccDirEl1::from_bits_retain(intid.raw_value() as u64));
    }

    #[cfg(target_arch = "aarch64")]
    /// Sends SGI `sgi` to every other CPU.
    pub fn send_sgi_to_others(sgi: IntId) -> Result<(), HostGicError> {
        GicCpuInterface::send_sgi(sgi, SgiTarget::All, SgiTargetGroup::CurrentGroup1)?;
        Ok(())
    }
}

#[cfg(target_arch = "aarch64")]
/// Sends SGI `sgi` to the one CPU whose affinity is `mpidr` (Aff0 < 16).
pub fn send_sgi_to(sgi: IntId, mpidr: u64) -> Result<(), HostGicError> {
    let target = SgiTarget::List {
        affinity3: (mpidr >> 32) as u8,
        affinity2: (mpidr >> 16) as u8,
        affinity1: (mpidr >> 8) as u8,
        target_list: 1 << (mpidr & 0xf),
    };
    GicCpuInterface::send_sgi(sgi, target, SgiTargetGroup::CurrentGroup1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_packing_matches_gicr_typer() {
        assert_eq!(mpidr_to_gicr_affinity(0x8000_0000), 0);
        assert_eq!(mpidr_to_gicr_affinity(0x0000_0103), 0x0103);
        assert_eq!(mpidr_to_gicr_affinity(0xab_0001_0203), 0xab01_0203);
    }

    #[test]
    fn redistributor_matched_by_affinity_not_position() {
        // A board whose frames are in reverse CPU order.
        let frames = [0x0003, 0x0002, 0x0001, 0x0000];
        assert_eq!(redistributor_for(0x8000_0000, frames), Some(3));
        assert_eq!(redistributor_for(0x1, frames), Some(2));
        assert_eq!(redistributor_for(0x100, frames), None);
    }
}
