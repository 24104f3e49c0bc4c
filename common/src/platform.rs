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
//! Reader: [`crate::fdt`], which validates the whole blob's structure before
//! handing out a single node (see `docs/decisions.md` for why not a crate).

use crate::fdt::{Fdt, Node as FdtNode};
use arrayvec::{ArrayString, ArrayVec};

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

/// Largest DTB accepted (the hypervisor maps and keeps it).
pub const MAX_DTB_SIZE: usize = 2 << 20;
/// Deepest node nesting walked.
pub const MAX_DEPTH: usize = 32;
/// Longest node path kept for `stdout-path` matching.
const MAX_PATH: usize = 256;
/// UART candidates kept while walking.
const MAX_UARTS: usize = 16;
/// FDT magic, big-endian.
const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the FDT header (version 17).
const FDT_HEADER: usize = 40;

/// Reads `totalsize` from a DTB header, after checking the magic and that
/// the size is plausible (at least a header, at most [`MAX_DTB_SIZE`]).
pub fn dtb_total_size(header: &[u8]) -> Result<usize, DtError<'static>> {
    let word = |i: usize| {
        header
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match (word(0), word(4)) {
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
            Self::BadCells { node } => {
                write!(
                    f,
                    "node '{node}': #address-cells/#size-cells outside 1..=2 / 0..=2"
                )
            }
            Self::TooMany { what, max } => write!(f, "more {what} than the {max} supported"),
        }
    }
}

/// Most `ranges` entries one bus may have for translation.
const MAX_BUS_RANGES: usize = 8;

/// (child bus base, CPU base, size) windows of one bus.
type BusWindows = [(u64, u64, u64); MAX_BUS_RANGES];

/// What a node gives its children: `#address-cells` / `#size-cells`
/// (`None` when the property is present but malformed: only an actual `reg`
/// read fails) and how child bus addresses translate to CPU physical
/// addresses (from `ranges`, composed up to the root).
#[derive(Clone, Copy, Debug)]
struct Cells {
    address: Option<u32>,
    size: Option<u32>,
    /// `None`: identity (the root, an empty `ranges`, or no `ranges` at
    /// all). Otherwise (child base, CPU base, size) windows.
    map: Option<(BusWindows, usize)>,
}

impl Cells {
    /// The spec's defaults, used for the root's own properties.
    const ROOT_PARENT: Cells = Cells {
        address: Some(2),
        size: Some(1),
        map: None,
    };

    /// What `node` gives its children, given what its parent gave it.
    fn of<'a>(node: &FdtNode<'a>, parent: Cells) -> Result<Cells, DtError<'a>> {
        let read = |name: &str, default: u32| match node.property(name) {
            None => Some(default),
            Some(p) => be_u32(p),
        };
        let mut cells = Cells {
            address: read("#address-cells", 2),
            size: read("#size-cells", 1),
            map: parent.map,
        };
        let Some(ranges) = prop(node, "ranges") else {
            return Ok(cells);
        };
        if ranges.is_empty() {
            return Ok(cells);
        }
        let bad = DtError::BadProperty {
            node: node.name(),
            property: "ranges",
        };
        let (Some(ca), Some(cs), Some(pa)) = (cells.address, cells.size, parent.address) else {
            return Err(bad);
        };
        if !(1..=2).contains(&ca) || !(1..=2).contains(&cs) || !(1..=2).contains(&pa) {
            return Err(DtError::BadCells { node: node.name() });
        }
        let entry = ((ca + pa + cs) * 4) as usize;
        if ranges.len() % entry != 0 {
            return Err(bad);
        }
        let mut map = [(0u64, 0u64, 0u64); MAX_BUS_RANGES];
        let mut n = 0;
        for e in ranges.chunks_exact(entry) {
            let (child, rest) = take_cells(e, ca as usize).ok_or(bad)?;
            let (parent_addr, rest) = take_cells(rest, pa as usize).ok_or(bad)?;
            let (size, _) = take_cells(rest, cs as usize).ok_or(bad)?;
            // A window the parent cannot translate is left out.
            if let Some(cpu) = parent.translate(parent_addr, size) {
                if n == MAX_BUS_RANGES {
                    return Err(DtError::TooMany {
                        what: "ranges entries on one bus",
                        max: MAX_BUS_RANGES,
                    });
                }
                map[n] = (child, cpu, size);
                n += 1;
            }
        }
        cells.map = Some((map, n));
        Ok(cells)
    }

    /// The CPU address of `[addr, addr+size)` on this bus, if one window
    /// holds it whole.
    fn translate(&self, addr: u64, size: u64) -> Option<u64> {
        let Some((map, n)) = &self.map else {
            return Some(addr);
        };
        map.get(..*n)?.iter().find_map(|&(child, cpu, len)| {
            let off = addr.checked_sub(child)?;
            (off.checked_add(size)? <= len)
                .then(|| cpu.checked_add(off))
                .flatten()
        })
    }
}

