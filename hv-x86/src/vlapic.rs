//! The smallest useful virtual local APIC: one per vCPU, its APIC id, the
//! interrupt request and in-service registers, the task priority, and the
//! interrupt command register for IPIs to itself.
//!
//! It owns only that state and the priority rule between IRR, ISR and TPR
//! (SDM vol. 3, "Interrupt, Task, and Processor Priority"). It never
//! injects anything itself (the arch asks [`VLapic::pending`] and calls
//! [`VLapic::ack`] when it injects), never reaches another vCPU (an IPI it
//! cannot deliver to itself is handed back as [`IcrResult::NotDelivered`])
//! and never panics on a guest-chosen vector or ICR value.
//!
//! The ICR is the xAPIC layout as one 64-bit value, as the Hyper-V ICR MSR
//! carries it: low dword bits 31:0, destination in bits 63:56.

use core::fmt;

/// Vectors 0..16 are reserved: the APIC refuses to deliver them.
pub const FIRST_LEGAL_VECTOR: u8 = 16;

// ICR fields (SDM vol. 3, "Interrupt Command Register").
const ICR_VECTOR: u64 = 0xff;
const ICR_DELIVERY_MODE_SHIFT: u32 = 8;
const ICR_DELIVERY_MODE: u64 = 0b111 << ICR_DELIVERY_MODE_SHIFT;
const ICR_LOGICAL: u64 = 1 << 11;
/// Delivery status: read-only, always idle here (delivery is immediate).
const ICR_DELIVERY_STATUS: u64 = 1 << 12;
const ICR_SHORTHAND_SHIFT: u32 = 18;
const ICR_SHORTHAND: u64 = 0b11 << ICR_SHORTHAND_SHIFT;
const ICR_DEST_SHIFT: u32 = 56;

/// Delivery modes of ICR bits 10:8.
pub const DELIVERY_FIXED: u8 = 0b000;
pub const DELIVERY_LOWEST_PRIORITY: u8 = 0b001;
pub const DELIVERY_SMI: u8 = 0b010;
pub const DELIVERY_NMI: u8 = 0b100;
pub const DELIVERY_INIT: u8 = 0b101;
pub const DELIVERY_STARTUP: u8 = 0b110;

/// Destination shorthands of ICR bits 19:18.
const SHORTHAND_NONE: u64 = 0b00;
const SHORTHAND_SELF: u64 = 0b01;

/// A refused vLAPIC operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VlapicError {
    /// A vector below 16 (reserved for exceptions).
    IllegalVector(u8),
    /// `ack` of a vector that is not requested.
    NotRequested(u8),
}

impl fmt::Display for VlapicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VlapicError::IllegalVector(v) => write!(f, "vector {v} is below 16 (reserved)"),
            VlapicError::NotRequested(v) => write!(f, "vector {v} is not in the IRR"),
        }
    }
}

/// Why an ICR write did not reach this vLAPIC's IRR: the arch routes it
/// (other vCPUs, INIT/SIPI, NMI) or drops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotDelivered {
    /// Delivery mode other than fixed (ICR bits 10:8).
    DeliveryMode(u8),
    /// Logical destination mode.
    LogicalDestination,
    /// Physical destination that is not this APIC's id.
    OtherDestination(u8),
    /// "All including self" or "all excluding self".
    Broadcast,
    /// A fixed IPI with a vector below 16: the APIC drops it.
    IllegalVector(u8),
}

/// Outcome of an ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcrResult {
    /// A fixed IPI to self: the vector is now requested.
    Delivered(u8),
    /// Not delivered by this vLAPIC.
    NotDelivered(NotDelivered),
}

/// 256 bits, one per vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VectorSet([u64; 4]);

impl VectorSet {
    fn word_bit(v: u8) -> (usize, u64) {
        (usize::from(v >> 6), 1 << (v & 63))
    }

