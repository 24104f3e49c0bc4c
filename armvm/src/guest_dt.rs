//! The device tree a guest boots with.
//!
//! Owns the description of the virtual machine [`crate::layout`] defines:
//! RAM, vCPUs (started through PSCI over HVC), the GICv3, the architected
//! timer, the optional vPL011 console and `/chosen`. Every address comes
//! from `layout`; nothing here is read back from the guest. The
//! configuration is checked before a byte is written, and every failure is
//! a [`DtError`] value.
//!
//! `/chosen/hv,restart-count` is this hypervisor's own property: how many
//! times the domain has been restarted (0 on its first boot), so software
//! in the guest can tell a first boot from a reboot through
//! `/proc/device-tree/chosen/hv,restart-count`.
//!
//! # The Xen description
//!
//! A domain with Xen interfaces ([`GuestDtConfig::xen`]) gets the node
//! Xen 4.17's `make_hypervisor_node` writes (Linux's binding,
//! `Documentation/devicetree/bindings/arm/xen.txt`):
//!
//! ```dts
//! hypervisor {
//!     compatible = "xen,xen-4.17", "xen,xen";
//!     reg = <grant-table base, size> <extended region base, size>...;
//!     interrupts = <1 15 0xf08>;   /* PPI, INTID 31, CPUs 0xf, level-low */
//!     interrupt-parent = <GIC>;
//! };
//! ```
//!
//! Static shared memory ([`GuestDtConfig::shm`]) is described as Xen
//! 4.17's `make_resv_memory_node` does, whether or not the domain has the
//! Xen interfaces:
//!
//! ```dts
//! reserved-memory {
//!     ranges;
//!     #address-cells = <2>;
//!     #size-cells = <2>;
//!     xen-shmem@GUEST {
//!         compatible = "xen,shared-memory-v1";
//!         reg = <GUEST SIZE>;
//!         xen,id = "ID";
//!         xen,offset = /bits/ 64 <0>;
//!     };
//! };
//! ```
//!
//! Both kinds of region are checked against the guest map before a byte is
//! written: page aligned, non-empty, inside the IPA space, clear of the
//! domain's RAM, the GIC's and vPL011's frames and each other.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use vm_fdt::FdtWriter;

use crate::layout;

/// Phandle of the interrupt controller.
pub const GIC_PHANDLE: u32 = 1;
/// Phandle of the fixed 24 MHz clock the vPL011 names.
pub const APB_PCLK_PHANDLE: u32 = 2;
/// Most vCPUs a guest tree describes (the redistributor window's room).
pub const MAX_VCPUS: u32 = 128;
/// RAM is given in whole 2 MiB blocks.
pub const RAM_ALIGN: u64 = 2 << 20;
/// Longest command line accepted, in bytes without the NUL (the arm64
/// kernel keeps 2048 bytes including it).
pub const MAX_BOOTARGS: usize = 2047;
/// Frequency of the UART reference clock.
pub const APB_PCLK_HZ: u32 = 24_000_000;

/// GIC binding: interrupt type cell for an SPI / a PPI.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// GIC binding: level-sensitive, active high.
const IRQ_LEVEL_HIGH: u32 = 4;
/// GIC binding flags of the event-channel upcall, as Xen writes them: CPU
/// mask 0xf (bits 15:8, GICv2 only, ignored by GICv3) | level-low (8).
pub const EVTCHN_IRQ_FLAGS: u32 = 0xf08;
/// `/hypervisor`'s compatible: the Xen version whose ABI is offered, then
/// the generic string (Linux wants both).
pub const XEN_COMPATIBLE: [&str; 2] = ["xen,xen-4.17", "xen,xen"];
/// Most extended regions in `/hypervisor`.
pub const MAX_EXTENDED: usize = 8;
/// Most static shared-memory regions described (as `common::dom0less`
/// accepts per domain).
pub const MAX_SHM: usize = 8;
/// Longest shared-memory id (Xen's `MAX_SHM_ID_LENGTH` less the NUL).
pub const MAX_SHM_ID: usize = 15;
/// Alignment of every region: the stage-2 page.
pub const REGION_ALIGN: u64 = 4096;
/// Smallest extended region [`extended_regions`] offers (Xen's minimum).
pub const MIN_EXTENDED: u64 = 64 << 20;
/// Extended regions start and end on this alignment (as Xen's do, so
/// they can be mapped with 2 MiB blocks).
pub const EXTENDED_ALIGN: u64 = 2 << 20;
/// MPIDR_EL1 affinity fields (Aff3, Aff2, Aff1, Aff0).
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// What to describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestDtConfig<'a> {
    /// Bytes of RAM at [`layout::RAM0_BASE`].
    pub ram_size: u64,
    /// Number of vCPUs, 1..=[`MAX_VCPUS`].
    pub nr_vcpus: u32,
    /// The kernel command line.
    pub bootargs: &'a str,
    /// The initrd's IPA range `[start, end)`, when there is one.
    pub initrd: Option<(u64, u64)>,
    /// How many times this domain has been restarted.
    pub restart_count: u32,
    /// Describe the vPL011 (and make it the console).
    pub vpl011: bool,
    /// The `/hypervisor` node, for a domain with Xen interfaces (`None`:
    /// `xen,enhanced` absent or `"disabled"`, no node).
    pub xen: Option<XenNode<'a>>,
    /// Static shared-memory regions the guest has mapped, as (guest
    /// address, size, id), described under `/reserved-memory`.
    pub shm: &'a [(u64, u64, &'a str)],
}

/// What `/hypervisor` tells a Xen-aware guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenNode<'a> {
    /// Where the guest maps grant-table frames, (base, size): `reg` 0.
    /// Normally [`layout::GNTTAB_BASE`], [`layout::GNTTAB_SIZE`].
    pub grant_table: (u64, u64),
    /// Extended regions, (base, size) each: unused guest-physical space
    /// for mapping foreign pages, `reg` 1 and on. At most
    /// [`MAX_EXTENDED`]; normally [`extended_regions`] of the domain's
    /// shared memory.
    pub extended: &'a [(u64, u64)],
    /// The event-channel upcall PPI as an INTID, 16..=31: normally
    /// [`layout::EVTCHN_INTID`] (31, as Xen).
    pub evtchn_ppi: u32,
}