fn be_u32(b: &[u8]) -> Option<u32> {
    match b {
        [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Reads a number of `cells` 32-bit cells (1 or 2) from the front of `b`.
fn take_cells(b: &[u8], cells: usize) -> Option<(u64, &[u8])> {
    let bytes = cells.checked_mul(4)?;
    let (head, rest) = (b.get(..bytes)?, b.get(bytes..)?);
    let mut v: u64 = 0;
    for chunk in head.chunks_exact(4) {
        v = v.checked_shl(32)?
            | u64::from(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    Some((v, rest))
}

/// Everything collected in the walk, before the final checks.
struct Walk<'a> {
    model: Option<&'a str>,
    root_compatible: Option<&'a str>,
    memory: RangeSet<MAX_BANKS>,
    reserved: RangeSet<MAX_RESERVED>,
    cpus: ArrayVec<Cpu, MAX_CPUS>,
    gic: Option<Gic>,
    timer: Option<Timer>,
    uarts: ArrayVec<(ArrayString<MAX_PATH>, Uart), MAX_UARTS>,
    smmu: Option<Smmu>,
    psci: Option<Psci>,
    bootargs: Option<&'a str>,
    stdout_path: Option<&'a str>,
    aliases: Option<FdtNode<'a>>,
}

/// A property's raw value, borrowed from the DTB.
fn prop<'a>(node: &FdtNode<'a>, name: &str) -> Option<&'a [u8]> {
    node.property(name)
}

fn str_prop<'a>(node: &FdtNode<'a>, name: &str) -> Option<&'a str> {
    let v: &'a [u8] = prop(node, name)?;
    let v = v.strip_suffix(&[0]).unwrap_or(v);
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    core::str::from_utf8(&v[..end]).ok()
}

fn has_compatible(node: &FdtNode<'_>, wanted: &[&str]) -> bool {
    node.property("compatible")
        .map(|p| {
            p.split(|&b| b == 0)
                .any(|c| wanted.iter().any(|w| w.as_bytes() == c))
        })
        .unwrap_or(false)
}

fn is_enabled(node: &FdtNode<'_>) -> bool {
    matches!(str_prop(node, "status"), None | Some("okay") | Some("ok"))
}

/// The node's `reg` entries as ranges, with the cells its parent gives.
fn regs<'a, const N: usize>(
    node: &FdtNode<'a>,
    parent: Cells,
    out: &mut ArrayVec<PhysRange, N>,
) -> Result<(), DtError<'a>> {
    let name = node.name();
    let (Some(ac), Some(sc)) = (parent.address, parent.size) else {
        return Err(DtError::BadCells { node: name });
    };
    if !(1..=2).contains(&ac) || sc > 2 {
        return Err(DtError::BadCells { node: name });
    }
    let Some(prop) = node.property("reg") else {
        return Ok(());
    };
    let mut v = prop;
    let entry = (ac + sc) as usize * 4;
    if v.is_empty() || v.len() % entry != 0 {
        return Err(DtError::BadProperty {
            node: name,
            property: "reg",
        });
    }
    while !v.is_empty() {
        let (addr, rest) = take_cells(v, ac as usize).ok_or(DtError::BadProperty {
            node: name,
            property: "reg",
        })?;
        let (size, rest) = take_cells(rest, sc as usize).ok_or(DtError::BadProperty {
            node: name,
            property: "reg",
        })?;
        let addr = parent.translate(addr, size).ok_or(DtError::BadProperty {
            node: name,
            property: "reg",
        })?;
        out.try_push(PhysRange::from_base_size(addr, size))
            .map_err(|_| DtError::TooMany {
                what: "reg entries",
                max: N,
            })?;
        v = rest;
    }
    Ok(())
}