    fn set(&mut self, v: u8) {
        let (w, b) = Self::word_bit(v);
        if let Some(word) = self.0.get_mut(w) {
            *word |= b;
        }
    }

    fn clear(&mut self, v: u8) {
        let (w, b) = Self::word_bit(v);
        if let Some(word) = self.0.get_mut(w) {
            *word &= !b;
        }
    }

    fn contains(&self, v: u8) -> bool {
        let (w, b) = Self::word_bit(v);
        self.0.get(w).is_some_and(|word| word & b != 0)
    }

    /// The highest vector set.
    fn highest(&self) -> Option<u8> {
        self.0
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| (i as u32 * 64 + 63 - w.leading_zeros()) as u8)
    }
}

/// One vCPU's virtual local APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VLapic {
    id: u8,
    irr: VectorSet,
    isr: VectorSet,
    tpr: u8,
    icr: u64,
}

impl VLapic {
    /// A vLAPIC in its reset state with xAPIC id `id`.
    pub fn new(id: u8) -> Self {
        VLapic {
            id,
            irr: VectorSet::default(),
            isr: VectorSet::default(),
            tpr: 0,
            icr: 0,
        }
    }

    /// Its APIC id.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Requests `vector` (an interrupt arrives). Vectors below 16 are
    /// refused, as the APIC refuses to receive them.
    pub fn set_irr(&mut self, vector: u8) -> Result<(), VlapicError> {
        if vector < FIRST_LEGAL_VECTOR {
            return Err(VlapicError::IllegalVector(vector));
        }
        self.irr.set(vector);
        Ok(())
    }

    /// Whether `vector` is requested.
    pub fn irr_contains(&self, vector: u8) -> bool {
        self.irr.contains(vector)
    }

    /// Whether `vector` is in service.
    pub fn isr_contains(&self, vector: u8) -> bool {
        self.isr.contains(vector)
    }

    /// The processor priority class: the higher of the TPR's class and
    /// the class of the highest vector in service.
    pub fn ppr_class(&self) -> u8 {
        let isr_class = self.isr.highest().map_or(0, |v| v >> 4);
        (self.tpr >> 4).max(isr_class)
    }

    /// The highest requested vector whose priority class is above the
    /// processor priority class: the one to inject now.
    pub fn pending(&self) -> Option<u8> {
        self.irr.highest().filter(|v| (v >> 4) > self.ppr_class())
    }

    /// The arch injected `vector`: it moves from IRR to ISR.
    pub fn ack(&mut self, vector: u8) -> Result<(), VlapicError> {
        if vector < FIRST_LEGAL_VECTOR {
            return Err(VlapicError::IllegalVector(vector));
        }
        if !self.irr.contains(vector) {
            return Err(VlapicError::NotRequested(vector));
        }
        self.irr.clear(vector);
        self.isr.set(vector);
        Ok(())
    }

    /// End of interrupt: the highest vector in service is done. Returns
    /// it (None when nothing was in service: a spurious EOI is harmless).
    pub fn eoi(&mut self) -> Option<u8> {
        let v = self.isr.highest()?;
        self.isr.clear(v);
        Some(v)
    }

    /// The task priority (bits 7:4 class, 3:0 subclass).
    pub fn tpr(&self) -> u8 {
        self.tpr
    }

