//! The platform parser over real device trees (Debian's arm64 kernel
//! package, fetched and cached at test time, and QEMU virt's own dump), and
//! over truncated and bit-flipped copies of them.

use common::memory::PhysRange;
use common::platform::{Conduit, EnableMethod, Gic, Platform, UartKind};
use qemu_virt::fixtures::{board_dtb, debian_arm64_vmlinuz, dtc, dts_of, qemu_virt_dtb};

fn read(path: std::path::PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(dtb: &[u8]) -> Platform<'_> {
    Platform::from_fdt(dtb).unwrap_or_else(|e| panic!("real DTB refused: {e}"))
}

fn range(start: u64, size: u64) -> PhysRange {
    PhysRange::from_base_size(start, size)
}

/// The Raspberry Pi 4 tree as Debian ships it has `memory@0 { reg = <0 0 0>; }`:
/// the Pi firmware writes the real size at boot. Do what it does (1 GiB
/// model) with dtc before parsing.
fn rpi4_as_firmware_leaves_it() -> Vec<u8> {
    let dts = dts_of(&board_dtb("rpi4").unwrap()).unwrap();
    let empty = "memory@0 {\n\t\tdevice_type = \"memory\";\n\t\treg = <0x00 0x00 0x00>;";
    assert!(
        dts.contains(empty),
        "Debian's rpi4 memory node changed shape"
    );
    let patched = dts.replacen(empty, &empty.replace("0x00>;", "0x3b400000>;"), 1);
    let out = qemu_virt::host::cache_dir().join("rpi4-with-memory.dtb");
    dtc(&patched, &out).unwrap();
    read(out)
}

/// The package the board trees come from also holds the kernel another
/// test boots: an arm64 Image ("ARM\x64" at 0x38).
#[test]
fn the_same_package_gives_an_arm64_kernel_image() {
    let image = read(debian_arm64_vmlinuz().unwrap());
    assert_eq!(image.get(0x38..0x3c), Some(&b"ARM\x64"[..]));
    for board in ["rpi4", "zcu102", "imx8mp-evk"] {
        assert!(board_dtb(board).unwrap().is_file());
    }
    assert!(board_dtb("no-such-board").is_err());
}

#[test]
fn raspberry_pi_4() {
    let raw = read(board_dtb("rpi4").unwrap());
    // As shipped, the memory node is empty: a clear error, not a fault.
    assert_eq!(
        Platform::from_fdt(&raw).unwrap_err().to_string(),
        "device tree has no memory node"
    );

    let dtb = rpi4_as_firmware_leaves_it();
    let p = parse(&dtb);
    assert!(p.model.starts_with("Raspberry Pi 4 Model B"), "{}", p.model);
    assert_eq!(
        p.memory.iter().copied().collect::<Vec<_>>(),
        [range(0, 0x3b40_0000)]
    );
    // /memreserve/ 0 0x1000 (the spin tables); /reserved-memory holds only
    // a dynamic CMA pool (size, no reg) and a disabled nvram node.
    assert_eq!(
        p.reserved.iter().copied().collect::<Vec<_>>(),
        [range(0, 0x1000)]
    );
    // Debian's tree starts every CPU with a spin table at 0xd8 + 8n.
    let cpus: Vec<_> = p.cpus.iter().map(|c| (c.mpidr, c.enable_method)).collect();
    assert_eq!(
        cpus,
        [0xd8, 0xe0, 0xe8, 0xf0]
            .iter()
            .enumerate()
            .map(|(i, &a)| (i as u64, EnableMethod::SpinTable(a)))
            .collect::<Vec<_>>()
    );
    // The GIC-400 sits under /soc, whose `ranges` move 0x4000_0000 to 0xff80_0000.
    match &p.gic {
        Gic::V2 {
            gicd,
            gicc,
            maintenance,
        } => {
            assert_eq!(gicd.start, 0xff84_1000);
            assert_eq!(gicc.start, 0xff84_2000);
            assert_eq!(maintenance.map(|m| m.intid), Some(25));
        }
        g => panic!("expected GICv2, got {g:?}"),
    }
    // Timer PPIs 13, 14, 11, 10 with flags 0xf08 (level, all four CPUs).
    let t = p.timer;
    assert!(t.described && t.sec_phys.level && t.hyp_phys.level);
    assert_eq!(
        [t.sec_phys, t.phys, t.virt, t.hyp_phys].map(|i| i.intid),
        [29, 30, 27, 26]
    );
    assert_eq!(t.clock_frequency, None);
    // stdout-path = "serial1:115200n8" → alias serial1 → the mini UART
    // (brcm,bcm2835-aux-uart) at 0x7e21_5040 on the VideoCore bus.
    let uart = p.uart.expect("console");
    assert_eq!(uart.kind, UartKind::Ns16550);
    assert_eq!(uart.regs, range(0xfe21_5040, 0x40));
    // interrupts = <GIC_SPI 0x5d IRQ_TYPE_LEVEL_HIGH>, the root's
    // interrupt-parent being the GIC-400.
    assert_eq!(uart.irq.map(|i| (i.intid, i.level)), Some((125, true)));
    assert_eq!(p.smmu, None);
    assert_eq!(
        p.psci, None,
        "Debian's rpi4 tree uses spin tables, no /psci"
    );
}