fn first_reg<'a>(node: &FdtNode<'a>, parent: Cells) -> Result<Option<PhysRange>, DtError<'a>> {
    let mut out: ArrayVec<PhysRange, 8> = ArrayVec::new();
    regs(node, parent, &mut out)?;
    Ok(out.first().copied())
}

/// Decodes the `index`th 3-cell GIC interrupt specifier of `interrupts`.
fn gic_irq(node: &FdtNode<'_>, index: usize) -> Option<Irq> {
    let v = prop(node, "interrupts")?;
    if v.len() % 12 != 0 {
        return None;
    }
    let spec = v.get(index.checked_mul(12)?..index.checked_mul(12)?.checked_add(12)?)?;
    let cell = |i: usize| {
        u32::from_be_bytes([
            spec[i * 4],
            spec[i * 4 + 1],
            spec[i * 4 + 2],
            spec[i * 4 + 3],
        ])
    };
    let (kind, number, flags) = (cell(0), cell(1), cell(2));
    let intid = match kind {
        0 if number < 988 => number + 32,
        1 if number < 16 => number + 16,
        _ => return None,
    };
    Some(Irq {
        intid,
        level: flags & 0xc != 0,
    })
}

impl<'a> Walk<'a> {
    fn visit(
        &mut self,
        node: FdtNode<'a>,
        parent: Cells,
        path: &mut ArrayString<MAX_PATH>,
        depth: usize,
    ) -> Result<(), DtError<'a>> {
        if depth > MAX_DEPTH {
            return Err(DtError::Malformed("nodes nested deeper than 32 levels"));
        }
        let name = node.name();
        let path_len = path.len();
        if depth > 0 {
            // Paths longer than we keep only matter for stdout-path matching;
            // they simply never match.
            let _ = path.try_push('/');
            let _ = path.try_push_str(name);
        }
        // A bus whose `ranges` cannot be read fails only the reads that need
        // it: its children's addresses become untranslatable.
        let mine = Cells::of(&node, parent).unwrap_or(Cells {
            address: None,
            size: None,
            map: Some(([(0, 0, 0); MAX_BUS_RANGES], 0)),
        });
        self.node(&node, parent, path, depth)?;
        for child in node.children() {
            self.visit(child, mine, path, depth + 1)?;
        }
        path.truncate(path_len);
        Ok(())
    }

    fn node(
        &mut self,
        node: &FdtNode<'a>,
        parent: Cells,
        path: &ArrayString<MAX_PATH>,
        depth: usize,
    ) -> Result<(), DtError<'a>> {
        let name = node.name();
        if depth == 0 {
            self.model = str_prop(node, "model");
            self.root_compatible = str_prop(node, "compatible");
            return Ok(());
        }
        if depth == 1 {
            match node.base_name() {
                "chosen" => {
                    self.bootargs = str_prop(node, "bootargs");
                    self.stdout_path = str_prop(node, "stdout-path")
                        .or_else(|| str_prop(node, "linux,stdout-path"));
                }
                "aliases" => self.aliases = Some(*node),
                _ => {}
            }
        }
        if !is_enabled(node) {
            return Ok(());
        }
        if str_prop(node, "device_type") == Some("memory") {
            let mut banks: ArrayVec<PhysRange, MAX_BANKS> = ArrayVec::new();
            regs(node, parent, &mut banks)?;
            for b in banks {
                self.memory.add(b).map_err(|_| DtError::TooMany {
                    what: "memory banks",
                    max: MAX_BANKS,
                })?;
            }
        }
        if depth == 2 && path.starts_with("/reserved-memory/") {
            let mut rs: ArrayVec<PhysRange, 8> = ArrayVec::new();
            regs(node, parent, &mut rs)?;
            for r in rs {
                self.reserved.add(r).map_err(|_| DtError::TooMany {
                    what: "reserved ranges",
                    max: MAX_RESERVED,
                })?;
            }
        }
        if depth == 2 && path.starts_with("/cpus/") && str_prop(node, "device_type") == Some("cpu")
        {
            self.cpu(node, parent)?;
        }
        if has_compatible(node, &["arm,gic-v3"]) && self.gic.is_none() {
            self.gic = Some(self.gic_v3(node, parent)?);
        } else if has_compatible(
            node,
            &[
                "arm,gic-400",
                "arm,cortex-a15-gic",
                "arm,cortex-a9-gic",
                "arm,cortex-a7-gic",
            ],
        ) && self.gic.is_none()
        {
            let mut rs: ArrayVec<PhysRange, 8> = ArrayVec::new();
            regs(node, parent, &mut rs)?;
            let (Some(gicd), Some(gicc)) = (rs.first().copied(), rs.get(1).copied()) else {
                return Err(DtError::BadProperty {
                    node: name,
                    property: "reg",
                });
            };
            self.gic = Some(Gic::V2 {
                gicd,
                gicc,
                maintenance: gic_irq(node, 0),
            });
        }
        if has_compatible(node, &["arm,armv8-timer"]) && self.timer.is_none() {
            let irq = |i| {
                gic_irq(node, i).ok_or(DtError::BadProperty {
                    node: name,
                    property: "interrupts",
                })
            };
            self.timer = Some(Timer {
                sec_phys: irq(0)?,
                phys: irq(1)?,
                virt: irq(2)?,
                hyp_phys: irq(3)?,
                clock_frequency: node.property("clock-frequency").and_then(be_u32),
            });
        }
        let uart_kind = if has_compatible(node, &["arm,pl011"]) {
            Some(UartKind::Pl011)
        } else if has_compatible(node, &["cdns,uart-r1p12", "cdns,uart-r1p8", "xlnx,xuartps"]) {
            Some(UartKind::Cadence)
        } else if has_compatible(
            node,
            &[
                "ns16550a",
                "ns16550",
                "snps,dw-apb-uart",
                "brcm,bcm2835-aux-uart",
            ],
        ) {
            Some(UartKind::Ns16550)
        } else {
            None
        };
        if let Some(kind) = uart_kind {
            // A UART with an unreadable reg is skipped, not fatal: the
            // console has a fallback.
            if let Ok(Some(regs)) = first_reg(node, parent) {
                let _ = self.uarts.try_push((
                    *path,
                    Uart {
                        kind,
                        regs,
                        irq: gic_irq(node, 0),
                    },
                ));
            }
        }
        if has_compatible(node, &["arm,smmu-v3"])
            && self.smmu.is_none()
            && let Some(regs) = first_reg(node, parent)?
        {
            self.smmu = Some(Smmu { regs });
        }
        if has_compatible(node, &["arm,psci", "arm,psci-0.2", "arm,psci-1.0"])
            && self.psci.is_none()
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

    fn cpu(&mut self, node: &FdtNode<'a>, parent: Cells) -> Result<(), DtError<'a>> {
        let name = node.name();
        let bad = DtError::BadProperty {
            node: name,
            property: "reg",
        };
        let ac = parent.address.ok_or(DtError::BadCells { node: name })?;
        if !(1..=2).contains(&ac) {
            return Err(DtError::BadCells { node: name });
        }
        let v = prop(node, "reg").ok_or(bad)?;
        let (mpidr, _) = take_cells(v, ac as usize).ok_or(bad)?;
        let enable_method = match str_prop(node, "enable-method") {
            Some("psci") => EnableMethod::Psci,
            Some("spin-table") => {
                let v = prop(node, "cpu-release-addr").unwrap_or(&[]);
                let addr = match v.len() {
                    4 => take_cells(v, 1),
                    8 => take_cells(v, 2),
                    _ => None,
                };
                EnableMethod::SpinTable(
                    addr.ok_or(DtError::BadProperty {
                        node: name,
                        property: "cpu-release-addr",
                    })?
                    .0,
                )
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

    fn gic_v3(&self, node: &FdtNode<'a>, parent: Cells) -> Result<Gic, DtError<'a>> {
        let name = node.name();
        let regions = match node.property("#redistributor-regions") {
            None => 1,
            Some(p) => be_u32(p).ok_or(DtError::BadProperty {
                node: name,
                property: "#redistributor-regions",
            })?,
        };
        if regions == 0 || regions as usize > MAX_GICR_REGIONS {
            return Err(DtError::TooMany {
                what: "redistributor regions",
                max: MAX_GICR_REGIONS,
            });
        }
        let mut rs: ArrayVec<PhysRange, 16> = ArrayVec::new();
        regs(node, parent, &mut rs)?;
        let gicd = *rs.first().ok_or(DtError::BadProperty {
            node: name,
            property: "reg",
        })?;
        let gicr: ArrayVec<PhysRange, MAX_GICR_REGIONS> =
            rs.iter().skip(1).take(regions as usize).copied().collect();
        if gicr.len() != regions as usize {
            return Err(DtError::BadProperty {
                node: name,
                property: "reg",
            });
        }
        let gicr_stride = match node.property("redistributor-stride") {
            None => 0,
            Some(p) => {
                let v = p;
                let cells = match v.len() {
                    4 => 1,
                    8 => 2,
                    _ => {
                        return Err(DtError::BadProperty {
                            node: name,
                            property: "redistributor-stride",
                        });
                    }
                };
                take_cells(v, cells).map_or(0, |(s, _)| s)
            }
        };
        Ok(Gic::V3 {
            gicd,
            gicr,
            gicr_stride,
            maintenance: gic_irq(node, 0),
        })
    }

    /// The console: stdout-path (through /aliases), else the first PL011.
    fn console(&self) -> Option<Uart> {
        let target = self.stdout_path.map(|p| p.split(':').next().unwrap_or(p));
        let resolved = match target {
            Some(t) if !t.starts_with('/') => self.aliases.and_then(|a| str_prop(&a, t)),
            other => other,
        };
        if let Some(path) = resolved
            && let Some((_, u)) = self.uarts.iter().find(|(p, _)| p.as_str() == path)
        {
            return Some(*u);
        }
        self.uarts
            .iter()
            .find(|(_, u)| u.kind == UartKind::Pl011)
            .map(|(_, u)| *u)
    }
}

impl<'a> Platform<'a> {
    /// Parses a whole DTB (`dtb.len()` must equal its `totalsize`).
    pub fn from_fdt(dtb: &'a [u8]) -> Result<Platform<'a>, DtError<'a>> {
        let size = dtb_total_size(dtb)?;
        let dtb = dtb
            .get(..size)
            .ok_or(DtError::Malformed("truncated: shorter than totalsize"))?;
        let fdt = Fdt::new(dtb).map_err(DtError::Malformed)?;
        let mut walk = Walk {
            model: None,
            root_compatible: None,
            memory: RangeSet::new(),
            reserved: RangeSet::new(),
            cpus: ArrayVec::new(),
            gic: None,
            timer: None,
            uarts: ArrayVec::new(),
            smmu: None,
            psci: None,
            bootargs: None,
            stdout_path: None,
            aliases: None,
        };
        for (address, size) in fdt.reservations() {
            walk.reserved
                .add(PhysRange::from_base_size(address, size))
                .map_err(|_| DtError::TooMany {
                    what: "reserved ranges",
                    max: MAX_RESERVED,
                })?;
        }
        let mut path = ArrayString::new();
        walk.visit(fdt.root(), Cells::ROOT_PARENT, &mut path, 0)?;
        if walk.memory.is_empty() {
            return Err(DtError::Missing("memory node"));
        }
        if walk.cpus.is_empty() {
            return Err(DtError::Missing("cpu node"));
        }
        let uart = walk.console();
        Ok(Platform {
            model: walk.model.or(walk.root_compatible).unwrap_or("unknown"),
            memory: walk.memory,
            reserved: walk.reserved,
            cpus: walk.cpus,
            gic: walk
                .gic
                .ok_or(DtError::Missing("interrupt controller (GICv2/v3)"))?,
            timer: walk.timer.ok_or(DtError::Missing("arm,armv8-timer node"))?,
            uart,
            smmu: walk.smmu,
            psci: walk.psci,
            bootargs: walk.bootargs,
        })
    }
}
