//! The host platform, as the boot device tree describes it.
//!
//! [`Platform::from_fdt`] walks the flattened device tree once and returns a
//! typed description: memory banks, reservations, CPUs, the interrupt
//! controller, timer PPIs, the console UART, an SMMUv3 and the PSCI conduit.
//! It owns the validation of that tree: every property length is checked,
//! `#address-cells`/`#size-cells` come from the parent of the node being read
//! (the root's own `reg` uses the spec defaults, nothing is ever read above
//! it), cell counts outside what a 64-bit address can hold are refused, and
//! every failure is a [`DtError`] naming the node, never a panic. Only the
//! nodes it uses can fail the parse: an exotic bus elsewhere (a PCI host with
//! three address cells, an I2C bus without `ranges`) is walked past. Its
//! cost is linear in the blob: each node's properties are read in one pass,
//! [`crate::fdt`] refuses names longer than 256 bytes up front, and the
//! recursion is bounded at 32 levels on small frames. It allocates nothing:
//! the description has fixed capacities, because it is built before the
//! hypervisor has a heap.
//!
//! Reader: [`crate::fdt`], which validates the whole blob's structure before
//! handing out a single node (see `docs/decisions.md` for why not a crate).

use crate::fdt::{Fdt, Node as FdtNode};
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
/// Only interrupts whose `interrupt-parent` (the node's own, else the nearest
/// ancestor's) is the GIC are decoded; a node with no `interrupt-parent`
/// anywhere above it is taken to be in the GIC's domain.
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
    /// False when the tree has no usable `arm,armv8-timer` node (none, or
    /// one whose interrupts are not the GIC's): the PPIs are then the ones
    /// Arm's Base System Architecture assigns (INTIDs 29, 30, 27, 26).
    pub described: bool,
}

impl Timer {
    /// The Base System Architecture's timer PPIs, all level-sensitive.
    pub const BSA: Timer = Timer {
        sec_phys: Irq {
            intid: 29,
            level: true,
        },
        phys: Irq {
            intid: 30,
            level: true,
        },
        virt: Irq {
            intid: 27,
            level: true,
        },
        hyp_phys: Irq {
            intid: 26,
            level: true,
        },
        clock_frequency: None,
        described: false,
    };
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
/// whatever its kind, else the first enabled PL011.
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
    /// hypervisor reads at entry, not necessarily the first). A `disabled`
    /// CPU is kept (the spec's "quiescent", startable); a `fail`ed one is not.
    pub cpus: ArrayVec<Cpu, MAX_CPUS>,
    /// The interrupt controller.
    pub gic: Gic,
    /// The architected timer (BSA's PPIs when the tree has none usable).
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

/// Largest DTB accepted (the hypervisor maps and keeps it).
pub const MAX_DTB_SIZE: usize = 2 << 20;
/// Deepest node nesting walked.
pub const MAX_DEPTH: usize = 32;
/// FDT magic, big-endian.
const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the FDT header (version 17).
const FDT_HEADER: usize = 40;
/// Most `reg` entries read from one device or reserved-memory node.
const MAX_REGS: usize = 16;
/// Most `ranges` windows of all the buses above one node together.
const MAX_WINDOWS: usize = 32;

/// Reads `totalsize` from a DTB header, after checking the magic and that
/// the size is plausible (at least a header, at most [`MAX_DTB_SIZE`]).
pub fn dtb_total_size(header: &[u8]) -> Result<usize, DtError<'static>> {
    if header.len() < FDT_HEADER {
        return Err(DtError::Malformed("truncated header"));
    }
    match (be_u32_at(header, 0), be_u32_at(header, 4)) {
        (Some(FDT_MAGIC), Some(size)) => {
            let size = size as usize;
            if size < FDT_HEADER {
                Err(DtError::Malformed("totalsize smaller than the header"))
            } else if size > MAX_DTB_SIZE {
                Err(DtError::Malformed("totalsize larger than 2 MiB"))
            } else {
                Ok(size)
            }
        }
        (Some(_), Some(_)) => Err(DtError::Malformed(
            "bad magic (not a flattened device tree)",
        )),
        _ => Err(DtError::Malformed("truncated header")),
    }
}

impl core::fmt::Display for DtError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed device tree: {why}"),
            Self::Missing(what) => write!(f, "device tree has no {what}"),
            Self::BadProperty { node, property } => {
                write!(f, "node '{node}': bad '{property}' property")
            }
            Self::BadCells { node } => write!(
                f,
                "node '{node}': its parent's #address-cells/#size-cells are \
                 malformed or outside 1..=2 / 0..=2"
            ),
            Self::TooMany { what, max } => write!(f, "more {what} than the {max} supported"),
        }
    }
}

/// One `ranges` window: child bus addresses `[child, child + size)` are
/// CPU addresses from `cpu` (already composed up to the root).
#[derive(Clone, Copy, Debug)]
struct Window {
    child: u64,
    cpu: u64,
    size: u64,
}

/// The windows of every bus on the path being walked, outermost first.
/// One shared stack keeps the recursion's frames small.
type Windows = ArrayVec<Window, MAX_WINDOWS>;

/// How a bus's child addresses become CPU physical addresses.
#[derive(Clone, Copy, Debug)]
enum Bus<'a> {
    /// They already are (children of the root, or of an empty `ranges`
    /// chain up to it).
    Identity,
    /// Through `Windows[start..end]`.
    Windows { start: usize, end: usize },
    /// They cannot be: the bus has no `ranges` (not memory-mapped: I2C,
    /// SPI, ...) or an unreadable one. Reading a child's `reg` fails with
    /// this error, which names the bus.
    Opaque(DtError<'a>),
}

/// What a node gives its children: `#address-cells` / `#size-cells`
/// (`None` when the property is present but malformed: only an actual `reg`
/// read fails) and how their addresses translate.
#[derive(Clone, Copy, Debug)]
struct Cells<'a> {
    address: Option<u32>,
    size: Option<u32>,
    bus: Bus<'a>,
}

impl<'a> Cells<'a> {
    /// The spec's defaults, used for the root's own properties.
    const ROOT_PARENT: Cells<'static> = Cells {
        address: Some(2),
        size: Some(1),
        bus: Bus::Identity,
    };

    /// `node`'s own `#address-cells` / `#size-cells` (spec defaults when
    /// absent), with identity translation.
    fn counts(node: &Props<'a>) -> Cells<'a> {
        let read = |name: &str, default: u32| match node.property(name) {
            None => Some(default),
            Some(p) => be_u32(p),
        };
        Cells {
            address: read("#address-cells", 2),
            size: read("#size-cells", 1),
            bus: Bus::Identity,
        }
    }

    /// What `node` gives its children, given what its parent gave it. Its
    /// windows are pushed on `windows`; the caller pops them after the
    /// children.
    fn of(node: &Props<'a>, parent: &Cells<'a>, windows: &mut Windows) -> Cells<'a> {
        let mut cells = Cells::counts(node);
        let mark = windows.len();
        cells.bus = match Cells::bus(node, &cells, parent, windows) {
            Ok(bus) => bus,
            Err(e) => {
                windows.truncate(mark);
                Bus::Opaque(e)
            }
        };
        cells
    }

    fn bus(
        node: &Props<'a>,
        cells: &Cells<'a>,
        parent: &Cells<'a>,
        windows: &mut Windows,
    ) -> Result<Bus<'a>, DtError<'a>> {
        let name = node.name();
        let bad = DtError::BadProperty {
            node: name,
            property: "ranges",
        };
        let ranges = node.property("ranges").ok_or(bad)?;
        if ranges.is_empty() {
            return Ok(parent.bus);
        }
        if let Bus::Opaque(e) = parent.bus {
            return Err(e);
        }
        let (Some(ca), Some(cs), Some(pa)) = (cells.address, cells.size, parent.address) else {
            return Err(DtError::BadCells { node: name });
        };
        if !(1..=2).contains(&ca) || !(1..=2).contains(&cs) || !(1..=2).contains(&pa) {
            return Err(DtError::BadCells { node: name });
        }
        let entry = (ca + pa + cs) as usize * 4;
        if ranges.len() % entry != 0 {
            return Err(bad);
        }
        let start = windows.len();
        for e in ranges.chunks_exact(entry) {
            let (child, rest) = take_cells(e, ca as usize).ok_or(bad)?;
            let (parent_addr, rest) = take_cells(rest, pa as usize).ok_or(bad)?;
            let (size, _) = take_cells(rest, cs as usize).ok_or(bad)?;
            // A window the parent cannot translate is left out.
            if let Some(cpu) = parent.translate(windows, parent_addr, size) {
                windows
                    .try_push(Window { child, cpu, size })
                    .map_err(|_| DtError::TooMany {
                        what: "ranges entries on the buses above a node",
                        max: MAX_WINDOWS,
                    })?;
            }
        }
        Ok(Bus::Windows {
            start,
            end: windows.len(),
        })
    }

    /// The CPU address of `[addr, addr+size)` on this bus, if one window
    /// holds it whole.
    fn translate(&self, windows: &[Window], addr: u64, size: u64) -> Option<u64> {
        match self.bus {
            Bus::Identity => Some(addr),
            Bus::Opaque(_) => None,
            Bus::Windows { start, end } => windows.get(start..end)?.iter().find_map(|w| {
                let off = addr.checked_sub(w.child)?;
                (off.checked_add(size)? <= w.size)
                    .then(|| w.cpu.checked_add(off))
                    .flatten()
            }),
        }
    }
}

/// The properties the rules read.
const READ: [&str; 22] = [
    "status",
    "device_type",
    "compatible",
    "reg",
    "ranges",
    "interrupts",
    "interrupt-parent",
    "#interrupt-cells",
    "phandle",
    "linux,phandle",
    "#address-cells",
    "#size-cells",
    "enable-method",
    "cpu-release-addr",
    "#redistributor-regions",
    "redistributor-stride",
    "clock-frequency",
    "method",
    "model",
    "bootargs",
    "stdout-path",
    "linux,stdout-path",
];