#[test]
fn zcu102() {
    let dtb = read(board_dtb("zcu102").unwrap());
    let p = parse(&dtb);
    assert_eq!(p.model, "ZynqMP ZCU102 Rev1.0");
    assert_eq!(
        p.memory.iter().copied().collect::<Vec<_>>(),
        [range(0, 0x8000_0000), range(0x8_0000_0000, 0x8000_0000)]
    );
    assert_eq!(p.cpus.len(), 4);
    assert!(p.cpus.iter().all(|c| c.enable_method == EnableMethod::Psci));
    assert!(matches!(p.gic, Gic::V2 { gicd, .. } if gicd.start == 0xf901_0000));
    let uart = p.uart.expect("console");
    assert_eq!(
        (uart.kind, uart.regs.start),
        (UartKind::Cadence, 0xff00_0000)
    );
    assert_eq!(uart.irq.map(|i| i.intid), Some(53));
    // compatible = "arm,psci-0.2", method = "smc".
    assert_eq!(
        p.psci.map(|x| (x.conduit, x.v0_2_or_later)),
        Some((Conduit::Smc, true))
    );
    assert_eq!(p.smmu, None, "the ZCU102's SMMU-500 is not an SMMUv3");
    // Its GIC-400 has no root interrupt-parent to inherit: every device
    // names it (interrupt-parent = <&gic>), the timer too.
    assert!(p.timer.described);
    assert_eq!(p.timer.hyp_phys.intid, 26);
}

#[test]
fn imx8mp_evk() {
    let dtb = read(board_dtb("imx8mp-evk").unwrap());
    let p = parse(&dtb);
    assert_eq!(p.model, "NXP i.MX8MPlus EVK board");
    assert_eq!(
        p.memory.iter().copied().collect::<Vec<_>>(),
        [range(0x4000_0000, 0x1_8000_0000)]
    );
    assert_eq!(p.cpus.len(), 4);
    match &p.gic {
        Gic::V3 {
            gicd,
            gicr,
            maintenance,
            ..
        } => {
            assert_eq!(gicd.start, 0x3880_0000);
            assert_eq!(gicr.as_slice(), [range(0x3888_0000, 0xc_0000)]);
            assert_eq!(maintenance.map(|m| m.intid), Some(25));
        }
        g => panic!("expected GICv3, got {g:?}"),
    }
    assert!(p.cpus.iter().all(|c| c.enable_method == EnableMethod::Psci));
    assert_eq!(p.timer.clock_frequency, Some(8_000_000));
    assert_eq!(
        p.reserved.iter().copied().collect::<Vec<_>>(),
        [range(0x9240_0000, 0x200_0000)]
    );
    // stdout-path names UART2 by path: an i.MX UART, which we report but
    // cannot drive. interrupts = <GIC_SPI 27 IRQ_TYPE_LEVEL_HIGH>.
    let uart = p.uart.expect("console");
    assert_eq!(
        (uart.kind, uart.regs, uart.irq.map(|i| i.intid)),
        (UartKind::Other, range(0x3089_0000, 0x1_0000), Some(59))
    );
    assert_eq!(
        p.psci.map(|x| (x.conduit, x.v0_2_or_later)),
        Some((Conduit::Smc, true))
    );
}

