//! The host platform, as the boot device tree describes it.
//!
//! [`Platform::from_fdt`] walks the flattened device tree once and returns a
//! typed description: memory banks, reservations, CPUs, the interrupt
//! controller, timer PPIs, the console UART, an SMMUv3 and the PSCI conduit.
//! It owns the validation of that tree: every property length is checked,
//! `#address-cells`/`#size-cells` come from the parent of the node being read
//! (the root's own `reg` uses the spec defaults, nothing is ever read above
//! it), cell counts outside what a 64-bit address can hold are refused, and
//! every failure is a [`DtError`] naming the node, never a panic. It allocates
//! nothing: the description has fixed capacities, because it is built before
//! the hypervisor has a heap.
//!
//! Reader: dtoolkit (see `docs/decisions.md`): it validates the whole blob's
//! structure before handing out a single node, so later walks cannot run off
//! the end, and it is fuzzed upstream.
//!
//! PLACEHOLDER: the parser body is being written; types are final.

use arrayvec::ArrayVec;

use crate::memory::{PhysRange, RangeSet};

/// Most memory banks kept.
pub const MAX_BANKS: usize = 16;
/// Most reserved ranges kept (memreserve + /reserved-memory).
pub const MAX_RESERVED: usize = 32;
/// Most CPUs described.
pub const MAX_CPUS: usize = 64;
/// Most GICv3 redistributor regions.
pub const MAX_GICR_REGIONS: usize = 8;

/// How a CPU is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI CPU_ON.
    Psci,
    /// Spin table at the given release address.
    SpinTable(u64),
    /// Anything else, or none (the boot CPU on some boards).
    Other,
}

/// One CPU node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// MPIDR affinity fields (Aff3..Aff0) as the `reg` property gives them.
    pub mpidr: u64,
    /// How to bring it up.
    pub enable_method: EnableMethod,
}

/// The SMCCC conduit PSCI calls use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `smc #0` (firmware at EL3, or QEMU with virtualization=on).
    Smc,
    /// `hvc #0` (a hypervisor below us: unusable from EL2).
    Hvc,
}

/// PSCI as `/psci` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Psci {
    /// Conduit from the `method` property.
    pub conduit: Conduit,
    /// True when compatible lists arm,psci-0.2 or later (function IDs are
    /// then the standard ones).
    pub v0_2_or_later: bool,
}

/// An interrupt as the GIC binding encodes it, already resolved to an INTID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    /// GIC INTID: PPIs are 16..32, SPIs 32..1020.
    pub intid: u32,
    /// True for level-sensitive, false for edge.
    pub level: bool,
}

/// The interrupt controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gic {
    /// GICv3 (`arm,gic-v3`).
    V3 {
        /// Distributor.
        gicd: PhysRange,
        /// Redistributor regions (`#redistributor-regions`, default 1).
        gicr: ArrayVec<PhysRange, MAX_GICR_REGIONS>,
        /// `redistributor-stride`, when given (0 otherwise: use GICR_TYPER.Last).
        gicr_stride: u64,
        /// Virtualization maintenance interrupt (PPI).
        maintenance: Option<Irq>,
    },
    /// GICv2 (`arm,gic-400`, `arm,cortex-a15-gic`, ...): described, not driven.
    V2 {
        /// Distributor.
        gicd: PhysRange,
        /// CPU interface.
        gicc: PhysRange,
        /// Virtualization maintenance interrupt (PPI).
        maintenance: Option<Irq>,
    },
}

/// Architected timer PPIs (`arm,armv8-timer`), in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// Secure EL1 physical timer.
    pub sec_phys: Irq,
    /// Non-secure EL1 physical timer.
    pub phys: Irq,
    /// Virtual timer.
    pub virt: Irq,
    /// EL2 (hypervisor) physical timer.
    pub hyp_phys: Irq,
    /// `clock-frequency` when the firmware failed to set CNTFRQ_EL0.
    pub clock_frequency: Option<u32>,
}

/// Kind of the console UART.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// `arm,pl011`.
    Pl011,
    /// `cdns,uart-r1p12` / `xlnx,xuartps`.
    Cadence,
    /// `ns16550a`, `snps,dw-apb-uart`, `brcm,bcm2835-aux-uart` and friends.
    Ns16550,
    /// Something we cannot drive.
    Other,
}

/// The console UART: `/chosen/stdout-path` resolved (through `/aliases`),
/// else the first enabled PL011.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Register interface.
    pub kind: UartKind,
    /// MMIO range.
    pub regs: PhysRange,
    /// Its interrupt, when it has one in the GIC's domain.
    pub irq: Option<Irq>,
}

/// An SMMUv3 (`arm,smmu-v3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Smmu {
    /// MMIO range.
    pub regs: PhysRange,
}

/// Everything the hypervisor learns from the boot device tree.
#[derive(Clone, Debug)]
pub struct Platform<'a> {
    /// Root `model` (or first `compatible`), for the banner.
    pub model: &'a str,
    /// RAM banks from every `device_type = "memory"` node, merged.
    pub memory: RangeSet<MAX_BANKS>,
    /// `/memreserve/` entries and `/reserved-memory` children with `reg`.
    pub reserved: RangeSet<MAX_RESERVED>,
    /// CPU nodes in tree order (the boot CPU is the one whose MPIDR the
    /// hypervisor reads at entry, not necessarily the first).
    pub cpus: ArrayVec<Cpu, MAX_CPUS>,
    /// The interrupt controller.
    pub gic: Gic,
    /// The architected timer.
    pub timer: Timer,
    /// The console UART, when one could be found.
    pub uart: Option<Uart>,
    /// The first enabled SMMUv3.
    pub smmu: Option<Smmu>,
    /// PSCI, when described.
    pub psci: Option<Psci>,
    /// `/chosen/bootargs` (the hypervisor's own command line in Xen's
    /// convention is `xen,xen-bootargs`; both are kept for later).
    pub bootargs: Option<&'a str>,
}

/// Why the device tree was refused. Each names the node (a path or a node
/// name) it came from, so the boot log says where to look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtError<'a> {
    /// The header or structure block is invalid (bad magic, truncated,
    /// offsets or sizes out of bounds, unterminated strings or nodes).
    Malformed(&'static str),
    /// A required node is absent.
    Missing(&'static str),
    /// A property has the wrong length or contents.
    BadProperty {
        /// The node it was read from.
        node: &'a str,
        /// The property.
        property: &'static str,
    },
    /// `#address-cells` or `#size-cells` outside what a 64-bit address holds.
    BadCells {
        /// The node whose children would use these cell counts.
        node: &'a str,
    },
    /// A fixed capacity was reached.
    TooMany {
        /// What overflowed.
        what: &'static str,
        /// The capacity.
        max: usize,
    },
}