/// One node's name and the values of the properties in [`READ`], gathered
/// in a single pass over its properties: a node with many properties costs
/// one scan, not one per rule.
#[derive(Clone, Copy, Debug)]
struct Props<'a> {
    name: &'a str,
    values: [Option<&'a [u8]>; READ.len()],
}

impl<'a> Props<'a> {
    fn of(node: &FdtNode<'a>) -> Self {
        let mut values = [None; READ.len()];
        for p in node.properties() {
            // The first of duplicates wins, as a lookup by name would find.
            if let Some(slot) = READ
                .iter()
                .position(|r| *r == p.name)
                .and_then(|i| values.get_mut(i))
                && slot.is_none()
            {
                *slot = Some(p.value);
            }
        }
        Props {
            name: node.name(),
            values,
        }
    }

    fn name(&self) -> &'a str {
        self.name
    }

    /// A property's value; `name` must be one of [`READ`].
    fn property(&self, name: &str) -> Option<&'a [u8]> {
        let i = READ.iter().position(|r| *r == name);
        debug_assert!(i.is_some(), "{name} is not gathered");
        *self.values.get(i?)?
    }
}

fn be_u32(b: &[u8]) -> Option<u32> {
    match b {
        [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

fn be_u32_at(b: &[u8], at: usize) -> Option<u32> {
    be_u32(b.get(at..at.checked_add(4)?)?)
}

/// Reads `cells` 32-bit cells (at most 2) from the front of `b`.
fn take_cells(b: &[u8], cells: usize) -> Option<(u64, &[u8])> {
    if cells > 2 {
        return None;
    }
    let (head, rest) = (b.get(..cells * 4)?, b.get(cells * 4..)?);
    let v = head
        .chunks_exact(4)
        .filter_map(be_u32)
        .fold(0u64, |v, c| (v << 32) | u64::from(c));
    Some((v, rest))
}

/// A string value up to its first NUL (the first entry of a list).
fn text(v: Option<&[u8]>) -> Option<&str> {
    let v = v?;
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    core::str::from_utf8(v.get(..end)?).ok()
}

fn str_prop<'a>(node: &Props<'a>, name: &str) -> Option<&'a str> {
    text(node.property(name))
}

fn has_compatible(node: &Props<'_>, wanted: &[&str]) -> bool {
    node.property("compatible").is_some_and(|p| {
        p.split(|&b| b == 0)
            .any(|c| wanted.iter().any(|w| w.as_bytes() == c))
    })
}

/// `status` absent, "okay" or "ok".
fn is_enabled(node: &Props<'_>) -> bool {
    matches!(str_prop(node, "status"), None | Some("okay") | Some("ok"))
}

fn phandle(node: &Props<'_>) -> Option<u32> {
    node.property("phandle")
        .or_else(|| node.property("linux,phandle"))
        .and_then(be_u32)
}

/// The node's `reg` entries as CPU physical ranges, with the cells and bus
/// its parent gives. No `reg` at all is no entries.
fn regs<'a, const N: usize>(
    node: &Props<'a>,
    parent: &Cells<'a>,
    windows: &[Window],
    out: &mut ArrayVec<PhysRange, N>,
) -> Result<(), DtError<'a>> {
    let name = node.name();
    let Some(mut v) = node.property("reg") else {
        return Ok(());
    };
    let (Some(ac), Some(sc)) = (parent.address, parent.size) else {
        return Err(DtError::BadCells { node: name });
    };
    if !(1..=2).contains(&ac) || sc > 2 {
        return Err(DtError::BadCells { node: name });
    }
    if let Bus::Opaque(e) = parent.bus {
        return Err(e);
    }
    let bad = DtError::BadProperty {
        node: name,
        property: "reg",
    };
    let entry = (ac + sc) as usize * 4;
    if v.is_empty() || v.len() % entry != 0 {
        return Err(bad);
    }
    while !v.is_empty() {
        let (addr, rest) = take_cells(v, ac as usize).ok_or(bad)?;
        let (size, rest) = take_cells(rest, sc as usize).ok_or(bad)?;
        let addr = parent.translate(windows, addr, size).ok_or(bad)?;
        out.try_push(PhysRange::from_base_size(addr, size))
            .map_err(|_| DtError::TooMany {
                what: "reg entries in one node",
                max: N,
            })?;
        v = rest;
    }
    Ok(())
}

fn first_reg<'a>(
    node: &Props<'a>,
    parent: &Cells<'a>,
    windows: &[Window],
) -> Result<Option<PhysRange>, DtError<'a>> {
    let mut out: ArrayVec<PhysRange, MAX_REGS> = ArrayVec::new();
    regs(node, parent, windows, &mut out)?;
    Ok(out.first().copied())
}

/// Decodes the `index`th specifier of `interrupts` per the GIC binding
/// (`cells` = the GIC's `#interrupt-cells`, 3, or 4 with a PPI partition).
fn gic_irq(node: &Props<'_>, index: usize, cells: u32) -> Option<Irq> {
    if !(3..=4).contains(&cells) {
        return None;
    }
    let size = cells as usize * 4;
    let v = node.property("interrupts")?;
    if v.len() % size != 0 {
        return None;
    }
    let start = index.checked_mul(size)?;
    let spec = v.get(start..start.checked_add(size)?)?;
    let (kind, number, flags) = (
        be_u32_at(spec, 0)?,
        be_u32_at(spec, 4)?,
        be_u32_at(spec, 8)?,
    );
    let intid = match kind {
        // SPI, PPI, then GICv3.1's extended SPI and PPI ranges.
        0 if number < 988 => number + 32,
        1 if number < 16 => number + 16,
        2 if number < 1024 => number + 4096,
        3 if number < 64 => number + 1056,
        _ => return None,
    };
    Some(Irq {
        intid,
        // Low four bits: 1/2 edge, 4/8 level.
        level: flags & 0xc != 0,
    })
}

/// Where a node sits, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Root,
    TopLevel,
    /// A child of `/cpus`.
    InCpus,
    /// A child of `/reserved-memory`.
    InReservedMemory,
    Elsewhere,
}

/// The path `/chosen/stdout-path` names (options after ':' dropped, an
/// alias resolved), as its components.
#[derive(Clone, Debug)]
struct Target<'a> {
    parts: ArrayVec<&'a str, MAX_DEPTH>,
}

impl<'a> Target<'a> {
    fn resolve(chosen: Option<Props<'a>>, aliases: Option<FdtNode<'a>>) -> Option<Self> {
        let chosen = chosen?;
        let path =
            str_prop(&chosen, "stdout-path").or_else(|| str_prop(&chosen, "linux,stdout-path"))?;
        let path = path.split(':').next().unwrap_or(path);
        let (head, tail) = if path.starts_with('/') {
            (path, "")
        } else {
            let (alias, tail) = path.split_once('/').unwrap_or((path, ""));
            let head = text(aliases?.property(alias))?;
            (head.starts_with('/').then_some(head)?, tail)
        };
        let mut parts = ArrayVec::new();
        for part in head.split('/').chain(tail.split('/')) {
            // Deeper than any node the walk accepts: nothing can match.
            if !part.is_empty() {
                parts.try_push(part).ok()?;
            }
        }
        Some(Target { parts })
    }

    /// True when the `index`th component names a node called `name` (a
    /// component without a unit address matches on the name before '@').
    fn matches(&self, index: usize, name: &str) -> bool {
        self.parts
            .get(index)
            .is_some_and(|c| *c == name || (!c.contains('@') && name.split('@').next() == Some(*c)))
    }
}

/// Where the walk is: what the parent gives the node being visited.
#[derive(Clone, Copy, Debug)]
struct At<'a> {
    /// The parent's cells and bus.
    parent: Cells<'a>,
    place: Place,
    depth: usize,
    /// The node's interrupt parent's phandle: its own `interrupt-parent`,
    /// else its tree parent if that is an interrupt controller, else what
    /// the tree parent had. `None` when nothing above names one; 0 when
    /// unusable.
    irq_domain: Option<u32>,
    /// True when the node's path is a prefix of (or is) stdout-path's.
    on_target: bool,
    /// False below a node whose `status` disables it.
    enabled: bool,
}

/// A UART found in the walk, its interrupt decoded once the GIC is known.
#[derive(Clone, Copy, Debug)]
struct UartAt<'a> {
    kind: UartKind,
    regs: PhysRange,
    node: Props<'a>,
    irq_domain: Option<u32>,
}

/// Everything collected in the walk, before the final checks.
struct Walk<'a> {
    target: Option<Target<'a>>,
    memory: RangeSet<MAX_BANKS>,
    reserved: RangeSet<MAX_RESERVED>,
    cpus: ArrayVec<Cpu, MAX_CPUS>,
    /// The GIC, its phandle and its `#interrupt-cells`.
    gic: Option<(Gic, Option<u32>, u32)>,
    timer: Option<(Props<'a>, Option<u32>)>,
    stdout: Option<UartAt<'a>>,
    first_pl011: Option<UartAt<'a>>,
    smmu: Option<Smmu>,
    psci: Option<Psci>,
}