fn check_qemu_virt(cpus: u32, mem_mb: u32, opts: &str) {
    let dtb = read(qemu_virt_dtb(cpus, mem_mb, opts).unwrap());
    let p = parse(&dtb);
    assert_eq!(p.model, "linux,dummy-virt");
    assert_eq!(
        p.memory.iter().copied().collect::<Vec<_>>(),
        [range(0x4000_0000, u64::from(mem_mb) << 20)]
    );
    assert_eq!(p.cpus.len(), cpus as usize);
    assert!(p.cpus.iter().enumerate().all(|(i, c)| c.mpidr == i as u64));
    // QEMU names an enable-method only when there is a CPU to enable.
    if cpus > 1 {
        assert!(p.cpus.iter().all(|c| c.enable_method == EnableMethod::Psci));
    }
    match &p.gic {
        Gic::V3 {
            gicd,
            gicr,
            maintenance,
            ..
        } => {
            assert_eq!(*gicd, range(0x0800_0000, 0x1_0000));
            assert_eq!(gicr.as_slice(), [range(0x080a_0000, 0xf6_0000)]);
            assert_eq!(maintenance.map(|m| (m.intid, m.level)), Some((25, true)));
        }
        g => panic!("expected GICv3, got {g:?}"),
    }
    let t = p.timer;
    assert!(t.described);
    assert_eq!(
        [t.sec_phys, t.phys, t.virt, t.hyp_phys].map(|i| i.intid),
        [29, 30, 27, 26]
    );
    // stdout-path = "/pl011@9000000", SPI 1.
    let uart = p.uart.expect("console");
    assert_eq!(
        (uart.kind, uart.regs),
        (UartKind::Pl011, range(0x0900_0000, 0x1000))
    );
    assert_eq!(uart.irq.map(|i| (i.intid, i.level)), Some((33, true)));
    assert_eq!(
        p.psci.map(|x| (x.conduit, x.v0_2_or_later)),
        Some((Conduit::Smc, true))
    );
    assert!(p.reserved.is_empty());
    assert_eq!(
        p.smmu.map(|s| s.regs),
        opts.contains("smmuv3")
            .then(|| range(0x0905_0000, 0x2_0000))
    );
}

#[test]
fn qemu_virt_1_cpu() {
    check_qemu_virt(1, 512, "");
}

#[test]
fn qemu_virt_4_cpus() {
    check_qemu_virt(4, 1024, "");
}

#[test]
fn qemu_virt_with_smmuv3() {
    check_qemu_virt(2, 1024, "iommu=smmuv3");
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Parses one corrupted copy: any result is fine, a panic is not, and an
/// accepted tree still makes sense.
fn survives(dtb: &[u8]) -> bool {
    match Platform::from_fdt(dtb) {
        Ok(p) => {
            assert!(!p.memory.is_empty() && !p.cpus.is_empty());
            assert!(p.memory.iter().all(|r| !r.is_empty()));
            assert!(p.model.len() < dtb.len());
            true
        }
        Err(e) => {
            // Every refusal prints as one line.
            assert!(!e.to_string().contains('\n'));
            false
        }
    }
}

/// The blob's layout and the places worth corrupting, found by walking the
/// structure block: each property's length and name-offset words, node
/// tokens, and the values of the properties the parser reads.
struct Layout {
    off_struct: usize,
    off_strings: usize,
    /// End of the last block (QEMU pads the blob to 1 MiB after it).
    data_end: usize,
    /// Offsets of the PROP length and nameoff words, BEGIN/END tokens.
    words: Vec<usize>,
    /// Byte offsets inside the values of the properties the parser reads.
    values: Vec<usize>,
}

fn layout(dtb: &[u8]) -> Layout {
    let be32 = |o: usize| u32::from_be_bytes(dtb[o..o + 4].try_into().unwrap()) as usize;
    let (off_struct, off_strings, size_strings, size_struct) =
        (be32(8), be32(12), be32(32), be32(36));
    let read = [
        "#address-cells",
        "#size-cells",
        "#interrupt-cells",
        "#redistributor-regions",
        "redistributor-stride",
        "reg",
        "ranges",
        "interrupts",
        "interrupt-parent",
        "phandle",
        "compatible",
        "device_type",
        "status",
        "stdout-path",
        "enable-method",
        "cpu-release-addr",
        "method",
        "model",
        "serial0",
        "serial1",
    ];
    let (mut words, mut values) = (Vec::new(), Vec::new());
    let mut off = off_struct;
    while off + 4 <= off_struct + size_struct {
        match be32(off) {
            1 => {
                words.push(off);
                let name_len = dtb[off + 4..].iter().position(|&b| b == 0).unwrap();
                off = (off + 4 + name_len + 1 + 3) & !3;
            }
            2 => {
                words.push(off);
                off += 4;
            }
            3 => {
                let (len, nameoff) = (be32(off + 4), be32(off + 8));
                words.extend([off + 4, off + 8]);
                let name = &dtb[off_strings + nameoff..];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap()];
                if read.iter().any(|r| r.as_bytes() == name) {
                    values.extend(off + 12..off + 12 + len);
                }
                off = (off + 12 + len + 3) & !3;
            }
            4 => off += 4,
            _ => break,
        }
    }
    assert!(
        words.len() > 100 && values.len() > 100,
        "walk of the blob failed"
    );
    Layout {
        off_struct,
        off_strings,
        data_end: (off_struct + size_struct).max(off_strings + size_strings),
        words,
        values,
    }
}

