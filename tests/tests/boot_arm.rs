//! hv-arm booted under QEMU virt (`-M virt,virtualization=on,gic-version=3
//! -cpu max`): the real image, the real emulator, QEMU's own device tree.

use std::time::Duration;

use qemu_virt::image::build_hv_arm;
use qemu_virt::qemu::{RunConfig, RunOutcome, run};

fn config(cpus: u32) -> RunConfig {
    let built = build_hv_arm("qemu-virt", false).expect("hv-arm builds");
    let mut cfg = RunConfig::new(built.image, built.elf);
    cfg.cpus = cpus;
    cfg.echo = false;
    cfg.timeout = Duration::from_secs(120);
    cfg
}

fn boot(cfg: &RunConfig) -> RunOutcome {
    run(cfg).expect("QEMU runs")
}

/// Everything a healthy boot with `cpus` CPUs prints.
fn check_healthy(out: &RunOutcome, cpus: u32) {
    let t = out.transcript();
    assert!(!out.timed_out, "timed out\n{t}");
    assert_eq!(out.status, 0, "QEMU status\n{t}");
    let c = &out.console;
    assert!(
        c.contains("hv-arm 0.1.0 (board qemu-virt), entered at EL2"),
        "{t}"
    );
    assert!(
        c.lines().any(|l| l.starts_with(&format!("cpus: {cpus} "))),
        "{t}"
    );
    assert!(
        c.contains("memory: 0x40000000-0x80000000 (1024 MiB)"),
        "{t}"
    );
    assert!(
        c.contains("gic: v3, distributor 0x8000000, redistributors 0x80a0000"),
        "{t}"
    );
    assert!(c.contains("uart: pl011 at 0x9000000"), "{t}");
    assert!(c.contains("gic: EOImode 1"), "{t}");
    assert!(c.contains(&format!("all {cpus} cpus up in ")), "{t}");
    for i in 0..cpus {
        assert!(
            c.lines().any(|l| l == format!("cpu {i}: 10 timer ticks")),
            "cpu {i} did not tick\n{t}"
        );
        if i > 0 {
            assert!(c.contains(&format!("cpu {i}: up (mpidr {i:#x})")), "{t}");
        }
    }
    // No kernel module under /chosen: the hypervisor says so and powers off.
    assert!(
        c.contains("no guest: no multiboot,kernel module under /chosen"),
        "{t}"
    );
    assert!(c.contains("all cpus ticking; powering off"), "{t}");
    // The log is defmt, decoded with the ELF.
    assert!(out.log.iter().any(|l| l.contains("entered at EL2")), "{t}");
    assert!(
        out.log
            .iter()
            .any(|l| l.contains("unclaimed interrupts: 0")),
        "{t}"
    );
    assert!(
        !out.log
            .iter()
            .any(|l| l.contains("malformed") || l.contains("truncated")),
        "{t}"
    );
}

#[test]
fn boots_on_one_cpu() {
    check_healthy(&boot(&config(1)), 1);
}

#[test]
fn boots_on_four_cpus() {
    check_healthy(&boot(&config(4)), 4);
}

/// Under `-icount shift=0` time advances only with instructions; a
/// cross-CPU rendezvous that waits on wall time hangs there (Xen 4.17 does).
#[test]
fn boots_on_four_cpus_under_icount() {
    let mut cfg = config(4);
    cfg.icount = true;
    let out = boot(&cfg);
    check_healthy(&out, 4);
}

/// A `text-log` build prints its log as `(hv)` lines on the console and
/// nothing over semihosting; the runner hands those lines back as the log.
#[test]
fn boots_with_the_text_log() {
    let built = build_hv_arm("qemu-virt", true).expect("hv-arm builds with text-log");
    let mut cfg = RunConfig::new(built.image, built.elf);
    cfg.cpus = 2;
    cfg.echo = false;
    cfg.timeout = Duration::from_secs(120);
    let out = boot(&cfg);
    check_healthy(&out, 2);
    let t = out.transcript();
    assert!(out.console.lines().any(|l| l.starts_with("(hv) ")), "{t}");
    assert!(out.log.iter().all(|l| l.starts_with("[hv] ")), "{t}");
}

#[test]
fn unexpected_exception_reports_esr_far_elr_and_cpu() {
    let mut cfg = config(2);
    cfg.extra_args = vec!["-append".into(), "hv.selftest=fault".into()];
    let out = boot(&cfg);
    let t = out.transcript();
    assert_eq!(out.status, 1, "{t}");
    assert!(
        out.console
            .contains("selftest: reading an unmapped address"),
        "{t}"
    );
    let line = out
        .console
        .lines()
        .find(|l| l.contains("unexpected synchronous exception at EL2"))
        .expect(&t);
    assert!(
        line.contains("on cpu 0") && line.contains("(EC 0x25)") && line.contains("ELR_EL2=0x402"),
        "{line}"
    );
    assert!(line.contains("FAR_EL2=0x8000000000"), "{line}");
    assert!(
        !out.console.contains("read 0x"),
        "the read must not complete\n{t}"
    );
}