impl<'a> Walk<'a> {
    fn visit(
        &mut self,
        windows: &mut Windows,
        node: FdtNode<'a>,
        at: At<'a>,
    ) -> Result<(), DtError<'a>> {
        if at.depth > MAX_DEPTH {
            return Err(DtError::Malformed("nodes nested deeper than 32 levels"));
        }
        let mark = windows.len();
        let kids = self.enter(windows, &node, at)?;
        for child in node.children() {
            let on_target = kids.on_target
                && self
                    .target
                    .as_ref()
                    .is_some_and(|t| t.matches(at.depth, child.name()));
            self.visit(windows, child, At { on_target, ..kids })?;
        }
        windows.truncate(mark);
        Ok(())
    }

    /// Applies the rules to `node` and returns what its children get (their
    /// windows pushed on `windows`). Out of line, so that its locals stay
    /// out of the recursion's frames.
    #[inline(never)]
    fn enter(
        &mut self,
        windows: &mut Windows,
        node: &FdtNode<'a>,
        at: At<'a>,
    ) -> Result<At<'a>, DtError<'a>> {
        let props = Props::of(node);
        let name = props.name();
        let irq_domain = match props.property("interrupt-parent") {
            Some(v) => Some(be_u32(v).unwrap_or(0)),
            None => at.irq_domain,
        };
        let at = At {
            irq_domain,
            enabled: at.enabled && is_enabled(&props),
            ..at
        };
        self.node(windows, &props, &at)?;

        let is_reserved_memory = at.place == Place::TopLevel && name == "reserved-memory";
        let cells = if at.place == Place::Root || is_reserved_memory {
            // The root's children are at CPU addresses; reservations are
            // read as the root's, as Linux does, whatever `ranges` says.
            Cells::counts(&props)
        } else {
            Cells::of(&props, &at.parent, windows)
        };
        let place = match at.place {
            Place::Root => Place::TopLevel,
            Place::TopLevel if name == "cpus" => Place::InCpus,
            Place::TopLevel if is_reserved_memory => Place::InReservedMemory,
            _ => Place::Elsewhere,
        };
        let children_domain = if props.property("#interrupt-cells").is_some() {
            Some(phandle(&props).unwrap_or(0))
        } else {
            irq_domain
        };
        Ok(At {
            parent: cells,
            place,
            depth: at.depth + 1,
            irq_domain: children_domain,
            on_target: at.on_target,
            enabled: at.enabled,
        })
    }

    /// Applies the rules to one node.
    fn node(
        &mut self,
        windows: &[Window],
        node: &Props<'a>,
        at: &At<'a>,
    ) -> Result<(), DtError<'a>> {
        let name = node.name();
        if at.place == Place::InCpus
            && str_prop(node, "device_type") == Some("cpu")
            && !str_prop(node, "status").is_some_and(|s| s.starts_with("fail"))
        {
            self.cpu(node, &at.parent)?;
        }
        if at.place == Place::Root || !at.enabled {
            return Ok(());
        }
        let parent = &at.parent;
        if str_prop(node, "device_type") == Some("memory") {
            let mut banks: ArrayVec<PhysRange, MAX_BANKS> = ArrayVec::new();
            regs(node, parent, windows, &mut banks)?;
            for b in banks {
                self.memory.add(b).map_err(|_| DtError::TooMany {
                    what: "memory banks",
                    max: MAX_BANKS,
                })?;
            }
        }
        if at.place == Place::InReservedMemory {
            let mut rs: ArrayVec<PhysRange, MAX_REGS> = ArrayVec::new();
            regs(node, parent, windows, &mut rs)?;
            for r in rs {
                self.reserved.add(r).map_err(|_| DtError::TooMany {
                    what: "reserved ranges",
                    max: MAX_RESERVED,
                })?;
            }
        }
        if self.gic.is_none() {
            let cells = match node.property("#interrupt-cells") {
                None => 3,
                Some(v) => be_u32(v).unwrap_or(0),
            };
            if has_compatible(node, &["arm,gic-v3"]) {
                self.gic = Some((
                    self.gic_v3(node, parent, windows, cells)?,
                    phandle(node),
                    cells,
                ));
            } else if has_compatible(
                node,
                &[
                    "arm,gic-400",
                    "arm,cortex-a15-gic",
                    "arm,cortex-a9-gic",
                    "arm,cortex-a7-gic",
                    "arm,arm11mp-gic",
                ],
            ) {
                let mut rs: ArrayVec<PhysRange, MAX_REGS> = ArrayVec::new();
                regs(node, parent, windows, &mut rs)?;
                let (Some(&gicd), Some(&gicc)) = (rs.first(), rs.get(1)) else {
                    return Err(DtError::BadProperty {
                        node: name,
                        property: "reg",
                    });
                };
                let gic = Gic::V2 {
                    gicd,
                    gicc,
                    maintenance: gic_irq(node, 0, cells),
                };
                self.gic = Some((gic, phandle(node), cells));
            }
        }
        if self.timer.is_none() && has_compatible(node, &["arm,armv8-timer"]) {
            self.timer = Some((*node, at.irq_domain));
        }
        self.uart(windows, node, at);
        if self.smmu.is_none()
            && has_compatible(node, &["arm,smmu-v3"])
            && let Some(regs) = first_reg(node, parent, windows)?
        {
            self.smmu = Some(Smmu { regs });
        }
        if self.psci.is_none()
            && has_compatible(node, &["arm,psci", "arm,psci-0.2", "arm,psci-1.0"])
        {
            let conduit = match str_prop(node, "method") {
                Some("smc") => Conduit::Smc,
                Some("hvc") => Conduit::Hvc,
                _ => {
                    return Err(DtError::BadProperty {
                        node: name,
                        property: "method",
                    });
                }
            };
            self.psci = Some(Psci {
                conduit,
                v0_2_or_later: has_compatible(node, &["arm,psci-0.2", "arm,psci-1.0"]),
            });
        }
        Ok(())
    }

    /// Notes the stdout-path target (whatever its kind) and the first PL011.
    /// A UART whose `reg` cannot be read is passed over, not fatal: the
    /// console is optional.
    fn uart(&mut self, windows: &[Window], node: &Props<'a>, at: &At<'a>) {
        let is_target = at.on_target
            && self
                .target
                .as_ref()
                .is_some_and(|t| t.parts.len() == at.depth);
        let kind = if has_compatible(node, &["arm,pl011"]) {
            UartKind::Pl011
        } else if has_compatible(node, &["cdns,uart-r1p12", "cdns,uart-r1p8", "xlnx,xuartps"]) {
            UartKind::Cadence
        } else if has_compatible(
            node,
            &[
                "ns16550a",
                "ns16550",
                "snps,dw-apb-uart",
                "brcm,bcm2835-aux-uart",
            ],
        ) {
            UartKind::Ns16550
        } else if is_target {
            UartKind::Other
        } else {
            return;
        };
        let want_target = is_target && self.stdout.is_none();
        let want_pl011 = kind == UartKind::Pl011 && self.first_pl011.is_none();
        if !(want_target || want_pl011) {
            return;
        }
        let Ok(Some(regs)) = first_reg(node, &at.parent, windows) else {
            return;
        };
        let found = UartAt {
            kind,
            regs,
            node: *node,
            irq_domain: at.irq_domain,
        };
        if want_target {
            self.stdout = Some(found);
        }
        if want_pl011 {
            self.first_pl011 = Some(found);
        }
    }

    fn cpu(&mut self, node: &Props<'a>, parent: &Cells<'a>) -> Result<(), DtError<'a>> {
        let name = node.name();
        let bad = |property| DtError::BadProperty {
            node: name,
            property,
        };
        let ac = parent.address.ok_or(DtError::BadCells { node: name })?;
        if !(1..=2).contains(&ac) {
            return Err(DtError::BadCells { node: name });
        }
        let v = node.property("reg").ok_or(bad("reg"))?;
        let (mpidr, _) = take_cells(v, ac as usize).ok_or(bad("reg"))?;
        let enable_method = match str_prop(node, "enable-method") {
            Some("psci") => EnableMethod::Psci,
            Some("spin-table") => {
                let v = node.property("cpu-release-addr").unwrap_or(&[]);
                let (addr, _) = match v.len() {
                    4 => take_cells(v, 1),
                    8 => take_cells(v, 2),
                    _ => None,
                }
                .ok_or(bad("cpu-release-addr"))?;
                EnableMethod::SpinTable(addr)
            }
            _ => EnableMethod::Other,
        };
        self.cpus
            .try_push(Cpu {
                mpidr,
                enable_method,
            })
            .map_err(|_| DtError::TooMany {
                what: "CPUs",
                max: MAX_CPUS,
            })
    }

    fn gic_v3(
        &self,
        node: &Props<'a>,
        parent: &Cells<'a>,
        windows: &[Window],
        cells: u32,
    ) -> Result<Gic, DtError<'a>> {
        let name = node.name();
        let bad = |property| DtError::BadProperty {
            node: name,
            property,
        };
        let regions = match node.property("#redistributor-regions") {
            None => 1,
            Some(p) => be_u32(p).ok_or(bad("#redistributor-regions"))?,
        };
        if regions == 0 {
            return Err(bad("#redistributor-regions"));
        }
        if regions as usize > MAX_GICR_REGIONS {
            return Err(DtError::TooMany {
                what: "redistributor regions",
                max: MAX_GICR_REGIONS,
            });
        }
        let mut rs: ArrayVec<PhysRange, MAX_REGS> = ArrayVec::new();
        regs(node, parent, windows, &mut rs)?;
        let gicd = *rs.first().ok_or(bad("reg"))?;
        let gicr: ArrayVec<PhysRange, MAX_GICR_REGIONS> =
            rs.iter().skip(1).take(regions as usize).copied().collect();
        if gicr.len() != regions as usize {
            return Err(bad("reg"));
        }
        let gicr_stride = match node.property("redistributor-stride") {
            None => 0,
            Some(v) => {
                match v.len() {
                    4 => take_cells(v, 1),
                    8 => take_cells(v, 2),
                    _ => None,
                }
                .ok_or(bad("redistributor-stride"))?
                .0
            }
        };
        Ok(Gic::V3 {
            gicd,
            gicr,
            gicr_stride,
            maintenance: gic_irq(node, 0, cells),
        })
    }
}