    /// Sets the task priority.
    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }

    /// The last ICR value written, delivery status idle.
    pub fn read_icr(&self) -> u64 {
        self.icr
    }

    /// Sends an IPI. Only a fixed IPI to this vLAPIC (shorthand "self",
    /// or no shorthand, physical mode, destination = its id) is
    /// delivered; anything else is handed back. The value is kept for
    /// [`VLapic::read_icr`] either way (the delivery status bit is
    /// read-only and reads idle).
    pub fn write_icr(&mut self, value: u64) -> IcrResult {
        self.icr = value & !ICR_DELIVERY_STATUS;
        let vector = (value & ICR_VECTOR) as u8;
        let mode = ((value & ICR_DELIVERY_MODE) >> ICR_DELIVERY_MODE_SHIFT) as u8;
        let shorthand = (value & ICR_SHORTHAND) >> ICR_SHORTHAND_SHIFT;
        let dest = (value >> ICR_DEST_SHIFT) as u8;
        if mode != DELIVERY_FIXED {
            return IcrResult::NotDelivered(NotDelivered::DeliveryMode(mode));
        }
        match shorthand {
            SHORTHAND_SELF => {}
            SHORTHAND_NONE if value & ICR_LOGICAL != 0 => {
                return IcrResult::NotDelivered(NotDelivered::LogicalDestination);
            }
            SHORTHAND_NONE if dest != self.id => {
                return IcrResult::NotDelivered(NotDelivered::OtherDestination(dest));
            }
            SHORTHAND_NONE => {}
            _ => return IcrResult::NotDelivered(NotDelivered::Broadcast),
        }
        match self.set_irr(vector) {
            Ok(()) => IcrResult::Delivered(vector),
            Err(_) => IcrResult::NotDelivered(NotDelivered::IllegalVector(vector)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icr(vector: u8, mode: u8, logical: bool, shorthand: u64, dest: u8) -> u64 {
        u64::from(vector)
            | u64::from(mode) << ICR_DELIVERY_MODE_SHIFT
            | if logical { ICR_LOGICAL } else { 0 }
            | shorthand << ICR_SHORTHAND_SHIFT
            | u64::from(dest) << ICR_DEST_SHIFT
    }

    #[test]
    fn illegal_vectors_are_refused() {
        let mut l = VLapic::new(0);
        for v in [0u8, 1, 15] {
            assert_eq!(l.set_irr(v), Err(VlapicError::IllegalVector(v)));
            assert_eq!(l.ack(v), Err(VlapicError::IllegalVector(v)));
        }
        assert_eq!(l.pending(), None, "nothing was requested");
        assert_eq!(l.set_irr(16), Ok(()));
        assert_eq!(l.set_irr(255), Ok(()));
        assert!(l.irr_contains(16) && l.irr_contains(255));
        assert_eq!(l.ack(200), Err(VlapicError::NotRequested(200)));
        assert!(!l.isr_contains(200));
    }

    #[test]
    fn highest_request_is_pending_first() {
        let mut l = VLapic::new(0);
        l.set_irr(0x31).unwrap();
        l.set_irr(0x85).unwrap();
        l.set_irr(0x40).unwrap();
        assert_eq!(l.pending(), Some(0x85));
        l.ack(0x85).unwrap();
        assert!(!l.irr_contains(0x85) && l.isr_contains(0x85));
        // 0x85 in service masks classes up to 8.
        assert_eq!(l.ppr_class(), 8);
        assert_eq!(l.pending(), None);
        l.set_irr(0x90).unwrap();
        assert_eq!(l.pending(), Some(0x90), "a higher class nests");
        l.set_irr(0x8f).unwrap();
        l.ack(0x90).unwrap();
        assert_eq!(l.pending(), None, "below the class in service: waits");
        assert_eq!(l.eoi(), Some(0x90));
        assert_eq!(l.pending(), None, "same class as in service: waits");
        assert_eq!(l.eoi(), Some(0x85));
        assert_eq!(l.pending(), Some(0x8f));
    }

    #[test]
    fn tpr_masks_classes_at_or_below_it() {
        let mut l = VLapic::new(0);
        l.set_irr(0x50).unwrap();
        l.set_tpr(0x50);
        assert_eq!(l.tpr(), 0x50);
        assert_eq!(l.pending(), None, "class 5 is not above TPR class 5");
        l.set_tpr(0x4f);
        assert_eq!(l.pending(), Some(0x50), "subclass bits do not mask");
        l.set_tpr(0xf0);
        l.set_irr(0xff).unwrap();
        assert_eq!(l.pending(), None, "TPR class 15 masks everything");
        l.set_tpr(0);
        assert_eq!(l.pending(), Some(0xff));
    }

    #[test]
    fn eoi_retires_the_highest_in_service() {
        let mut l = VLapic::new(0);
        assert_eq!(l.eoi(), None, "spurious EOI");
        for v in [0x30, 0x70, 0x50] {
            l.set_irr(v).unwrap();
            l.ack(v).unwrap();
        }
        assert_eq!(l.eoi(), Some(0x70));
        assert_eq!(l.eoi(), Some(0x50));
        assert_eq!(l.ppr_class(), 3);
        assert_eq!(l.eoi(), Some(0x30));
        assert_eq!(l.eoi(), None);
        assert_eq!(l.ppr_class(), 0);
        // Vectors in every word of the 256-bit registers.
        for v in [0x10, 0x40, 0x80, 0xc0, 0xff] {
            l.set_irr(v).unwrap();
            l.ack(v).unwrap();
        }
        for v in [0xff, 0xc0, 0x80, 0x40, 0x10] {
            assert_eq!(l.eoi(), Some(v));
        }
    }

    #[test]
    fn icr_delivers_fixed_ipis_to_self_only() {
        let mut l = VLapic::new(3);
        // Shorthand self: the destination field does not matter.
        assert_eq!(
            l.write_icr(icr(0x41, DELIVERY_FIXED, false, SHORTHAND_SELF, 9)),
            IcrResult::Delivered(0x41)
        );
        // Physical destination = own id.
        assert_eq!(
            l.write_icr(icr(0x42, DELIVERY_FIXED, false, SHORTHAND_NONE, 3)),
            IcrResult::Delivered(0x42)
        );
        assert!(l.irr_contains(0x41) && l.irr_contains(0x42));
        assert_eq!(
            l.write_icr(icr(0x43, DELIVERY_FIXED, false, SHORTHAND_NONE, 4)),
            IcrResult::NotDelivered(NotDelivered::OtherDestination(4))
        );
        assert_eq!(
            l.write_icr(icr(0x43, DELIVERY_FIXED, true, SHORTHAND_NONE, 3)),
            IcrResult::NotDelivered(NotDelivered::LogicalDestination)
        );
        for sh in [0b10, 0b11] {
            assert_eq!(
                l.write_icr(icr(0x43, DELIVERY_FIXED, false, sh, 3)),
                IcrResult::NotDelivered(NotDelivered::Broadcast)
            );
        }
        for mode in [
            DELIVERY_LOWEST_PRIORITY,
            DELIVERY_SMI,
            DELIVERY_NMI,
            DELIVERY_INIT,
            DELIVERY_STARTUP,
        ] {
            assert_eq!(
                l.write_icr(icr(0x43, mode, false, SHORTHAND_SELF, 3)),
                IcrResult::NotDelivered(NotDelivered::DeliveryMode(mode))
            );
        }
        assert_eq!(
            l.write_icr(icr(7, DELIVERY_FIXED, false, SHORTHAND_SELF, 3)),
            IcrResult::NotDelivered(NotDelivered::IllegalVector(7))
        );
        assert!(!l.irr_contains(0x43) && !l.irr_contains(7));
    }

    #[test]
    fn icr_reads_back_with_delivery_idle() {
        let mut l = VLapic::new(0);
        let v = icr(0x55, DELIVERY_FIXED, false, SHORTHAND_SELF, 0) | ICR_DELIVERY_STATUS;
        l.write_icr(v);
        assert_eq!(l.read_icr(), v & !ICR_DELIVERY_STATUS);
        assert_eq!(l.id(), 0);
    }

    #[test]
    fn errors_name_the_vector() {
        let s = format!("{}", VlapicError::IllegalVector(3));
        assert!(s.contains('3') && s.contains("below 16"));
        assert!(format!("{}", VlapicError::NotRequested(77)).contains("77"));
    }
}