/// Why no tree was written.
#[derive(Debug, PartialEq, Eq)]
pub enum DtError {
    /// `nr_vcpus` is 0 or above [`MAX_VCPUS`].
    BadVcpuCount(u32),
    /// `ram_size` is 0, not a multiple of 2 MiB, or above [`layout::RAM0_MAX`].
    BadRamSize(u64),
    /// The initrd range is empty, inverted or not inside RAM.
    BadInitrd {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The command line contains a NUL byte.
    BootargsNul,
    /// The command line is longer than [`MAX_BOOTARGS`].
    BootargsTooLong(usize),
    /// The event-channel PPI is not an INTID of 16..=31.
    BadEvtchnPpi(u32),
    /// A region (what: "grant table", "extended region" or "shared
    /// memory") is empty, not page aligned, past the IPA space, or
    /// overlaps RAM, a device frame or another region.
    BadRegion {
        /// Which kind of region.
        what: &'static str,
        /// Its guest-physical base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// More extended regions than [`MAX_EXTENDED`] or shared regions than
    /// [`MAX_SHM`]: what, and how many.
    TooManyRegions(&'static str, usize),
    /// A shared region's id (of the region at this guest address) is
    /// empty, longer than [`MAX_SHM_ID`] or holds a NUL.
    BadShmId(u64),
    /// The writer refused (a bug here, not in the configuration).
    Writer(vm_fdt::Error),
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::BadVcpuCount(n) => {
                write!(f, "guest DT: {n} vCPUs, must be 1..={MAX_VCPUS}")
            }
            DtError::BadRamSize(s) => write!(
                f,
                "guest DT: RAM size {s:#x} must be non-zero, a multiple of 2 MiB and at most {:#x}",
                layout::RAM0_MAX
            ),
            DtError::BadInitrd { start, end } => write!(
                f,
                "guest DT: initrd [{start:#x}, {end:#x}) is empty or not inside guest RAM"
            ),
            DtError::BootargsNul => write!(f, "guest DT: bootargs contain a NUL byte"),
            DtError::BootargsTooLong(n) => write!(
                f,
                "guest DT: bootargs are {n} bytes, at most {MAX_BOOTARGS} are accepted"
            ),
            DtError::BadEvtchnPpi(n) => {
                write!(
                    f,
                    "guest DT: event-channel PPI {n} is not an INTID of 16..=31"
                )
            }
            DtError::BadRegion { what, base, size } => write!(
                f,
                "guest DT: {what} [{base:#x}, +{size:#x}) is empty, not 4 KiB aligned, past the \
                 IPA space, or overlaps RAM, a device or another region"
            ),
            DtError::TooManyRegions(what, n) => write!(f, "guest DT: {n} {what}s, too many"),
            DtError::BadShmId(base) => write!(
                f,
                "guest DT: the id of the shared memory at {base:#x} is empty, longer than \
                 {MAX_SHM_ID} bytes or holds a NUL"
            ),
            DtError::Writer(e) => write!(f, "guest DT: writer: {e}"),
        }
    }
}

impl From<vm_fdt::Error> for DtError {
    fn from(e: vm_fdt::Error) -> Self {
        DtError::Writer(e)
    }
}

/// The vPL011's node name.
fn pl011_name() -> String {
    format!("pl011@{:x}", layout::VPL011_BASE)
}

/// The vPL011's node path (also `stdout-path` and the `serial0` alias).
pub fn pl011_path() -> String {
    format!("/{}", pl011_name())
}

fn validate(cfg: &GuestDtConfig) -> Result<(), DtError> {
    if cfg.nr_vcpus == 0 || cfg.nr_vcpus > MAX_VCPUS {
        return Err(DtError::BadVcpuCount(cfg.nr_vcpus));
    }
    if cfg.ram_size == 0
        || !cfg.ram_size.is_multiple_of(RAM_ALIGN)
        || cfg.ram_size > layout::RAM0_MAX
    {
        return Err(DtError::BadRamSize(cfg.ram_size));
    }
    if let Some((start, end)) = cfg.initrd {
        let ok = end
            .checked_sub(start)
            .is_some_and(|len| len > 0 && layout::in_ram(start, len, cfg.ram_size));
        if !ok {
            return Err(DtError::BadInitrd { start, end });
        }
    }
    if cfg.bootargs.contains('\0') {
        return Err(DtError::BootargsNul);
    }
    if cfg.bootargs.len() > MAX_BOOTARGS {
        return Err(DtError::BootargsTooLong(cfg.bootargs.len()));
    }
    validate_regions(cfg)
}

/// The guest-physical ranges `[start, end)` the fixed map and RAM take.
fn occupied(ram_size: u64) -> [(u64, u64); 4] {
    let r = |base: u64, size: u64| (base, base + size);
    [
        r(layout::RAM0_BASE, ram_size),
        r(layout::GICD_BASE, layout::GICD_SIZE),
        r(layout::GICR_BASE, layout::GICR_WINDOW),
        r(layout::VPL011_BASE, layout::VPL011_SIZE),
    ]
}

/// The grant table, extended regions and shared memory: each sound alone,
/// clear of the fixed map and of each other.
fn validate_regions(cfg: &GuestDtConfig) -> Result<(), DtError> {
    if cfg.shm.len() > MAX_SHM {
        return Err(DtError::TooManyRegions(
            "shared-memory region",
            cfg.shm.len(),
        ));
    }
    let mut regions: Vec<(&'static str, u64, u64)> = Vec::new();
    if let Some(x) = &cfg.xen {
        if !(16..32).contains(&x.evtchn_ppi) {
            return Err(DtError::BadEvtchnPpi(x.evtchn_ppi));
        }
        if x.extended.len() > MAX_EXTENDED {
            return Err(DtError::TooManyRegions("extended region", x.extended.len()));
        }
        regions.push(("grant table", x.grant_table.0, x.grant_table.1));
        regions.extend(x.extended.iter().map(|&(b, s)| ("extended region", b, s)));
    }
    for &(base, size, id) in cfg.shm {
        if id.is_empty() || id.len() > MAX_SHM_ID || id.contains('\0') {
            return Err(DtError::BadShmId(base));
        }
        regions.push(("shared memory", base, size));
    }
    let fixed = occupied(cfg.ram_size);
    for (i, &(what, base, size)) in regions.iter().enumerate() {
        let bad = DtError::BadRegion { what, base, size };
        let end = match base.checked_add(size) {
            Some(e) if size > 0 && e <= 1 << layout::IPA_BITS => e,
            _ => return Err(bad),
        };
        if !base.is_multiple_of(REGION_ALIGN) || !size.is_multiple_of(REGION_ALIGN) {
            return Err(bad);
        }
        let clear = |&(s, e): &(u64, u64)| end <= s || e <= base;
        if !fixed.iter().all(clear)
            || !regions[..i]
                .iter()
                .map(|&(_, b, s)| (b, b + s))
                .all(|r| clear(&r))
        {
            return Err(bad);
        }
    }
    Ok(())
}

/// The extended regions for a domain whose shared memory is mapped at
/// `shm` (guest address, size, id): [`layout::EXT_REGION_BASE`] up to the
/// top of the IPA space, less the shared regions, each piece shrunk to
/// [`EXTENDED_ALIGN`] and kept if at least [`MIN_EXTENDED`], at most
/// [`MAX_EXTENDED`] of them (the lowest), in address order.
pub fn extended_regions(shm: &[(u64, u64, &str)]) -> Vec<(u64, u64)> {
    let end = layout::EXT_REGION_BASE + layout::EXT_REGION_SIZE;
    let mut cuts: Vec<(u64, u64)> = shm
        .iter()
        .map(|&(b, s, _)| (b, b.saturating_add(s)))
        .collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut keep = |s: u64, e: u64| {
        // Both at most `end` (2^IPA_BITS): no overflow.
        let s = s.next_multiple_of(EXTENDED_ALIGN);
        let e = e - e % EXTENDED_ALIGN;
        if e > s && e - s >= MIN_EXTENDED && out.len() < MAX_EXTENDED {
            out.push((s, e - s));
        }
    };
    let mut start = layout::EXT_REGION_BASE;
    for (s, e) in cuts {
        let (s, e) = (s.clamp(start, end), e.clamp(start, end));
        keep(start, s);
        start = e;
    }
    keep(start, end);
    out
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Writes the guest's device tree blob.
pub fn build(cfg: &GuestDtConfig) -> Result<Vec<u8>, DtError> {
    validate(cfg)?;
    let uart = pl011_path();
    let mut w = FdtWriter::new()?;

    let root = w.begin_node("")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_string("model", "hv-arm guest")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let chosen = w.begin_node("chosen")?;
    w.property_string("bootargs", cfg.bootargs)?;
    if cfg.vpl011 {
        w.property_string("stdout-path", &uart)?;
    }
    if let Some((start, end)) = cfg.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    w.property_u32("hv,restart-count", cfg.restart_count)?;
    w.end_node(chosen)?;

    if cfg.vpl011 {
        let aliases = w.begin_node("aliases")?;
        w.property_string("serial0", &uart)?;
        w.end_node(aliases)?;
    }

    let memory = w.begin_node(&format!("memory@{:x}", layout::RAM0_BASE))?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[layout::RAM0_BASE, cfg.ram_size])?;
    w.end_node(memory)?;

    if !cfg.shm.is_empty() {
        let resv = w.begin_node("reserved-memory")?;
        w.property_null("ranges")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        for &(base, size, id) in cfg.shm {
            let n = w.begin_node(&format!("xen-shmem@{base:x}"))?;
            w.property_string("compatible", "xen,shared-memory-v1")?;
            w.property_array_u64("reg", &[base, size])?;
            w.property_string("xen,id", id)?;
            w.property_u64("xen,offset", 0)?;
            w.end_node(n)?;
        }
        w.end_node(resv)?;
    }

    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for n in 0..cfg.nr_vcpus {
        // At most 128 vCPUs: Aff1 <= 7, so the affinity fits one cell.
        let reg = (layout::vcpu_mpidr(n) & MPIDR_AFFINITY) as u32;
        let cpu = w.begin_node(&format!("cpu@{reg:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        w.property_u32("reg", reg)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(cpu)?;
    }
    w.end_node(cpus)?;

    let psci = w.begin_node("psci")?;
    w.property_string_list("compatible", strings(&["arm,psci-1.0", "arm,psci-0.2"]))?;
    w.property_string("method", "hvc")?;
    w.end_node(psci)?;

    // nr_vcpus <= 128, so this stays inside GICR_WINDOW.
    let gicr_size = u64::from(cfg.nr_vcpus) * layout::GICR_STRIDE;
    let gic = w.begin_node(&format!("interrupt-controller@{:x}", layout::GICD_BASE))?;
    w.property_string("compatible", "arm,gic-v3")?;
    w.property_u32("#interrupt-cells", 3)?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_null("ranges")?;
    w.property_null("interrupt-controller")?;
    w.property_array_u64(
        "reg",
        &[
            layout::GICD_BASE,
            layout::GICD_SIZE,
            layout::GICR_BASE,
            gicr_size,
        ],
    )?;
    w.property_u32("#redistributor-regions", 1)?;
    w.property_phandle(GIC_PHANDLE)?;
    w.end_node(gic)?;

    let timer = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    let mut irqs = vec![];
    for ppi in layout::TIMER_PPIS {
        irqs.extend_from_slice(&[GIC_PPI, ppi - 16, IRQ_LEVEL_HIGH]);
    }
    w.property_array_u32("interrupts", &irqs)?;
    w.end_node(timer)?;

    let clk = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", APB_PCLK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_phandle(APB_PCLK_PHANDLE)?;
    w.end_node(clk)?;

    if cfg.vpl011 {
        let pl011 = w.begin_node(&pl011_name())?;
        w.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
        w.property_array_u64("reg", &[layout::VPL011_BASE, layout::VPL011_SIZE])?;
        w.property_array_u32(
            "interrupts",
            &[GIC_SPI, layout::VPL011_INTID - 32, IRQ_LEVEL_HIGH],
        )?;
        w.property_array_u32("clocks", &[APB_PCLK_PHANDLE, APB_PCLK_PHANDLE])?;
        w.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
        w.end_node(pl011)?;
    }

    if let Some(x) = &cfg.xen {
        let hv = w.begin_node("hypervisor")?;
        w.property_string_list("compatible", strings(&XEN_COMPATIBLE))?;
        let mut reg = vec![x.grant_table.0, x.grant_table.1];
        for &(base, size) in x.extended {
            reg.extend_from_slice(&[base, size]);
        }
        w.property_array_u64("reg", &reg)?;
        // Checked: 16..=31.
        w.property_array_u32(
            "interrupts",
            &[GIC_PPI, x.evtchn_ppi - 16, EVTCHN_IRQ_FLAGS],
        )?;
        w.property_u32("interrupt-parent", GIC_PHANDLE)?;
        w.end_node(hv)?;
    }

    w.end_node(root)?;
    Ok(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use common::fdt::{Fdt, Node};
    use common::memory::PhysRange;
    use common::platform::{Conduit, EnableMethod, Gic, Irq, Platform, UartKind};

    const MIB: u64 = 1 << 20;

    fn cfg() -> GuestDtConfig<'static> {
        GuestDtConfig {
            ram_size: 512 * MIB,
            nr_vcpus: 4,
            bootargs: "console=ttyAMA0 earlycon rdinit=/init",
            initrd: Some((0x4800_0000, 0x4812_3456)),
            restart_count: 3,
            vpl011: true,
            xen: None,
            shm: &[],
        }
    }

    const EXT: [(u64, u64); 1] = [(layout::EXT_REGION_BASE, layout::EXT_REGION_SIZE)];

    fn xen() -> XenNode<'static> {
        XenNode {
            grant_table: (layout::GNTTAB_BASE, layout::GNTTAB_SIZE),
            extended: &EXT,
            evtchn_ppi: layout::EVTCHN_INTID,
        }
    }

    fn child<'a>(n: &Node<'a>, name: &str) -> Node<'a> {
        n.children()
            .find(|c| c.name() == name)
            .unwrap_or_else(|| panic!("no node {name} under {}", n.name()))
    }

    fn has_child(n: &Node<'_>, name: &str) -> bool {
        n.children().any(|c| c.name() == name)
    }

    fn prop<'a>(n: &Node<'a>, name: &str) -> &'a [u8] {
        n.property(name)
            .unwrap_or_else(|| panic!("no property {name} in {}", n.name()))
    }

    fn u32p(n: &Node<'_>, name: &str) -> u32 {
        let v = prop(n, name);
        assert_eq!(v.len(), 4, "{name}");
        u32::from_be_bytes(v.try_into().unwrap())
    }

    fn u64p(n: &Node<'_>, name: &str) -> u64 {
        let v = prop(n, name);
        assert_eq!(v.len(), 8, "{name}");
        u64::from_be_bytes(v.try_into().unwrap())
    }

    fn cells(n: &Node<'_>, name: &str) -> Vec<u32> {
        let v = prop(n, name);
        assert_eq!(v.len() % 4, 0);
        v.chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn u64s(n: &Node<'_>, name: &str) -> Vec<u64> {
        let v = prop(n, name);
        assert_eq!(v.len() % 8, 0);
        v.chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn strs<'a>(n: &Node<'a>, name: &str) -> Vec<&'a str> {
        let v = prop(n, name);
        assert_eq!(v.last(), Some(&0), "{name} not NUL-terminated");
        v[..v.len() - 1]
            .split(|&b| b == 0)
            .map(|s| core::str::from_utf8(s).unwrap())
            .collect()
    }

    fn s<'a>(n: &Node<'a>, name: &str) -> &'a str {
        let v = strs(n, name);
        assert_eq!(v.len(), 1, "{name}");
        v[0]
    }

    #[test]
    fn root_properties() {
        let blob = build(&cfg()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        assert_eq!(u32p(&root, "#address-cells"), 2);
        assert_eq!(u32p(&root, "#size-cells"), 2);
        assert_eq!(s(&root, "model"), "hv-arm guest");
        assert_eq!(strs(&root, "compatible"), ["linux,dummy-virt"]);
        assert_eq!(u32p(&root, "interrupt-parent"), GIC_PHANDLE);
        assert_eq!(fdt.reservations().count(), 0);
    }

    #[test]
    fn memory_node() {
        let blob = build(&cfg()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let mem = child(&fdt.root(), "memory@40000000");
        assert_eq!(s(&mem, "device_type"), "memory");
        assert_eq!(u64s(&mem, "reg"), [layout::RAM0_BASE, 512 * MIB]);
    }

    #[test]
    fn cpu_nodes() {
        let c = GuestDtConfig {
            nr_vcpus: 20,
            ..cfg()
        };
        let blob = build(&c).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let cpus = child(&fdt.root(), "cpus");
        assert_eq!(u32p(&cpus, "#address-cells"), 1);
        assert_eq!(u32p(&cpus, "#size-cells"), 0);
        let nodes: Vec<_> = cpus.children().collect();
        assert_eq!(nodes.len(), 20);
        for (n, cpu) in nodes.iter().enumerate() {
            let mpidr = layout::vcpu_mpidr(n as u32) & !(1 << 31);
            assert_eq!(cpu.name(), format!("cpu@{mpidr:x}"));
            assert_eq!(u64::from(u32p(cpu, "reg")), mpidr);
            assert_eq!(s(cpu, "device_type"), "cpu");
            assert_eq!(strs(cpu, "compatible"), ["arm,armv8"]);
            assert_eq!(s(cpu, "enable-method"), "psci");
            assert_eq!(
                layout::vcpu_of_mpidr(u64::from(u32p(cpu, "reg")), 20),
                Some(n as u32)
            );
        }
        assert_eq!(nodes[16].name(), "cpu@100");
    }

    #[test]
    fn psci_node() {
        let blob = build(&cfg()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let psci = child(&fdt.root(), "psci");
        assert_eq!(strs(&psci, "compatible"), ["arm,psci-1.0", "arm,psci-0.2"]);
        assert_eq!(s(&psci, "method"), "hvc");
    }

    #[test]
    fn gic_node() {
        let blob = build(&cfg()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let gic = child(&fdt.root(), "interrupt-controller@3001000");
        assert_eq!(strs(&gic, "compatible"), ["arm,gic-v3"]);
        assert_eq!(u32p(&gic, "#interrupt-cells"), 3);
        assert_eq!(u32p(&gic, "#address-cells"), 2);
        assert_eq!(u32p(&gic, "#size-cells"), 2);
        assert_eq!(prop(&gic, "ranges"), b"");
        assert_eq!(prop(&gic, "interrupt-controller"), b"");
        assert_eq!(
            u64s(&gic, "reg"),
            [
                layout::GICD_BASE,
                layout::GICD_SIZE,
                layout::GICR_BASE,
                4 * layout::GICR_STRIDE
            ]
        );
        assert_eq!(u32p(&gic, "#redistributor-regions"), 1);
        assert_eq!(u32p(&gic, "phandle"), GIC_PHANDLE);
    }

    #[test]
    fn timer_node() {
        let blob = build(&cfg()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let timer = child(&fdt.root(), "timer");
        assert_eq!(strs(&timer, "compatible"), ["arm,armv8-timer"]);
        assert_eq!(
            cells(&timer, "interrupts"),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        assert!(timer.property("always-on").is_none());
    }

    #[test]
    fn clock_and_pl011() {
        let blob = build(&cfg()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        let clk = child(&root, "apb-pclk");
        assert_eq!(strs(&clk, "compatible"), ["fixed-clock"]);
        assert_eq!(u32p(&clk, "#clock-cells"), 0);
        assert_eq!(u32p(&clk, "clock-frequency"), 24_000_000);
        assert_eq!(strs(&clk, "clock-output-names"), ["clk24mhz"]);
        assert_eq!(u32p(&clk, "phandle"), APB_PCLK_PHANDLE);

        let uart = child(&root, "pl011@22000000");
        assert_eq!(strs(&uart, "compatible"), ["arm,pl011", "arm,primecell"]);
        assert_eq!(
            u64s(&uart, "reg"),
            [layout::VPL011_BASE, layout::VPL011_SIZE]
        );
        assert_eq!(cells(&uart, "interrupts"), [0, 0, 4]);
        assert_eq!(cells(&uart, "clocks"), [APB_PCLK_PHANDLE, APB_PCLK_PHANDLE]);
        assert_eq!(strs(&uart, "clock-names"), ["uartclk", "apb_pclk"]);

        let aliases = child(&root, "aliases");
        assert_eq!(s(&aliases, "serial0"), "/pl011@22000000");
        assert_eq!(pl011_path(), "/pl011@22000000");
    }

    #[test]
    fn chosen_node() {
        let blob = build(&cfg()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let chosen = child(&fdt.root(), "chosen");
        assert_eq!(
            s(&chosen, "bootargs"),
            "console=ttyAMA0 earlycon rdinit=/init"
        );
        assert_eq!(s(&chosen, "stdout-path"), "/pl011@22000000");
        assert_eq!(u64p(&chosen, "linux,initrd-start"), 0x4800_0000);
        assert_eq!(u64p(&chosen, "linux,initrd-end"), 0x4812_3456);
        assert_eq!(u32p(&chosen, "hv,restart-count"), 3);
    }

    #[test]
    fn without_console_or_initrd() {
        let c = GuestDtConfig {
            initrd: None,
            vpl011: false,
            restart_count: 0,
            bootargs: "",
            ..cfg()
        };
        let blob = build(&c).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        assert!(!has_child(&root, "pl011@22000000"));
        assert!(!has_child(&root, "aliases"));
        assert!(has_child(&root, "apb-pclk"));
        let chosen = child(&root, "chosen");
        assert!(chosen.property("stdout-path").is_none());
        assert!(chosen.property("linux,initrd-start").is_none());
        assert!(chosen.property("linux,initrd-end").is_none());
        assert_eq!(prop(&chosen, "bootargs"), b"\0");
        assert_eq!(u32p(&chosen, "hv,restart-count"), 0);

        let p = Platform::from_fdt(&blob).unwrap();
        assert_eq!(p.uart, None);
    }

    #[test]
    fn platform_reader_agrees() {
        let blob = build(&cfg()).unwrap();
        let p = Platform::from_fdt(&blob).unwrap();
        assert_eq!(p.model, "hv-arm guest");
        let mem: Vec<_> = p.memory.iter().copied().collect();
        assert_eq!(
            mem,
            [PhysRange::from_base_size(layout::RAM0_BASE, 512 * MIB)]
        );
        assert_eq!(p.reserved.iter().count(), 0);
        assert_eq!(p.cpus.len(), 4);
        for (n, cpu) in p.cpus.iter().enumerate() {
            assert_eq!(cpu.mpidr, layout::vcpu_mpidr(n as u32) & !(1 << 31));
            assert_eq!(cpu.enable_method, EnableMethod::Psci);
        }
        match &p.gic {
            Gic::V3 {
                gicd,
                gicr,
                gicr_stride,
                maintenance,
            } => {
                assert_eq!(
                    *gicd,
                    PhysRange::from_base_size(layout::GICD_BASE, layout::GICD_SIZE)
                );
                assert_eq!(
                    gicr.as_slice(),
                    [PhysRange::from_base_size(
                        layout::GICR_BASE,
                        4 * layout::GICR_STRIDE
                    )]
                );
                assert_eq!(*gicr_stride, 0);
                assert_eq!(*maintenance, None);
            }
            other => panic!("not a GICv3: {other:?}"),
        }
        let level = |intid| Irq { intid, level: true };
        assert!(p.timer.described);
        assert_eq!(p.timer.sec_phys, level(29));
        assert_eq!(p.timer.phys, level(30));
        assert_eq!(p.timer.virt, level(layout::VTIMER_INTID));
        assert_eq!(p.timer.hyp_phys, level(26));
        assert_eq!(p.timer.clock_frequency, None);
        let uart = p.uart.expect("stdout-path resolves");
        assert_eq!(uart.kind, UartKind::Pl011);
        assert_eq!(
            uart.regs,
            PhysRange::from_base_size(layout::VPL011_BASE, layout::VPL011_SIZE)
        );
        assert_eq!(uart.irq, Some(level(layout::VPL011_INTID)));
        let psci = p.psci.expect("psci node");
        assert_eq!(psci.conduit, Conduit::Hvc);
        assert!(psci.v0_2_or_later);
        assert_eq!(p.bootargs, Some("console=ttyAMA0 earlycon rdinit=/init"));
        assert_eq!(p.smmu, None);
    }

    #[test]
    fn largest_tree_stays_small() {
        let long = "x".repeat(MAX_BOOTARGS);
        let ext: Vec<(u64, u64)> = (0..MAX_EXTENDED as u64)
            .map(|i| (layout::EXT_REGION_BASE + (i << 30), 1 << 30))
            .collect();
        let shm: Vec<(u64, u64, &str)> = (0..MAX_SHM as u64)
            .map(|i| (0x1000 + (i << 12), 0x1000, "0123456789abcde"))
            .collect();
        let c = GuestDtConfig {
            nr_vcpus: MAX_VCPUS,
            ram_size: layout::RAM0_MAX,
            bootargs: &long,
            initrd: Some((layout::RAM0_BASE, layout::RAM0_BASE + layout::RAM0_MAX)),
            restart_count: u32::MAX,
            vpl011: true,
            xen: Some(XenNode {
                extended: &ext,
                ..xen()
            }),
            shm: &shm,
        };
        let blob = build(&c).unwrap();
        assert!(blob.len() < 64 << 10, "{} bytes", blob.len());
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        let cpus = child(&root, "cpus");
        assert_eq!(cpus.children().count(), 128);
        assert_eq!(child(&cpus, "cpu@70f").name(), "cpu@70f");
        let gic = child(&root, "interrupt-controller@3001000");
        assert_eq!(u64s(&gic, "reg")[3], layout::GICR_WINDOW);
        assert_eq!(u32p(&child(&root, "chosen"), "hv,restart-count"), u32::MAX);
        assert_eq!(
            u64s(&child(&root, "hypervisor"), "reg").len(),
            2 + 2 * MAX_EXTENDED
        );
        assert_eq!(child(&root, "reserved-memory").children().count(), MAX_SHM);
        // Also within what the hypervisor's own reader accepts.
        assert!(blob.len() <= common::platform::MAX_DTB_SIZE);
    }

    #[test]
    fn one_vcpu() {
        let blob = build(&GuestDtConfig {
            nr_vcpus: 1,
            ..cfg()
        })
        .unwrap();
        let p = Platform::from_fdt(&blob).unwrap();
        assert_eq!(p.cpus.len(), 1);
        assert_eq!(p.cpus[0].mpidr, 0);
    }

    #[test]
    fn vcpu_count_checked() {
        for n in [0, MAX_VCPUS + 1, u32::MAX] {
            let c = GuestDtConfig {
                nr_vcpus: n,
                ..cfg()
            };
            assert_eq!(build(&c), Err(DtError::BadVcpuCount(n)));
        }
    }

    #[test]
    fn ram_size_checked() {
        for size in [
            0,
            1,
            RAM_ALIGN - 1,
            RAM_ALIGN + 4096,
            layout::RAM0_MAX + RAM_ALIGN,
            u64::MAX,
        ] {
            let c = GuestDtConfig {
                ram_size: size,
                initrd: None,
                ..cfg()
            };
            assert_eq!(build(&c), Err(DtError::BadRamSize(size)), "{size:#x}");
        }
        let c = GuestDtConfig {
            ram_size: RAM_ALIGN,
            initrd: None,
            ..cfg()
        };
        assert!(build(&c).is_ok());
    }

    #[test]
    fn initrd_checked() {
        let ram = 512 * MIB;
        let top = layout::RAM0_BASE + ram;
        let bad = [
            (0x4800_0000, 0x4800_0000),    // empty
            (0x4800_1000, 0x4800_0000),    // inverted
            (0x3fff_f000, 0x4000_1000),    // starts below RAM
            (top - 0x1000, top + 1),       // runs past RAM
            (top, top + 0x1000),           // wholly above
            (0, 0x1000),                   // nowhere near
            (u64::MAX - 0x1000, u64::MAX), // at the top
            (layout::RAM0_BASE, u64::MAX), // huge
        ];
        for (start, end) in bad {
            let c = GuestDtConfig {
                initrd: Some((start, end)),
                ..cfg()
            };
            assert_eq!(
                build(&c),
                Err(DtError::BadInitrd { start, end }),
                "{start:#x}..{end:#x}"
            );
        }
        let c = GuestDtConfig {
            initrd: Some((top - 0x1000, top)),
            ..cfg()
        };
        assert!(build(&c).is_ok());
    }

    #[test]
    fn bootargs_checked() {
        let c = GuestDtConfig {
            bootargs: "a\0b",
            ..cfg()
        };
        assert_eq!(build(&c), Err(DtError::BootargsNul));
        let long = "y".repeat(MAX_BOOTARGS + 1);
        let c = GuestDtConfig {
            bootargs: &long,
            ..cfg()
        };
        assert_eq!(build(&c), Err(DtError::BootargsTooLong(MAX_BOOTARGS + 1)));
    }

    #[test]
    fn errors_display() {
        let all = [
            DtError::BadVcpuCount(0),
            DtError::BadRamSize(1),
            DtError::BadInitrd { start: 1, end: 0 },
            DtError::BootargsNul,
            DtError::BootargsTooLong(5000),
            DtError::BadEvtchnPpi(0),
            DtError::BadRegion {
                what: "grant table",
                base: 0,
                size: 0,
            },
            DtError::TooManyRegions("extended region", 9),
            DtError::BadShmId(0),
            DtError::Writer(vm_fdt::Error::UnclosedNode),
        ];
        for e in all {
            assert!(e.to_string().starts_with("guest DT: "));
        }
    }

    #[test]
    fn hypervisor_node() {
        let ext = [
            (layout::EXT_REGION_BASE, 64 << 20),
            (0x2_0000_0000, 0x100_0000_0000 - 0x2_0000_0000),
        ];
        let c = GuestDtConfig {
            xen: Some(XenNode {
                extended: &ext,
                ..xen()
            }),
            ..cfg()
        };
        let blob = build(&c).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        let hv = child(&root, "hypervisor");
        assert_eq!(strs(&hv, "compatible"), ["xen,xen-4.17", "xen,xen"]);
        assert_eq!(
            u64s(&hv, "reg"),
            [
                0x3800_0000,
                0x100_0000,
                0x1_0000_0000,
                64 << 20,
                0x2_0000_0000,
                0xfe_0000_0000
            ]
        );
        // PPI, INTID 31 - 16, CPU mask 0xf | level-low: exactly Xen's.
        assert_eq!(cells(&hv, "interrupts"), [1, 15, 0xf08]);
        assert_eq!(u32p(&hv, "interrupt-parent"), GIC_PHANDLE);
        assert_eq!(hv.properties().count(), 4);
        assert_eq!(hv.children().count(), 0);
        // The root's cells the reg is read with.
        assert_eq!(
            (u32p(&root, "#address-cells"), u32p(&root, "#size-cells")),
            (2, 2)
        );
        // No extended regions: the grant table alone.
        let c = GuestDtConfig {
            xen: Some(XenNode {
                extended: &[],
                ..xen()
            }),
            ..cfg()
        };
        let blob = build(&c).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let hv = child(&fdt.root(), "hypervisor");
        assert_eq!(u64s(&hv, "reg"), [layout::GNTTAB_BASE, layout::GNTTAB_SIZE]);
        // Without Xen interfaces there is no node; the rest is unchanged.
        let blob = build(&cfg()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert!(!has_child(&fdt.root(), "hypervisor"));
        assert!(!has_child(&fdt.root(), "reserved-memory"));
        // Another PPI is written as asked.
        let c = GuestDtConfig {
            xen: Some(XenNode {
                evtchn_ppi: 16,
                ..xen()
            }),
            ..cfg()
        };
        let blob = build(&c).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(
            cells(&child(&fdt.root(), "hypervisor"), "interrupts"),
            [1, 0, 0xf08]
        );
    }

    #[test]
    fn shared_memory_nodes() {
        let shm = [
            (0x1_0000_0000, 0x20_0000, "ring"),
            (0x2300_0000, 0x1000, "my-shared-mem-1"),
        ];
        let c = GuestDtConfig { shm: &shm, ..cfg() };
        let blob = build(&c).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        let resv = child(&root, "reserved-memory");
        assert_eq!(prop(&resv, "ranges"), b"");
        assert_eq!(u32p(&resv, "#address-cells"), 2);
        assert_eq!(u32p(&resv, "#size-cells"), 2);
        let kids: Vec<_> = resv.children().collect();
        assert_eq!(kids.len(), 2);
        for (n, &(base, size, id)) in kids.iter().zip(&shm) {
            assert_eq!(n.name(), format!("xen-shmem@{base:x}"));
            assert_eq!(strs(n, "compatible"), ["xen,shared-memory-v1"]);
            assert_eq!(u64s(n, "reg"), [base, size]);
            assert_eq!(s(n, "xen,id"), id);
            assert_eq!(u64p(n, "xen,offset"), 0);
            assert_eq!(n.properties().count(), 4);
        }
        assert_eq!(kids[0].name(), "xen-shmem@100000000");
        // Without Xen interfaces too (Xen writes it either way).
        assert!(!has_child(&root, "hypervisor"));
        // The reader sees them as reserved memory, and RAM unchanged.
        let p = Platform::from_fdt(&blob).unwrap();
        let resv: Vec<_> = p.reserved.iter().copied().collect();
        assert!(resv.contains(&PhysRange::from_base_size(0x1_0000_0000, 0x20_0000)));
        assert!(resv.contains(&PhysRange::from_base_size(0x2300_0000, 0x1000)));
        assert_eq!(p.memory.iter().count(), 1);
    }

    #[test]
    fn regions_checked() {
        let ram = 512 * MIB;
        let region = |what, base, size| DtError::BadRegion { what, base, size };
        let top = 1u64 << layout::IPA_BITS;
        // (grant table, extended, shm) and the error.
        let bad_shm = [
            (0x2300_0000, 0, "shared memory"),                 // empty
            (0x2300_0800, 0x1000, "shared memory"),            // unaligned base
            (0x2300_0000, 0x800, "shared memory"),             // unaligned size
            (layout::RAM0_BASE + ram - 0x1000, 0x2000, "ram"), // into RAM
            (layout::GICD_BASE, 0x1000, "gicd"),
            (layout::GICR_BASE + 0x10_0000, 0x1000, "gicr window"),
            (layout::VPL011_BASE, 0x1000, "vpl011"),
            (layout::GNTTAB_BASE + 0x1000, 0x1000, "grant table"),
            (layout::EXT_REGION_BASE, 0x1000, "extended"),
            (top - 0x1000, 0x2000, "past the IPA space"),
            (u64::MAX - 0xfff, 0x1000, "wraps"),
        ];
        for (base, size, why) in bad_shm {
            let shm = [(base, size, "id")];
            let c = GuestDtConfig {
                xen: Some(xen()),
                shm: &shm,
                ..cfg()
            };
            assert_eq!(build(&c), Err(region("shared memory", base, size)), "{why}");
        }
        // The same regions are fine without the Xen node where they only
        // clashed with it.
        let shm = [
            (layout::GNTTAB_BASE, 0x1000, "id"),
            (layout::EXT_REGION_BASE, 0x1000, "id2"),
        ];
        assert!(build(&GuestDtConfig { shm: &shm, ..cfg() }).is_ok());
        // Two shared regions overlapping each other.
        let shm = [(0x2300_0000, 0x2000, "a"), (0x2300_1000, 0x1000, "b")];
        assert_eq!(
            build(&GuestDtConfig { shm: &shm, ..cfg() }),
            Err(region("shared memory", 0x2300_1000, 0x1000))
        );
        // A grant table in RAM, an extended region over the grant table,
        // two extended regions overlapping.
        let c = GuestDtConfig {
            xen: Some(XenNode {
                grant_table: (layout::RAM0_BASE, 0x1000),
                ..xen()
            }),
            ..cfg()
        };
        assert_eq!(
            build(&c),
            Err(region("grant table", layout::RAM0_BASE, 0x1000))
        );
        let ext = [(layout::GNTTAB_BASE, 0x1000)];
        let c = GuestDtConfig {
            xen: Some(XenNode {
                extended: &ext,
                ..xen()
            }),
            ..cfg()
        };
        assert_eq!(
            build(&c),
            Err(region("extended region", layout::GNTTAB_BASE, 0x1000))
        );
        let ext = [(0x1_0000_0000, 0x2000), (0x1_0000_1000, 0x1000)];
        let c = GuestDtConfig {
            xen: Some(XenNode {
                extended: &ext,
                ..xen()
            }),
            ..cfg()
        };
        assert_eq!(
            build(&c),
            Err(region("extended region", 0x1_0000_1000, 0x1000))
        );
        // The largest RAM leaves the extended region clear.
        let c = GuestDtConfig {
            ram_size: layout::RAM0_MAX,
            initrd: None,
            xen: Some(xen()),
            ..cfg()
        };
        assert!(build(&c).is_ok());
        // Counts, ids and the PPI.
        let ext = [(0, 0); MAX_EXTENDED + 1];
        let c = GuestDtConfig {
            xen: Some(XenNode {
                extended: &ext,
                ..xen()
            }),
            ..cfg()
        };
        assert_eq!(
            build(&c),
            Err(DtError::TooManyRegions("extended region", 9))
        );
        let shm = [(0, 0, "x"); MAX_SHM + 1];
        let c = GuestDtConfig { shm: &shm, ..cfg() };
        assert_eq!(
            build(&c),
            Err(DtError::TooManyRegions("shared-memory region", 9))
        );
        for id in ["", "0123456789abcdef", "a\0b"] {
            let shm = [(0x2300_0000, 0x1000, id)];
            let c = GuestDtConfig { shm: &shm, ..cfg() };
            assert_eq!(build(&c), Err(DtError::BadShmId(0x2300_0000)), "{id:?}");
        }
        for ppi in [0, 15, 32, 27 + 1000] {
            let c = GuestDtConfig {
                xen: Some(XenNode {
                    evtchn_ppi: ppi,
                    ..xen()
                }),
                ..cfg()
            };
            assert_eq!(build(&c), Err(DtError::BadEvtchnPpi(ppi)));
        }
    }

    #[test]
    fn extended_regions_avoid_shared_memory() {
        let end = layout::EXT_REGION_BASE + layout::EXT_REGION_SIZE;
        assert_eq!(extended_regions(&[]), EXT);
        // Shared memory below 4 GiB does not touch it.
        assert_eq!(extended_regions(&[(0x2300_0000, 0x1000, "a")]), EXT);
        // One region at 4 GiB + 1 MiB: the first 64 MiB of space is too
        // small a piece below it (1 MiB), the rest starts 2 MiB aligned.
        let shm = [(0x1_0010_0000, 0x1000, "a")];
        assert_eq!(
            extended_regions(&shm),
            [(0x1_0020_0000, end - 0x1_0020_0000)]
        );
        // Two regions, given out of order, leave three pieces.
        let shm = [
            (0x2_0000_0000, 0x20_0000, "b"),
            (0x1_8000_0000, 0x1000, "a"),
        ];
        assert_eq!(
            extended_regions(&shm),
            [
                (0x1_0000_0000, 0x8000_0000),
                (0x1_8020_0000, 0x2_0000_0000 - 0x1_8020_0000),
                (0x2_0020_0000, end - 0x2_0020_0000)
            ]
        );
        // A region at the very top.
        let shm = [(end - 0x1000, 0x1000, "a")];
        assert_eq!(
            extended_regions(&shm),
            [(0x1_0000_0000, end - 0x1_0000_0000 - (2 << 20))]
        );
        // What it gives is always accepted with that shared memory.
        for shm in [
            &[][..],
            &[(0x1_0010_0000, 0x1000, "a")][..],
            &[
                (0x2_0000_0000, 0x20_0000, "b"),
                (0x1_8000_0000, 0x1000, "a"),
            ][..],
        ] {
            let ext = extended_regions(shm);
            let c = GuestDtConfig {
                xen: Some(XenNode {
                    extended: &ext,
                    ..xen()
                }),
                shm,
                ..cfg()
            };
            assert!(build(&c).is_ok(), "{shm:x?}");
        }
        // At most MAX_EXTENDED pieces.
        let shm: Vec<(u64, u64, &str)> = (1..=12u64)
            .map(|i| (0x1_0000_0000 + (i << 30), 0x1000, "x"))
            .collect();
        assert_eq!(extended_regions(&shm).len(), MAX_EXTENDED);
    }

    #[test]
    fn build_is_deterministic() {
        assert_eq!(build(&cfg()).unwrap(), build(&cfg()).unwrap());
    }
}