impl<'a> Platform<'a> {
    /// Parses a whole DTB (`dtb` may run past its `totalsize`; the rest is
    /// ignored).
    pub fn from_fdt(dtb: &'a [u8]) -> Result<Platform<'a>, DtError<'a>> {
        let size = dtb_total_size(dtb)?;
        let dtb = dtb
            .get(..size)
            .ok_or(DtError::Malformed("truncated: shorter than totalsize"))?;
        let fdt = Fdt::new(dtb).map_err(DtError::Malformed)?;
        let root = fdt.root();

        let mut reserved = RangeSet::new();
        for (address, size) in fdt.reservations() {
            reserved
                .add(PhysRange::from_base_size(address, size))
                .map_err(|_| DtError::TooMany {
                    what: "reserved ranges",
                    max: MAX_RESERVED,
                })?;
        }
        let (mut chosen, mut aliases) = (None, None);
        for child in root.children() {
            match child.name() {
                "chosen" if chosen.is_none() => chosen = Some(Props::of(&child)),
                "aliases" if aliases.is_none() => aliases = Some(child),
                _ => {}
            }
        }
        let target = Target::resolve(chosen, aliases);
        let mut walk = Walk {
            target,
            memory: RangeSet::new(),
            reserved,
            cpus: ArrayVec::new(),
            gic: None,
            timer: None,
            stdout: None,
            first_pl011: None,
            smmu: None,
            psci: None,
        };
        let mut windows = Windows::new();
        walk.visit(
            &mut windows,
            root,
            At {
                parent: Cells::ROOT_PARENT,
                place: Place::Root,
                depth: 0,
                irq_domain: None,
                on_target: true,
                enabled: true,
            },
        )?;
        if walk.memory.is_empty() {
            return Err(DtError::Missing("memory node"));
        }
        if walk.cpus.is_empty() {
            return Err(DtError::Missing("cpu node"));
        }
        let (gic, gic_phandle, cells) = walk
            .gic
            .ok_or(DtError::Missing("interrupt controller (GICv2/v3)"))?;
        let in_gic_domain = |domain: Option<u32>| match domain {
            None => true,
            Some(p) => p != 0 && gic_phandle == Some(p),
        };
        let timer = match walk.timer {
            Some((node, domain)) if in_gic_domain(domain) => {
                let irq = |i| {
                    gic_irq(&node, i, cells).ok_or(DtError::BadProperty {
                        node: node.name(),
                        property: "interrupts",
                    })
                };
                Timer {
                    sec_phys: irq(0)?,
                    phys: irq(1)?,
                    virt: irq(2)?,
                    hyp_phys: irq(3)?,
                    clock_frequency: node.property("clock-frequency").and_then(be_u32),
                    described: true,
                }
            }
            _ => Timer::BSA,
        };
        let uart = walk.stdout.or(walk.first_pl011).map(|u| Uart {
            kind: u.kind,
            regs: u.regs,
            irq: if in_gic_domain(u.irq_domain) {
                gic_irq(&u.node, 0, cells)
            } else {
                None
            },
        });
        let root = Props::of(&root);
        let model = str_prop(&root, "model")
            .filter(|m| !m.is_empty())
            .or_else(|| str_prop(&root, "compatible").filter(|c| !c.is_empty()))
            .unwrap_or("unknown");
        Ok(Platform {
            model,
            memory: walk.memory,
            reserved: walk.reserved,
            cpus: walk.cpus,
            gic,
            timer,
            uart,
            smmu: walk.smmu,
            psci: walk.psci,
            bootargs: chosen.and_then(|c| str_prop(&c, "bootargs")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::{String, ToString};
    use std::vec::Vec;
    use vm_fdt::{FdtReserveEntry, FdtWriter};

    /// A synthetic tree node, edited by the tests and written by vm-fdt.
    #[derive(Clone, Debug)]
    struct N {
        name: String,
        props: Vec<(String, Vec<u8>)>,
        kids: Vec<N>,
    }

    fn n(name: &str) -> N {
        N {
            name: name.to_string(),
            props: Vec::new(),
            kids: Vec::new(),
        }
    }

    fn cells(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    fn s(v: &str) -> Vec<u8> {
        strs(&[v])
    }

    fn strs(v: &[&str]) -> Vec<u8> {
        v.iter().flat_map(|s| s.bytes().chain([0])).collect()
    }

    impl N {
        /// Sets (or replaces) a property.
        fn p(mut self, name: &str, value: Vec<u8>) -> N {
            self.set(name, value);
            self
        }
        fn c(mut self, kid: N) -> N {
            self.kids.push(kid);
            self
        }
        fn set(&mut self, name: &str, value: Vec<u8>) -> &mut N {
            match self.props.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) => *v = value,
                None => self.props.push((name.to_string(), value)),
            }
            self
        }
        fn del(&mut self, name: &str) -> &mut N {
            self.props.retain(|(k, _)| k != name);
            self
        }
        fn add(&mut self, kid: N) -> &mut N {
            self.kids.push(kid);
            self
        }
        fn drop_kid(&mut self, name: &str) -> &mut N {
            self.kids.retain(|k| k.name != name);
            self
        }
        /// The node at `path` ("" is this node), which must exist.
        fn at(&mut self, path: &str) -> &mut N {
            let mut cur = self;
            for part in path.split('/').filter(|p| !p.is_empty()) {
                cur = cur
                    .kids
                    .iter_mut()
                    .find(|k| k.name == part)
                    .unwrap_or_else(|| panic!("no node {part}"));
            }
            cur
        }
    }

    fn build_with(root: &N, rsv: &[(u64, u64)]) -> Vec<u8> {
        fn emit(w: &mut FdtWriter, node: &N) {
            let h = w.begin_node(&node.name).unwrap();
            for (k, v) in &node.props {
                w.property(k, v).unwrap();
            }
            for kid in &node.kids {
                emit(w, kid);
            }
            w.end_node(h).unwrap();
        }
        let rsv: Vec<_> = rsv
            .iter()
            .map(|&(a, s)| FdtReserveEntry::new(a, s).unwrap())
            .collect();
        let mut w = FdtWriter::new_with_mem_reserv(&rsv).unwrap();
        emit(&mut w, root);
        w.finish().unwrap()
    }

    fn build(root: &N) -> Vec<u8> {
        build_with(root, &[])
    }

    /// What QEMU virt gives, in small: two CPUs, a GICv3, a timer, a PL011
    /// named by stdout-path through an alias, PSCI.
    fn board() -> N {
        n("")
            .p("#address-cells", cells(&[2]))
            .p("#size-cells", cells(&[2]))
            .p("model", s("test board"))
            .p("compatible", strs(&["test,board", "test,soc"]))
            .p("interrupt-parent", cells(&[1]))
            .c(n("chosen")
                .p("bootargs", s("console=ttyAMA0"))
                .p("stdout-path", s("serial0:115200n8")))
            .c(n("aliases").p("serial0", s("/pl011@9000000")))
            .c(n("memory@40000000")
                .p("device_type", s("memory"))
                .p("reg", cells(&[0, 0x4000_0000, 0, 0x4000_0000])))
            .c(n("cpus")
                .p("#address-cells", cells(&[1]))
                .p("#size-cells", cells(&[0]))
                .c(n("cpu@0")
                    .p("device_type", s("cpu"))
                    .p("compatible", s("arm,cortex-a57"))
                    .p("reg", cells(&[0]))
                    .p("enable-method", s("psci")))
                .c(n("cpu@1")
                    .p("device_type", s("cpu"))
                    .p("reg", cells(&[1]))
                    .p("enable-method", s("psci"))))
            .c(n("intc@8000000")
                .p("compatible", s("arm,gic-v3"))
                .p("#interrupt-cells", cells(&[3]))
                .p("interrupt-controller", Vec::new())
                .p(
                    "reg",
                    cells(&[0, 0x800_0000, 0, 0x1_0000, 0, 0x80a_0000, 0, 0xf6_0000]),
                )
                .p("interrupts", cells(&[1, 9, 4]))
                .p("phandle", cells(&[1])))
            .c(n("timer").p("compatible", s("arm,armv8-timer")).p(
                "interrupts",
                cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]),
            ))
            .c(n("pl011@9000000")
                .p("compatible", strs(&["arm,pl011", "arm,primecell"]))
                .p("reg", cells(&[0, 0x900_0000, 0, 0x1000]))
                .p("interrupts", cells(&[0, 1, 4])))
            .c(n("psci")
                .p(
                    "compatible",
                    strs(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]),
                )
                .p("method", s("smc")))
    }

    fn r(start: u64, size: u64) -> PhysRange {
        PhysRange::from_base_size(start, size)
    }

    fn ranges<const K: usize>(set: &RangeSet<K>) -> Vec<PhysRange> {
        set.iter().copied().collect()
    }

    fn irq(intid: u32, level: bool) -> Irq {
        Irq { intid, level }
    }