#[test]
fn boots_without_semihosting() {
    // A plain QEMU with no semihosting: the log is lost, the console is not.
    let mut cfg = config(2);
    cfg.semihosting = false;
    let out = boot(&cfg);
    let t = out.transcript();
    assert_eq!(out.status, 0, "{t}");
    assert!(
        out.console.contains("all cpus ticking; powering off"),
        "{t}"
    );
    assert!(out.log.is_empty(), "{t}");
}

#[test]
fn reports_an_smmuv3() {
    let mut cfg = config(1);
    cfg.machine_opts = vec!["iommu=smmuv3".into()];
    let out = boot(&cfg);
    let t = out.transcript();
    assert_eq!(out.status, 0, "{t}");
    let line = out
        .console
        .lines()
        .find(|l| l.starts_with("smmu: smmuv3"))
        .expect(&t);
    // QEMU 7.2 (Debian 12) emulates stage 1 only; stage 2 arrived in QEMU 8.
    assert!(
        line.contains("at 0x9050000") && line.contains("16-bit stream ids"),
        "{line}"
    );
    assert!(
        line.ends_with("usable for stage-2 device assignment")
            || line.ends_with("no stage-2: not usable for device assignment"),
        "{line}"
    );
}

/// Boots with QEMU's own tree edited by `edit`; returns the outcome.
fn boot_with_edited_tree(name: &str, edit: impl Fn(&str) -> String) -> RunOutcome {
    use qemu_virt::fixtures::{dtc, dts_of, qemu_virt_dtb};
    let dts = dts_of(&qemu_virt_dtb(2, 1024, "").unwrap()).unwrap();
    let edited = edit(&dts);
    assert_ne!(
        edited, dts,
        "{name}: the edit did not apply (QEMU's tree changed shape)"
    );
    let out = qemu_virt::host::cache_dir().join(format!("boot-{name}.dtb"));
    dtc(&edited, &out).unwrap();
    let mut cfg = config(2);
    cfg.extra_args = vec!["-dtb".into(), out.to_string_lossy().into_owned()];
    boot(&cfg)
}

fn check_refused(out: &RunOutcome, why: &str) {
    let t = out.transcript();
    assert_eq!(out.status, 2, "{t}");
    let line = out
        .console
        .lines()
        .find(|l| l.starts_with("hv-arm: fatal: device tree rejected"))
        .expect(&t);
    assert!(line.contains(why), "{line}");
    assert!(
        !out.console.contains("heap:"),
        "nothing past the parse may run\n{t}"
    );
}

#[test]
fn a_timer_with_truncated_interrupts_is_refused() {
    let out = boot_with_edited_tree("short-timer-irqs", |dts| {
        let start = dts.find("\n\ttimer {").unwrap_or(0);
        let at = start + dts[start..].find("interrupts = <").unwrap_or(0);
        let end = at + dts[at..].find(">;").unwrap_or(0);
        // Keep only the first two cells of twelve.
        let cells: Vec<&str> = dts[at + "interrupts = <".len()..end]
            .split_whitespace()
            .take(2)
            .collect();
        format!(
            "{}interrupts = <{}>;{}",
            &dts[..at],
            cells.join(" "),
            &dts[end + 2..]
        )
    });
    check_refused(&out, "'timer': bad 'interrupts'");
}

#[test]
fn cpus_with_three_address_cells_are_refused() {
    let out = boot_with_edited_tree("cpus-3-cells", |dts| {
        dts.replacen(
            "\t\t#address-cells = <0x01>;\n\n\t\tcpu-map",
            "\t\t#address-cells = <0x03>;\n\n\t\tcpu-map",
            1,
        )
    });
    check_refused(&out, "#address-cells");
}

/// The Raspberry Pi 4 and the ZCU102 have a GIC-400; QEMU virt with
/// gic-version=2 shows what hv-arm does there: it describes the board and
/// stops with a clear line.
#[test]
fn a_gicv2_board_is_described_then_refused() {
    let mut cfg = config(2);
    cfg.machine_opts = vec!["gic-version=2".into()];
    let out = boot(&cfg);
    let t = out.transcript();
    assert_eq!(out.status, 2, "{t}");
    assert!(
        out.console
            .contains("gic: v2, distributor 0x8000000, cpu interface 0x8010000"),
        "{t}"
    );
    assert!(
        out.console
            .contains("hv-arm: fatal: this board's GIC is GICv2"),
        "{t}"
    );
}
