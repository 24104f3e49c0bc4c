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
    Ok(())
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
        let c = GuestDtConfig {
            nr_vcpus: MAX_VCPUS,
            ram_size: layout::RAM0_MAX,
            bootargs: &long,
            initrd: Some((layout::RAM0_BASE, layout::RAM0_BASE + layout::RAM0_MAX)),
            restart_count: u32::MAX,
            vpl011: true,
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
            DtError::Writer(vm_fdt::Error::UnclosedNode),
        ];
        for e in all {
            assert!(e.to_string().starts_with("guest DT: "));
        }
    }

    #[test]
    fn build_is_deterministic() {
        assert_eq!(build(&cfg()).unwrap(), build(&cfg()).unwrap());
    }
}
