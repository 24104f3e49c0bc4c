//! The platform parser over real device trees (Debian's arm64 kernel
//! package, fetched and cached at test time, and QEMU virt's own dump), and
//! over truncated and bit-flipped copies of them.

use common::memory::PhysRange;
use common::platform::{Conduit, EnableMethod, Gic, Platform, UartKind};
use qemu_virt::fixtures::{board_dtb, dtc, dts_of, qemu_virt_dtb};

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
    assert_eq!(p.cpus.len(), 4);
    // Debian's tree starts the secondaries with a spin table at 0xd8 + 8n.
    assert_eq!(p.cpus[1].mpidr, 1);
    assert_eq!(p.cpus[1].enable_method, EnableMethod::SpinTable(0xe0));
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
    assert_eq!(p.timer.hyp_phys.intid, 26);
    assert_eq!(p.timer.virt.intid, 27);
    // stdout-path = "serial1:115200n8" → alias serial1 → the mini UART
    // (brcm,bcm2835-aux-uart) at 0x7e21_5040 on the VideoCore bus.
    let uart = p.uart.expect("console");
    assert_eq!(uart.kind, UartKind::Ns16550);
    assert_eq!(uart.regs.start, 0xfe21_5040);
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
    assert_eq!(p.psci.map(|x| x.conduit), Some(Conduit::Smc));
    assert_eq!(p.smmu, None, "the ZCU102's SMMU-500 is not an SMMUv3");
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
            assert_eq!(gicr.first().map(|r| r.start), Some(0x3888_0000));
            assert_eq!(maintenance.map(|m| m.intid), Some(25));
        }
        g => panic!("expected GICv3, got {g:?}"),
    }
    assert_eq!(p.timer.clock_frequency, Some(8_000_000));
    assert!(p.reserved.iter().any(|r| r.start == 0x9240_0000));
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
            assert_eq!(gicd.start, 0x0800_0000);
            assert_eq!(gicr.first().map(|r| r.start), Some(0x080a_0000));
            assert_eq!(maintenance.map(|m| m.intid), Some(25));
        }
        g => panic!("expected GICv3, got {g:?}"),
    }
    assert_eq!(
        (
            p.timer.hyp_phys.intid,
            p.timer.virt.intid,
            p.timer.phys.intid
        ),
        (26, 27, 30)
    );
    let uart = p.uart.expect("console");
    assert_eq!((uart.kind, uart.regs.start), (UartKind::Pl011, 0x0900_0000));
    assert_eq!(uart.irq.map(|i| i.intid), Some(33));
    assert_eq!(p.psci.map(|x| x.conduit), Some(Conduit::Smc));
    let smmu = p.smmu.map(|s| s.regs.start);
    assert_eq!(
        smmu,
        if opts.contains("smmuv3") {
            Some(0x0905_0000)
        } else {
            None
        }
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
}

/// Parses one corrupted copy: any result is fine, a panic is not, and an
/// accepted tree still makes sense.
fn survives(dtb: &[u8]) {
    if let Ok(p) = Platform::from_fdt(dtb) {
        assert!(!p.memory.is_empty() && !p.cpus.is_empty());
        let _ = p.to_owned();
    }
}

fn corrupt_all_ways(name: &str, dtb: &[u8]) {
    let be32 = |o: usize| u32::from_be_bytes(dtb[o..o + 4].try_into().unwrap()) as usize;
    let (off_struct, off_strings) = (be32(8), be32(12));
    // Truncations: every length through the header and reservation map, the
    // block boundaries +-16, and a stride through the rest. The header keeps
    // the original totalsize, so each must be refused cleanly.
    let mut lengths: Vec<usize> = (0..256.min(dtb.len())).collect();
    for b in [off_struct, off_strings, dtb.len()] {
        lengths.extend(b.saturating_sub(16)..(b + 16).min(dtb.len()));
    }
    lengths.extend((0..dtb.len()).step_by(97));
    for len in lengths {
        let t = &dtb[..len];
        assert!(
            Platform::from_fdt(t).is_err(),
            "{name}: truncated to {len} bytes accepted"
        );
        // And with totalsize rewritten to match, so the walk itself meets the cut.
        if len >= 40 {
            let mut t = t.to_vec();
            t[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            survives(&t);
        }
    }
    // Bit flips: anywhere, and concentrated on the header and the first part
    // of the structure block (tokens, property lengths, cell counts).
    let mut rng = Rng(0x5eed ^ dtb.len() as u64);
    let mut copy = dtb.to_vec();
    for round in 0..3000 {
        let at = match round % 3 {
            0 => (rng.next() % 40) as usize,
            1 => off_struct + (rng.next() as usize % (off_strings - off_struct).max(1)),
            _ => rng.next() as usize % dtb.len(),
        };
        let bit = 1u8 << (rng.next() % 8);
        copy[at] ^= bit;
        survives(&copy);
        // Also several flips at once, every 16 rounds.
        if round % 16 == 0 {
            for _ in 0..4 {
                let i = rng.next() as usize % dtb.len();
                copy[i] ^= 1 << (rng.next() % 8);
            }
            survives(&copy);
        }
        copy.copy_from_slice(dtb);
    }
}

#[test]
fn corrupted_real_trees_never_panic() {
    let trees = [
        ("rpi4", rpi4_as_firmware_leaves_it()),
        ("zcu102", read(board_dtb("zcu102").unwrap())),
        ("imx8mp-evk", read(board_dtb("imx8mp-evk").unwrap())),
        ("qemu-virt", read(qemu_virt_dtb(4, 1024, "").unwrap())),
    ];
    for (name, dtb) in &trees {
        corrupt_all_ways(name, dtb);
    }
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