fn corrupt_all_ways(name: &str, dtb: &[u8]) -> (usize, usize) {
    let l = layout(dtb);
    let mut parsed = 0;
    let mut accepted = 0;
    // Truncations: every length through the header and reservation map,
    // the block boundaries +-16, a stride through the data and a few cuts
    // in any padding after it. With the header's totalsize they must be
    // refused; with totalsize rewritten to match, the walk itself meets the
    // cut.
    let mut lengths: Vec<usize> = (0..256.min(dtb.len())).collect();
    for b in [l.off_struct, l.off_strings, l.data_end] {
        lengths.extend(b.saturating_sub(16)..(b + 16).min(dtb.len()));
    }
    lengths.extend((0..l.data_end).step_by((l.data_end / 400).max(1)));
    lengths.extend((l.data_end..dtb.len()).step_by(((dtb.len() - l.data_end) / 8).max(1)));
    for len in lengths {
        let t = &dtb[..len];
        assert!(
            Platform::from_fdt(t).is_err(),
            "{name}: truncated to {len} bytes accepted"
        );
        if len >= 40 {
            let mut t = t.to_vec();
            t[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            accepted += usize::from(survives(&t));
            parsed += 1;
        }
    }
    // Deterministic corruptions, 1 to 4 at a time: bit flips and
    // interesting byte values in the header, in property lengths, name
    // offsets and node tokens, in the values the parser reads, and
    // anywhere in the data.
    let mut rng = Rng(0x5eed ^ dtb.len() as u64);
    let mut copy = dtb.to_vec();
    let mut changed = Vec::new();
    for round in 0..3000 {
        for _ in 0..1 + usize::from(round % 4 == 3) * 3 {
            let at = match rng.below(4) {
                0 => rng.below(40),
                1 => l.words[rng.below(l.words.len())] + rng.below(4),
                2 => l.values[rng.below(l.values.len())],
                _ => rng.below(l.data_end),
            };
            changed.push(at);
            copy[at] = if rng.below(3) == 0 {
                [0, 1, 2, 3, 4, 0x7f, 0x80, 0xff][rng.below(8)]
            } else {
                copy[at] ^ (1 << rng.below(8))
            };
        }
        accepted += usize::from(survives(&copy));
        parsed += 1;
        for at in changed.drain(..) {
            copy[at] = dtb[at];
        }
    }
    (parsed, accepted)
}

fn corrupted_tree_never_panics(name: &str, dtb: &[u8]) {
    let started = std::time::Instant::now();
    let (parsed, accepted) = corrupt_all_ways(name, dtb);
    eprintln!(
        "{name}: {parsed} corrupted copies parsed ({accepted} still accepted) in {:.1?}",
        started.elapsed()
    );
}

#[test]
fn corrupted_rpi4_never_panics() {
    corrupted_tree_never_panics("rpi4", &rpi4_as_firmware_leaves_it());
}

#[test]
fn corrupted_zcu102_never_panics() {
    corrupted_tree_never_panics("zcu102", &read(board_dtb("zcu102").unwrap()));
}

#[test]
fn corrupted_imx8mp_evk_never_panics() {
    corrupted_tree_never_panics("imx8mp-evk", &read(board_dtb("imx8mp-evk").unwrap()));
}

#[test]
fn corrupted_qemu_virt_never_panics() {
    let dtb = read(qemu_virt_dtb(2, 1024, "iommu=smmuv3").unwrap());
    corrupted_tree_never_panics("qemu-virt", &dtb);
}

#[test]
fn cell_counts_out_of_range_are_refused_with_the_node_named() {
    let dts = dts_of(&qemu_virt_dtb(1, 512, "").unwrap()).unwrap();
    // #address-cells = <3> on /cpus: the cpu node's reg cannot be an MPIDR.
    let bad = dts.replacen(
        "cpus {\n\t\t#size-cells = <0x00>;\n\t\t#address-cells = <0x01>;",
        "cpus {\n\t\t#size-cells = <0x00>;\n\t\t#address-cells = <0x03>;",
        1,
    );
    assert_ne!(bad, dts, "QEMU's /cpus node changed shape");
    let out = qemu_virt::host::cache_dir().join("virt-bad-cells.dtb");
    dtc(&bad, &out).unwrap();
    let dtb = read(out);
    let err = Platform::from_fdt(&dtb).unwrap_err().to_string();
    assert!(
        err.contains("cpu@0") && err.contains("#address-cells"),
        "{err}"
    );
}