    /// The error a tree is refused with, as the boot log would print it.
    fn refusal(root: &N) -> String {
        let d = build(root);
        match Platform::from_fdt(&d) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn bad(node: &str, property: &str) -> String {
        std::format!("node '{node}': bad '{property}' property")
    }

    fn bad_cells(node: &str) -> String {
        DtError::BadCells { node }.to_string()
    }

    #[test]
    fn the_base_board_is_described_field_by_field() {
        let d = build(&board());
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(p.model, "test board");
        assert_eq!(ranges(&p.memory), [r(0x4000_0000, 0x4000_0000)]);
        assert!(p.reserved.is_empty());
        assert_eq!(
            p.cpus.as_slice(),
            [
                Cpu {
                    mpidr: 0,
                    enable_method: EnableMethod::Psci
                },
                Cpu {
                    mpidr: 1,
                    enable_method: EnableMethod::Psci
                }
            ]
        );
        let Gic::V3 {
            gicd,
            gicr,
            gicr_stride,
            maintenance,
        } = &p.gic
        else {
            panic!("{:?}", p.gic)
        };
        assert_eq!(*gicd, r(0x800_0000, 0x1_0000));
        assert_eq!(gicr.as_slice(), [r(0x80a_0000, 0xf6_0000)]);
        assert_eq!(*gicr_stride, 0);
        assert_eq!(*maintenance, Some(irq(25, true)));
        assert_eq!(
            p.timer,
            Timer {
                sec_phys: irq(29, true),
                phys: irq(30, true),
                virt: irq(27, true),
                hyp_phys: irq(26, true),
                clock_frequency: None,
                described: true,
            }
        );
        assert_eq!(
            p.uart,
            Some(Uart {
                kind: UartKind::Pl011,
                regs: r(0x900_0000, 0x1000),
                irq: Some(irq(33, true)),
            })
        );
        assert_eq!(p.smmu, None);
        assert_eq!(
            p.psci,
            Some(Psci {
                conduit: Conduit::Smc,
                v0_2_or_later: true
            })
        );
        assert_eq!(p.bootargs, Some("console=ttyAMA0"));
        // Bytes past totalsize are not the tree's business.
        let mut longer = d.clone();
        longer.extend_from_slice(&[0xff; 64]);
        assert!(Platform::from_fdt(&longer).is_ok());
    }

    #[test]
    fn header_total_size() {
        let d = build(&board());
        assert_eq!(dtb_total_size(&d[..40]), Ok(d.len()));
        assert_eq!(dtb_total_size(&d), Ok(d.len()));
        let malformed = |h: &[u8]| match dtb_total_size(h) {
            Err(DtError::Malformed(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(malformed(&d[..39]), "truncated header");
        assert_eq!(malformed(&[]), "truncated header");
        let mut h = d[..40].to_vec();
        h[0] ^= 1;
        assert_eq!(malformed(&h), "bad magic (not a flattened device tree)");
        let with_size = |size: u32| {
            let mut h = d[..40].to_vec();
            h[4..8].copy_from_slice(&size.to_be_bytes());
            dtb_total_size(&h)
        };
        assert_eq!(
            with_size(39),
            Err(DtError::Malformed("totalsize smaller than the header"))
        );
        assert_eq!(with_size(40), Ok(40));
        assert_eq!(with_size(2 << 20), Ok(2 << 20));
        assert_eq!(
            with_size((2 << 20) + 1),
            Err(DtError::Malformed("totalsize larger than 2 MiB"))
        );
        assert!(with_size(u32::MAX).is_err());
    }

    #[test]
    fn every_error_prints_one_line_naming_what_is_wrong() {
        let all = [
            (
                DtError::Malformed("bad magic"),
                "malformed device tree: bad magic",
            ),
            (DtError::Missing("cpu node"), "device tree has no cpu node"),
            (
                DtError::BadProperty {
                    node: "timer",
                    property: "interrupts",
                },
                "node 'timer': bad 'interrupts' property",
            ),
            (
                DtError::BadCells { node: "cpu@0" },
                "node 'cpu@0': its parent's #address-cells/#size-cells are malformed or outside 1..=2 / 0..=2",
            ),
            (
                DtError::TooMany {
                    what: "CPUs",
                    max: 64,
                },
                "more CPUs than the 64 supported",
            ),
        ];
        for (e, text) in all {
            assert_eq!(e.to_string(), text);
            assert!(!text.contains('\n'));
        }
    }

    /// Stack the deepest tree may need, thread overhead included. Measured
    /// here: optimized, the deepest tree parses in 32 KiB; unoptimized, in
    /// 82 KiB (about 1.1 KiB a level on top of 48 KiB).
    const STACK_FOR_DEEPEST_TREE: usize = if cfg!(debug_assertions) {
        96 << 10
    } else {
        48 << 10
    };

    #[test]
    fn structural_damage_is_malformed() {
        let d = build(&board());
        assert!(matches!(
            Platform::from_fdt(&d[..d.len() - 1]),
            Err(DtError::Malformed(_))
        ));
        let mut c = d.clone();
        c[1] = 0;
        assert!(matches!(Platform::from_fdt(&c), Err(DtError::Malformed(_))));
        // Nesting: fine at 32 levels below the root, refused past that.
        let nest = |levels: usize| {
            let mut t = board();
            let mut deep = n("x");
            for _ in 1..levels {
                deep = n("x").c(deep);
            }
            t.add(deep);
            build(&t)
        };
        // The walk recurses once per level, on small frames: the deepest
        // accepted tree parses well within hv-arm's 64 KiB boot stack.
        let deepest = nest(32);
        let on_small_stack = std::thread::Builder::new()
            .stack_size(STACK_FOR_DEEPEST_TREE)
            .spawn(move || Platform::from_fdt(&deepest).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(on_small_stack);
        assert_eq!(
            Platform::from_fdt(&nest(33)).unwrap_err(),
            DtError::Malformed("nodes nested deeper than 32 levels")
        );
    }

    /// `dtb` (as vm-fdt writes it: strings block last) with `extra` added
    /// to the strings block.
    fn with_strings(dtb: &[u8], extra: &[u8]) -> Vec<u8> {
        let mut d = dtb.to_vec();
        d.extend_from_slice(extra);
        let word = |d: &[u8], at: usize| u32::from_be_bytes(d[at..at + 4].try_into().unwrap());
        let (total, strings) = (d.len() as u32, word(&d, 32) + extra.len() as u32);
        d[4..8].copy_from_slice(&total.to_be_bytes());
        d[32..36].copy_from_slice(&strings.to_be_bytes());
        d
    }

    #[test]
    fn long_property_names_are_refused_before_any_walk() {
        let d = build(&board());
        let name = |len: usize| {
            let mut v = std::vec![b'x'; len];
            v.push(0);
            v
        };
        assert!(Platform::from_fdt(&with_strings(&d, &name(256))).is_ok());
        assert_eq!(
            Platform::from_fdt(&with_strings(&d, &name(257))).unwrap_err(),
            DtError::Malformed("a property name is longer than 256 bytes")
        );
        // Unterminated at the end of the block counts too.
        assert!(Platform::from_fdt(&with_strings(&d, &name(300)[..300])).is_err());
    }

    /// A node with very many properties is scanned once, not once per
    /// rule: 60 000 properties, each the longest name allowed.
    #[test]
    fn a_node_with_very_many_properties_is_read_once() {
        let mut root = board();
        let cpu = root.at("cpus/cpu@1");
        let name = "x".repeat(31);
        for _ in 0..60_000 {
            cpu.props.push((name.clone(), Vec::new()));
        }
        let d = build(&root);
        let started = std::time::Instant::now();
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(p.cpus.len(), 2);
        // Generous even unoptimized; a quadratic walk takes minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn memory_comes_from_every_enabled_memory_node_merged() {
        let mut t = board();
        t.add(
            n("memory@80000000")
                .p("device_type", s("memory"))
                .p("reg", cells(&[0, 0x8000_0000, 0, 0x1000_0000])),
        );
        // Two banks in one node, one touching the first bank.
        t.add(n("memory@1").p("device_type", s("memory")).p(
            "reg",
            cells(&[0, 0x3000_0000, 0, 0x1000_0000, 8, 0, 0, 0x1000]),
        ));
        t.add(
            n("memory@2")
                .p("device_type", s("memory"))
                .p("status", s("disabled"))
                .p("reg", cells(&[1, 0, 0, 0x1000])),
        );
        t.add(
            n("sram@3")
                .p("device_type", s("memoryless"))
                .p("reg", cells(&[2, 0, 0, 0x1000])),
        );
        // A memory node without reg adds nothing.
        t.add(n("memory@4").p("device_type", s("memory")));
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(
            ranges(&p.memory),
            [r(0x3000_0000, 0x6000_0000), r(0x8_0000_0000, 0x1000)]
        );
    }

    #[test]
    fn memory_errors() {
        let mut t = board();
        t.drop_kid("memory@40000000");
        assert_eq!(refusal(&t), "device tree has no memory node");
        // Only empty banks is no memory either.
        let mut t = board();
        t.at("memory@40000000")
            .set("reg", cells(&[0, 0x4000_0000, 0, 0]));
        assert_eq!(refusal(&t), "device tree has no memory node");
        let mut t = board();
        t.at("memory@40000000")
            .set("reg", cells(&[0, 0x4000_0000, 0]));
        assert_eq!(refusal(&t), bad("memory@40000000", "reg"));
        let mut t = board();
        t.at("memory@40000000").set("reg", Vec::new());
        assert_eq!(refusal(&t), bad("memory@40000000", "reg"));
        // 17 disjoint banks.
        let mut t = board();
        for i in 0..16u32 {
            t.add(
                n(&std::format!("memory@{i}"))
                    .p("device_type", s("memory"))
                    .p("reg", cells(&[0x10 + i, 0, 0, 0x1000])),
            );
        }
        assert_eq!(refusal(&t), "more memory banks than the 16 supported");
        // A bank at the top of the address space is clipped, not wrapped.
        let mut t = board();
        t.at("memory@40000000")
            .set("reg", cells(&[0xffff_ffff, 0xffff_f000, 0, 0x10_0000]));
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(ranges(&p.memory), [r(u64::MAX - 0xfff, 0xfff)]);
    }

    #[test]
    fn reservations_are_memreserve_plus_reserved_memory_children_with_reg() {
        let mut t = board();
        t.add(
            n("reserved-memory")
                .p("#address-cells", cells(&[2]))
                .p("#size-cells", cells(&[2]))
                .p("ranges", Vec::new())
                .c(n("tee@7e000000").p("reg", cells(&[0, 0x7e00_0000, 0, 0x20_0000])))
                .c(n("pool")
                    .p("size", cells(&[0, 0x100_0000]))
                    .p("alignment", cells(&[0, 0x1000])))
                .c(n("off@7f000000")
                    .p("status", s("disabled"))
                    .p("reg", cells(&[0, 0x7f00_0000, 0, 0x1000])))
                .c(n("two@70000000").p(
                    "reg",
                    cells(&[0, 0x7000_0000, 0, 0x1000, 0, 0x7100_0000, 0, 0x1000]),
                )),
        );
        let d = build_with(&t, &[(0x4800_0000, 0x10_0000)]);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(
            ranges(&p.reserved),
            [
                r(0x4800_0000, 0x10_0000),
                r(0x7000_0000, 0x1000),
                r(0x7100_0000, 0x1000),
                r(0x7e00_0000, 0x20_0000)
            ]
        );
        // Without `ranges` the children are still read at root addresses.
        t.at("reserved-memory").del("ranges");
        let d = build(&t);
        assert_eq!(Platform::from_fdt(&d).unwrap().reserved.len(), 3);
        // A bad reg in a reservation is an error, not a silent omission.
        t.at("reserved-memory/tee@7e000000")
            .set("reg", cells(&[0, 0x7e00_0000]));
        assert_eq!(refusal(&t), bad("tee@7e000000", "reg"));
        // Too many.
        let many: Vec<_> = (0..33u64).map(|i| (i << 20, 0x1000)).collect();
        let d = build_with(&board(), &many);
        assert_eq!(
            Platform::from_fdt(&d).unwrap_err().to_string(),
            "more reserved ranges than the 32 supported"
        );
    }

    #[test]
    fn cpus_with_their_enable_methods() {
        let mut t = board();
        let cpus = t.at("cpus");
        cpus.set("#address-cells", cells(&[2]));
        cpus.kids.clear();
        cpus.add(
            n("cpu@100")
                .p("device_type", s("cpu"))
                .p("reg", cells(&[0, 0x100])),
        )
        .add(
            n("cpu@1000000101")
                .p("device_type", s("cpu"))
                .p("reg", cells(&[0x10, 0x101]))
                .p("enable-method", s("spin-table"))
                .p("cpu-release-addr", cells(&[0, 0xe0])),
        )
        .add(
            n("cpu@102")
                .p("device_type", s("cpu"))
                .p("reg", cells(&[0, 0x102]))
                .p("enable-method", s("spin-table"))
                .p("cpu-release-addr", cells(&[0xf0])),
        )
        .add(
            // Quiescent, still startable.
            n("cpu@103")
                .p("device_type", s("cpu"))
                .p("status", s("disabled"))
                .p("reg", cells(&[0, 0x103]))
                .p("enable-method", s("psci")),
        )
        .add(
            n("cpu@104")
                .p("device_type", s("cpu"))
                .p("status", s("fail"))
                .p("reg", cells(&[0, 0x104])),
        )
        .add(n("cpu-map").c(n("cluster0").c(n("core0").p("cpu", cells(&[2])))))
        .add(n("l2-cache").p("reg", cells(&[0, 9])));
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        let got: Vec<_> = p.cpus.iter().map(|c| (c.mpidr, c.enable_method)).collect();
        assert_eq!(
            got,
            [
                (0x100, EnableMethod::Other),
                (0x10_0000_0101, EnableMethod::SpinTable(0xe0)),
                (0x102, EnableMethod::SpinTable(0xf0)),
                (0x103, EnableMethod::Psci)
            ]
        );
    }

    #[test]
    fn cpu_errors() {
        for v in [cells(&[3]), cells(&[0]), vec_of(&[0, 1])] {
            let mut t = board();
            t.at("cpus").set("#address-cells", v);
            assert_eq!(refusal(&t), bad_cells("cpu@0"));
        }
        let mut t = board();
        t.at("cpus/cpu@1").del("reg");
        assert_eq!(refusal(&t), bad("cpu@1", "reg"));
        let mut t = board();
        t.at("cpus/cpu@1").set("reg", vec_of(&[0, 1]));
        assert_eq!(refusal(&t), bad("cpu@1", "reg"));
        for addr in [Vec::new(), cells(&[1, 2, 3]), vec_of(&[1])] {
            let mut t = board();
            t.at("cpus/cpu@1")
                .set("enable-method", s("spin-table"))
                .set("cpu-release-addr", addr);
            assert_eq!(refusal(&t), bad("cpu@1", "cpu-release-addr"));
        }
        let mut t = board();
        t.at("cpus/cpu@1").del("cpu-release-addr");
        t.at("cpus/cpu@1").set("enable-method", s("spin-table"));
        assert_eq!(refusal(&t), bad("cpu@1", "cpu-release-addr"));
        let mut t = board();
        t.at("cpus").kids.clear();
        assert_eq!(refusal(&t), "device tree has no cpu node");
        // A cpu elsewhere than /cpus is not a CPU.
        t.add(
            n("cpu@0")
                .p("device_type", s("cpu"))
                .p("reg", cells(&[0, 0])),
        );
        assert_eq!(refusal(&t), "device tree has no cpu node");
        let mut t = board();
        let cpus = t.at("cpus");
        cpus.kids.clear();
        for i in 0..65u32 {
            cpus.add(
                n(&std::format!("cpu@{i}"))
                    .p("device_type", s("cpu"))
                    .p("reg", cells(&[i])),
            );
        }
        assert_eq!(refusal(&t), "more CPUs than the 64 supported");
    }

    fn vec_of(b: &[u8]) -> Vec<u8> {
        b.to_vec()
    }

    #[test]
    fn gic_v3_regions_and_stride() {
        let mut t = board();
        t.at("intc@8000000")
            .set("#redistributor-regions", cells(&[2]))
            .set("redistributor-stride", cells(&[0, 0x4_0000]))
            .set(
                "reg",
                cells(&[
                    0,
                    0x800_0000,
                    0,
                    0x1_0000,
                    0,
                    0x80a_0000,
                    0,
                    0x10_0000,
                    0,
                    0x900_0000,
                    0,
                    0x10_0000,
                    0,
                    0x1000_0000,
                    0,
                    0x2000, // GICC etc. after the GICRs
                ]),
            )
            .set("interrupts", cells(&[1, 9, 1]));
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        let Gic::V3 {
            gicd,
            gicr,
            gicr_stride,
            maintenance,
        } = &p.gic
        else {
            panic!("{:?}", p.gic)
        };
        assert_eq!(*gicd, r(0x800_0000, 0x1_0000));
        assert_eq!(
            gicr.as_slice(),
            [r(0x80a_0000, 0x10_0000), r(0x900_0000, 0x10_0000)]
        );
        assert_eq!(*gicr_stride, 0x4_0000);
        assert_eq!(*maintenance, Some(irq(25, false)));
        // A 4-byte stride, and no maintenance interrupt.
        t.at("intc@8000000")
            .set("redistributor-stride", cells(&[0x2_0000]))
            .del("interrupts");
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        assert!(matches!(
            p.gic,
            Gic::V3 {
                gicr_stride: 0x2_0000,
                maintenance: None,
                ..
            }
        ));
    }

    #[test]
    fn gic_errors() {
        let intc = "intc@8000000";
        let with = |prop: &str, v: Vec<u8>| {
            let mut t = board();
            t.at(intc).set(prop, v);
            refusal(&t)
        };
        assert_eq!(
            with("#redistributor-regions", cells(&[0])),
            bad(intc, "#redistributor-regions")
        );
        assert_eq!(
            with("#redistributor-regions", vec_of(&[1])),
            bad(intc, "#redistributor-regions")
        );
        assert_eq!(
            with("#redistributor-regions", cells(&[9])),
            "more redistributor regions than the 8 supported"
        );
        assert_eq!(
            with("#redistributor-regions", cells(&[2])),
            bad(intc, "reg")
        );
        assert_eq!(
            with("redistributor-stride", vec_of(&[0, 2, 0])),
            bad(intc, "redistributor-stride")
        );
        assert_eq!(with("reg", Vec::new()), bad(intc, "reg"));
        let mut t = board();
        t.at(intc).del("reg");
        assert_eq!(refusal(&t), bad(intc, "reg"));
        let mut t = board();
        t.drop_kid(intc);
        assert_eq!(
            refusal(&t),
            "device tree has no interrupt controller (GICv2/v3)"
        );
        let mut t = board();
        t.at(intc).set("status", s("disabled"));
        assert_eq!(
            refusal(&t),
            "device tree has no interrupt controller (GICv2/v3)"
        );
        let mut t = board();
        t.at(intc).set("compatible", s("arm,gic-v3-its"));
        assert_eq!(
            refusal(&t),
            "device tree has no interrupt controller (GICv2/v3)"
        );
    }

    #[test]
    fn gic_v2_compatibles() {
        for compat in [
            "arm,gic-400",
            "arm,cortex-a15-gic",
            "arm,cortex-a9-gic",
            "arm,cortex-a7-gic",
        ] {
            let mut t = board();
            t.at("intc@8000000").set("compatible", s(compat)).set(
                "reg",
                cells(&[
                    0, 0x800_0000, 0, 0x1000, 0, 0x801_0000, 0, 0x2000, 0, 0x803_0000, 0, 0x2000,
                    0, 0x804_0000, 0, 0x2000,
                ]),
            );
            let d = build(&t);
            let p = Platform::from_fdt(&d).unwrap();
            assert_eq!(
                p.gic,
                Gic::V2 {
                    gicd: r(0x800_0000, 0x1000),
                    gicc: r(0x801_0000, 0x2000),
                    maintenance: Some(irq(25, true)),
                },
                "{compat}"
            );
            // The timer and UART still decode through it.
            assert_eq!(p.timer.hyp_phys, irq(26, true));
            assert_eq!(p.uart.and_then(|u| u.irq), Some(irq(33, true)));
        }
        let mut t = board();
        t.at("intc@8000000")
            .set("compatible", s("arm,gic-400"))
            .set("reg", cells(&[0, 0x800_0000, 0, 0x1000]));
        assert_eq!(refusal(&t), bad("intc@8000000", "reg"));
    }

    /// The console's interrupt for a given `interrupts` value (and the
    /// GIC's `#interrupt-cells`).
    fn uart_irq(spec: &[u32], gic_cells: u32) -> Option<Irq> {
        let mut t = board();
        t.at("intc@8000000")
            .set("#interrupt-cells", cells(&[gic_cells]));
        t.drop_kid("timer");
        t.at("pl011@9000000").set("interrupts", cells(spec));
        let d = build(&t);
        Platform::from_fdt(&d).unwrap().uart.unwrap().irq
    }

    #[test]
    fn interrupts_decode_per_the_gic_binding() {
        assert_eq!(uart_irq(&[0, 1, 4], 3), Some(irq(33, true)));
        assert_eq!(uart_irq(&[0, 1, 8], 3), Some(irq(33, true)));
        assert_eq!(uart_irq(&[0, 1, 1], 3), Some(irq(33, false)));
        assert_eq!(uart_irq(&[0, 1, 2], 3), Some(irq(33, false)));
        assert_eq!(uart_irq(&[0, 987, 4], 3), Some(irq(1019, true)));
        assert_eq!(uart_irq(&[0, 988, 4], 3), None);
        assert_eq!(uart_irq(&[1, 15, 0xf04], 3), Some(irq(31, true)));
        assert_eq!(uart_irq(&[1, 16, 4], 3), None);
        // GICv3.1 extended SPI and PPI ranges.
        assert_eq!(uart_irq(&[2, 5, 4], 3), Some(irq(4101, true)));
        assert_eq!(uart_irq(&[3, 5, 4], 3), Some(irq(1061, true)));
        assert_eq!(uart_irq(&[4, 5, 4], 3), None);
        assert_eq!(uart_irq(&[0, 1], 3), None);
        assert_eq!(uart_irq(&[0, 1, 4, 0], 3), None);
        // Four cells (PPI partitions), and nonsense cell counts.
        assert_eq!(uart_irq(&[0, 1, 4, 0], 4), Some(irq(33, true)));
        assert_eq!(uart_irq(&[0, 1, 4], 4), None);
        assert_eq!(uart_irq(&[0, 1], 2), None);
        assert_eq!(uart_irq(&[0, 1, 4, 0, 0], 5), None);
        // Only the first specifier counts for a UART.
        assert_eq!(uart_irq(&[0, 2, 4, 0, 3, 1], 3), Some(irq(34, true)));
    }

    #[test]
    fn only_the_gics_interrupts_are_decoded() {
        let other = n("gpio@1000")
            .p("#interrupt-cells", cells(&[2]))
            .p("interrupt-controller", Vec::new())
            .p("reg", cells(&[0, 0x1000, 0, 0x100]))
            .p("phandle", cells(&[7]));
        // The UART names another controller.
        let mut t = board();
        t.add(other.clone());
        t.at("pl011@9000000").set("interrupt-parent", cells(&[7]));
        let d = build(&t);
        assert_eq!(Platform::from_fdt(&d).unwrap().uart.unwrap().irq, None);
        // It inherits another controller from the root...
        t.set("interrupt-parent", cells(&[7]));
        t.at("pl011@9000000").del("interrupt-parent");
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(p.uart.unwrap().irq, None);
        // ... and so does the timer: BSA's PPIs then.
        assert_eq!(p.timer, Timer::BSA);
        // A bus in between names the GIC again.
        let mut t2 = t.clone();
        let uart = t2.at("pl011@9000000").clone();
        t2.drop_kid("pl011@9000000");
        t2.at("chosen").set("stdout-path", s("/soc/pl011@9000000"));
        t2.add(
            n("soc")
                .p("#address-cells", cells(&[2]))
                .p("#size-cells", cells(&[2]))
                .p("ranges", Vec::new())
                .p("interrupt-parent", cells(&[1]))
                .c(uart),
        );
        let d = build(&t2);
        assert_eq!(
            Platform::from_fdt(&d).unwrap().uart.unwrap().irq,
            Some(irq(33, true))
        );
        // A UART under an interrupt controller, with no interrupt-parent of
        // its own, is that controller's.
        let mut t3 = board();
        let uart = t3.at("pl011@9000000").clone();
        t3.drop_kid("pl011@9000000");
        t3.at("chosen").del("stdout-path");
        t3.add(
            other
                .p("#address-cells", cells(&[2]))
                .p("#size-cells", cells(&[2]))
                .p("ranges", Vec::new())
                .c(uart),
        );
        let d = build(&t3);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(
            p.uart.map(|u| (u.regs.start, u.irq)),
            Some((0x900_0000, None))
        );
        // No interrupt-parent anywhere: the GIC's, the one controller.
        let mut t4 = board();
        t4.del("interrupt-parent");
        let d = build(&t4);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(p.uart.unwrap().irq, Some(irq(33, true)));
        assert!(p.timer.described);
        // An unreadable interrupt-parent matches nothing.
        t4.at("pl011@9000000")
            .set("interrupt-parent", vec_of(&[0, 1]));
        let d = build(&t4);
        assert_eq!(Platform::from_fdt(&d).unwrap().uart.unwrap().irq, None);
        // Nor does a GIC without a phandle when something names a phandle.
        let mut t5 = board();
        t5.at("intc@8000000").del("phandle");
        let d = build(&t5);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!((p.uart.unwrap().irq, p.timer.described), (None, false));
        // linux,phandle is a phandle too.
        t5.at("intc@8000000").set("linux,phandle", cells(&[1]));
        let d = build(&t5);
        assert!(Platform::from_fdt(&d).unwrap().timer.described);
    }

    #[test]
    fn timer() {
        let mut t = board();
        t.at("timer")
            .set("clock-frequency", cells(&[62_500_000]))
            .set(
                "interrupts",
                cells(&[1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8, 1, 12, 8]),
            );
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(p.timer.clock_frequency, Some(62_500_000));
        assert_eq!(p.timer.virt, irq(27, true));
        assert!(p.timer.described);
        // No timer node: BSA's assignments.
        t.drop_kid("timer");
        let d = build(&t);
        assert_eq!(Platform::from_fdt(&d).unwrap().timer, Timer::BSA);
        for v in [
            cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4]),
            cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10]),
            cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 5, 10, 4]),
            Vec::new(),
        ] {
            let mut t = board();
            t.at("timer").set("interrupts", v);
            assert_eq!(refusal(&t), bad("timer", "interrupts"));
        }
        let mut t = board();
        t.at("timer").del("interrupts");
        assert_eq!(refusal(&t), bad("timer", "interrupts"));
        // A disabled timer is no timer.
        t.at("timer").set("status", s("disabled"));
        let d = build(&t);
        assert_eq!(Platform::from_fdt(&d).unwrap().timer, Timer::BSA);
    }

    fn console(t: &N) -> Option<(UartKind, u64)> {
        let d = build(t);
        let p = Platform::from_fdt(&d).unwrap();
        p.uart.map(|u| (u.kind, u.regs.start))
    }

    #[test]
    fn the_console_is_stdout_path_else_the_first_pl011() {
        let mut t = board();
        t.add(
            n("soc")
                .p("#address-cells", cells(&[1]))
                .p("#size-cells", cells(&[1]))
                .p("ranges", cells(&[0x7e00_0000, 0, 0xfe00_0000, 0x180_0000]))
                .c(n("serial@7e201000")
                    .p("compatible", s("arm,pl011"))
                    .p("reg", cells(&[0x7e20_1000, 0x200])))
                .c(n("serial@7e215040")
                    .p("compatible", s("brcm,bcm2835-aux-uart"))
                    .p("reg", cells(&[0x7e21_5040, 0x40])))
                .c(n("serial@ff000000")
                    .p("compatible", strs(&["xlnx,zynqmp-uart", "cdns,uart-r1p12"]))
                    .p("reg", cells(&[0x7e30_0000, 0x1000])))
                .c(n("serial@30890000")
                    .p("compatible", s("fsl,imx8mp-uart"))
                    .p("reg", cells(&[0x7e40_0000, 0x1000])))
                .c(n("serial@1")
                    .p("compatible", s("ns16550a"))
                    .p("reg", cells(&[0x6000_0000, 0x1000])))
                .c(n("i2c@7e804000")
                    .p("#address-cells", cells(&[1]))
                    .p("#size-cells", cells(&[0]))
                    .c(n("serial@48")
                        .p("compatible", s("nxp,sc16is752"))
                        .p("reg", cells(&[0x48])))),
        );
        t.at("aliases")
            .set("serial1", s("/soc/serial@7e215040"))
            .set("serial2", s("/soc/serial@ff000000"))
            .set("serial3", s("/soc/serial@30890000"))
            .set("soc", s("/soc"))
            .set("bad", s("soc/serial@ff000000"));
        fn with(t: &mut N, path: &str) -> Option<(UartKind, u64)> {
            t.at("chosen").set("stdout-path", s(path));
            console(t)
        }
        assert_eq!(
            with(&mut t, "serial0:115200n8"),
            Some((UartKind::Pl011, 0x900_0000))
        );
        assert_eq!(
            with(&mut t, "serial1:115200n8"),
            Some((UartKind::Ns16550, 0xfe21_5040))
        );
        assert_eq!(
            with(&mut t, "serial2"),
            Some((UartKind::Cadence, 0xfe30_0000))
        );
        assert_eq!(
            with(&mut t, "serial3"),
            Some((UartKind::Other, 0xfe40_0000))
        );
        assert_eq!(
            with(&mut t, "/soc/serial@7e201000:9600"),
            Some((UartKind::Pl011, 0xfe20_1000))
        );
        // An alias followed by a path, and a component without its unit
        // address.
        assert_eq!(
            with(&mut t, "soc/serial@30890000"),
            Some((UartKind::Other, 0xfe40_0000))
        );
        assert_eq!(
            with(&mut t, "/soc/serial"),
            Some((UartKind::Pl011, 0xfe20_1000))
        );
        // Not a UART we know or anything at all, unresolvable, a relative
        // alias, a disabled or unaddressable target: the first PL011.
        for fallback in [
            "/soc",
            "/soc/i2c@7e804000/serial@48",
            "/nothing@0",
            "serial9",
            "bad",
            "",
            "/",
            ":",
        ] {
            assert_eq!(
                with(&mut t, fallback),
                Some((UartKind::Pl011, 0x900_0000)),
                "{fallback}"
            );
        }
        t.at("soc/serial@30890000").set("status", s("disabled"));
        assert_eq!(with(&mut t, "serial3"), Some((UartKind::Pl011, 0x900_0000)));
        // linux,stdout-path is the older name.
        t.at("chosen").del("stdout-path");
        t.at("chosen").set("linux,stdout-path", s("serial2"));
        assert_eq!(console(&t), Some((UartKind::Cadence, 0xfe30_0000)));
        // No stdout-path: the first enabled PL011 in tree order.
        t.at("chosen").del("linux,stdout-path");
        t.at("pl011@9000000").set("status", s("disabled"));
        assert_eq!(console(&t), Some((UartKind::Pl011, 0xfe20_1000)));
        // Children of a disabled bus are disabled too.
        t.at("soc").set("status", s("disabled"));
        assert_eq!(console(&t), None);
        // No chosen at all.
        let mut t = board();
        t.drop_kid("chosen");
        assert_eq!(console(&t), Some((UartKind::Pl011, 0x900_0000)));
        // No aliases: an alias cannot resolve.
        let mut t = board();
        t.drop_kid("aliases");
        assert_eq!(console(&t), Some((UartKind::Pl011, 0x900_0000)));
        t.drop_kid("pl011@9000000");
        assert_eq!(console(&t), None);
    }

    #[test]
    fn smmu_is_the_first_enabled_smmuv3() {
        let smmu = |addr: u32| {
            n(&std::format!("smmuv3@{addr:x}"))
                .p("compatible", s("arm,smmu-v3"))
                .p("reg", cells(&[0, addr, 0, 0x2_0000]))
        };
        let mut t = board();
        t.add(smmu(0x900_0000).p("status", s("disabled")))
            .add(
                n("iommu@1")
                    .p("compatible", s("arm,mmu-500"))
                    .p("reg", cells(&[0, 1, 0, 1])),
            )
            .add(smmu(0x905_0000))
            .add(smmu(0x906_0000));
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(
            p.smmu,
            Some(Smmu {
                regs: r(0x905_0000, 0x2_0000)
            })
        );
        t.at("smmuv3@9050000").set("reg", cells(&[0, 1]));
        assert_eq!(refusal(&t), bad("smmuv3@9050000", "reg"));
    }

    #[test]
    fn psci() {
        let with = |compat: &[&str], method: Option<&str>| {
            let mut t = board();
            t.at("psci").set("compatible", strs(compat));
            match method {
                Some(m) => t.at("psci").set("method", s(m)),
                None => t.at("psci").del("method"),
            };
            let d = build(&t);
            Platform::from_fdt(&d)
                .map(|p| p.psci)
                .map_err(|e| e.to_string())
        };
        let psci = |conduit, v0_2_or_later| {
            Ok(Some(Psci {
                conduit,
                v0_2_or_later,
            }))
        };
        assert_eq!(
            with(&["arm,psci-0.2"], Some("hvc")),
            psci(Conduit::Hvc, true)
        );
        assert_eq!(
            with(&["arm,psci-1.0"], Some("smc")),
            psci(Conduit::Smc, true)
        );
        assert_eq!(with(&["arm,psci"], Some("smc")), psci(Conduit::Smc, false));
        assert_eq!(
            with(&["arm,psci-0.2"], Some("svc")),
            Err(bad("psci", "method"))
        );
        assert_eq!(with(&["arm,psci-0.2"], None), Err(bad("psci", "method")));
        assert_eq!(with(&["vendor,firmware"], None), Ok(None));
    }

    #[test]
    fn model_and_bootargs() {
        let model = |t: &N| {
            let d = build(t);
            let p = Platform::from_fdt(&d).unwrap();
            (p.model.to_string(), p.bootargs.map(|b| b.to_string()))
        };
        let mut t = board();
        assert_eq!(
            model(&t),
            ("test board".into(), Some("console=ttyAMA0".into()))
        );
        t.del("model");
        t.at("chosen").del("bootargs");
        assert_eq!(model(&t), ("test,board".into(), None));
        t.del("compatible");
        assert_eq!(model(&t).0, "unknown");
        t.set("model", s(""));
        assert_eq!(model(&t).0, "unknown");
        t.set("model", vec_of(&[0xff, 0xfe, 0]));
        assert_eq!(model(&t).0, "unknown");
    }

    #[test]
    fn bus_addresses_are_translated_through_ranges() {
        let gic = board().at("intc@8000000").clone();
        let mut t = board();
        t.drop_kid("intc@8000000");
        t.add(
            n("axi")
                .p("#address-cells", cells(&[2]))
                .p("#size-cells", cells(&[1]))
                .p("ranges", cells(&[0, 0, 0, 0, 0x1000_0000]))
                .c(n("soc")
                    .p("#address-cells", cells(&[1]))
                    .p("#size-cells", cells(&[1]))
                    .p(
                        "ranges",
                        cells(&[
                            0x7e00_0000,
                            0,
                            0x0e00_0000,
                            0x100_0000, // first window
                            0x4000_0000,
                            0,
                            0x0800_0000,
                            0x10_0000, // the GIC's
                        ]),
                    )
                    .c(gic.clone().p(
                        "reg",
                        cells(&[0x4000_0000, 0x1_0000, 0x400a_0000, 0x6_0000]),
                    ))),
        );
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        assert!(
            matches!(&p.gic, Gic::V3 { gicd, gicr, .. }
                if *gicd == r(0x800_0000, 0x1_0000) && gicr[0] == r(0x80a_0000, 0x6_0000)),
            "{:?}",
            p.gic
        );
        // Running past its window is not translatable.
        t.at("axi/soc/intc@8000000").set(
            "reg",
            cells(&[0x4000_0000, 0x1_0000, 0x400a_0000, 0x10_0000]),
        );
        assert_eq!(refusal(&t), bad("intc@8000000", "reg"));
        // A bus without ranges is not memory-mapped: the bus is named.
        let mut u = t.clone();
        u.at("axi/soc").del("ranges");
        assert_eq!(refusal(&u), bad("soc", "ranges"));
        let mut u = t.clone();
        u.at("axi").set("ranges", cells(&[0, 0, 0]));
        assert_eq!(refusal(&u), bad("axi", "ranges"));
        let mut u = t.clone();
        u.at("axi").set("#size-cells", cells(&[3]));
        assert_eq!(refusal(&u), bad_cells("axi"));
        let mut u = t.clone();
        u.at("axi/soc").set("ranges", cells(&[0; 33 * 4]));
        assert_eq!(
            refusal(&u),
            "more ranges entries on the buses above a node than the 32 supported"
        );
    }

    #[test]
    fn cell_counts_are_checked_only_where_a_reg_is_read() {
        // Exotic buses nobody reads from do not matter.
        let mut t = board();
        t.add(
            n("pcie@10000000")
                .p("#address-cells", cells(&[3]))
                .p("#size-cells", cells(&[2]))
                .p(
                    "ranges",
                    cells(&[0x100_0000, 0, 0, 0, 0x3eff_0000, 0, 0x1_0000]),
                )
                .c(n("dev@0").p("reg", cells(&[0, 0, 0, 0, 0]))),
        );
        t.add(
            n("weird")
                .p("#address-cells", cells(&[7]))
                .p("#size-cells", vec_of(&[1]))
                .c(n("x@0").p("reg", cells(&[0]))),
        );
        let d = build(&t);
        assert!(Platform::from_fdt(&d).is_ok());
        // But where a reg is read, they do.
        for (prop, v) in [
            ("#address-cells", cells(&[3])),
            ("#address-cells", cells(&[0])),
            ("#address-cells", vec_of(&[2])),
            ("#size-cells", cells(&[3])),
            ("#size-cells", vec_of(&[0, 0, 0, 0, 0])),
        ] {
            let mut t = board();
            t.set(prop, v);
            assert_eq!(refusal(&t), bad_cells("memory@40000000"), "{prop}");
        }
        // One address cell and no size cells is fine (empty banks though).
        let mut t = board();
        t.set("#address-cells", cells(&[1]))
            .set("#size-cells", cells(&[1]));
        t.at("memory@40000000")
            .set("reg", cells(&[0x4000_0000, 0x1000_0000]));
        t.at("intc@8000000")
            .set("reg", cells(&[0x800_0000, 0x1_0000, 0x80a_0000, 0xf6_0000]));
        t.at("pl011@9000000")
            .set("reg", cells(&[0x900_0000, 0x1000]));
        let d = build(&t);
        let p = Platform::from_fdt(&d).unwrap();
        assert_eq!(ranges(&p.memory), [r(0x4000_0000, 0x1000_0000)]);
        assert_eq!(p.uart.unwrap().regs, r(0x900_0000, 0x1000));
        t.set("#size-cells", cells(&[0]));
        t.at("memory@40000000").set("reg", cells(&[0x4000_0000]));
        assert_eq!(refusal(&t), "device tree has no memory node");
    }

    #[test]
    fn too_many_reg_entries_in_one_node() {
        let mut t = board();
        let many: Vec<u32> = (0..17).flat_map(|i| [0, 0x1000 * i, 0, 0x10]).collect();
        t.at("intc@8000000").set("reg", cells(&many));
        assert_eq!(
            refusal(&t),
            "more reg entries in one node than the 16 supported"
        );
    }

    fn check_invariants(p: &Platform<'_>) {
        assert!(!p.memory.is_empty() && !p.cpus.is_empty());
        assert!(p.cpus.len() <= MAX_CPUS);
        for irq in [
            p.timer.sec_phys,
            p.timer.phys,
            p.timer.virt,
            p.timer.hyp_phys,
        ] {
            assert!((16..1020).contains(&irq.intid) || (1056..5120).contains(&irq.intid));
        }
    }

    /// Every truncation and every single-bit flip of a small tree that uses
    /// every rule: errors or sound results, never a panic.
    #[test]
    fn every_truncation_and_bit_flip_of_a_small_tree() {
        let mut t = board();
        t.add(
            n("reserved-memory")
                .p("#address-cells", cells(&[2]))
                .p("#size-cells", cells(&[2]))
                .p("ranges", Vec::new())
                .c(n("tee@7e000000").p("reg", cells(&[0, 0x7e00_0000, 0, 0x20_0000]))),
        );
        t.add(
            n("soc")
                .p("#address-cells", cells(&[1]))
                .p("#size-cells", cells(&[1]))
                .p("ranges", cells(&[0x7e00_0000, 0, 0xfe00_0000, 0x180_0000]))
                .c(n("smmu@7e050000")
                    .p("compatible", s("arm,smmu-v3"))
                    .p("reg", cells(&[0x7e05_0000, 0x2_0000]))),
        );
        let d = build_with(&t, &[(0x4800_0000, 0x1000)]);
        assert!(Platform::from_fdt(&d).is_ok());
        for len in 0..d.len() {
            assert!(Platform::from_fdt(&d[..len]).is_err(), "{len}");
            if len >= 40 {
                let mut c = d[..len].to_vec();
                c[4..8].copy_from_slice(&(len as u32).to_be_bytes());
                if let Ok(p) = Platform::from_fdt(&c) {
                    check_invariants(&p);
                }
            }
        }
        let mut c = d.clone();
        for i in 0..d.len() {
            for bit in 0..8 {
                c[i] ^= 1 << bit;
                if let Ok(p) = Platform::from_fdt(&c) {
                    check_invariants(&p);
                }
                c[i] ^= 1 << bit;
            }
            for v in [0u8, 1, 2, 3, 4, 0x7f, 0x80, 0xff] {
                c[i] = v;
                if let Ok(p) = Platform::from_fdt(&c) {
                    check_invariants(&p);
                }
            }
            c[i] = d[i];
        }
    }
}
