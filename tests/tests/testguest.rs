//! The test guest (`tests/guests/testguest`) checks from inside a domain
//! what hv-arm promises it: PSCI, the virtual GIC and timer on two vCPUs,
//! and the exceptions injected for accesses the hypervisor refuses. It
//! prints one line per check and `testguest: PASS` or `testguest: FAIL n`,
//! then powers the machine off through PSCI SYSTEM_OFF.
//!
//! The same guest, built for QEMU's own device addresses, also runs with no
//! hypervisor at all: that run checks the guest itself, so a failure under
//! hv-arm points at the hypervisor.

use std::path::PathBuf;
use std::time::Duration;

use qemu_virt::image::build_hv_arm;
use qemu_virt::linux;
use qemu_virt::qemu::{BootModule, GUEST_KERNEL_ADDR, ModuleKind, RunConfig, RunOutcome, run};
use qemu_virt::testguest::{BOOTARGS, build, build_testguest};

/// The guest's check lines that failed.
fn failures(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter(|l| l.starts_with("testguest: ") && l.contains(" FAIL"))
        .collect()
}

/// What the guest printed: under hv-arm its console lines carry the
/// domain's `(d1) ` prefix, which is taken off.
fn guest_console(out: &RunOutcome, domain: Option<&str>) -> String {
    match domain {
        Some(name) => linux::domain_console(&out.console, name).replace('\r', ""),
        None => out.console.clone(),
    }
}

fn check_passed(out: &RunOutcome, console: &str) {
    let t = out.transcript();
    assert!(!out.timed_out, "timed out\n{t}");
    assert!(
        failures(console).is_empty(),
        "failed checks: {:#?}\n{t}",
        failures(console)
    );
    assert!(
        console.lines().any(|l| l == "testguest: PASS"),
        "no PASS line\n{t}"
    );
    // The machine went off through the guest's SYSTEM_OFF.
    assert_eq!(out.status, 0, "QEMU status\n{t}");
}

/// hv-arm with the test guest as its domain's kernel, on two CPUs.
#[test]
fn testguest_passes_under_hv_arm() {
    let guest = build_testguest().expect("testguest builds");
    let hv = build_hv_arm("qemu-virt", false).expect("hv-arm builds");
    let mut cfg = RunConfig::new(hv.image, hv.elf);
    cfg.cpus = 2;
    cfg.memory_mb = 1024;
    cfg.echo = false;
    cfg.timeout = Duration::from_secs(120);
    cfg.modules = vec![BootModule {
        addr: GUEST_KERNEL_ADDR,
        path: guest,
        kind: ModuleKind::Kernel {
            bootargs: BOOTARGS.into(),
        },
    }];
    let out = run(&cfg).expect("QEMU runs");
    let console = guest_console(&out, Some("d1"));
    check_passed(&out, &console);
    // Both vCPUs reported, and the hostile part really ran.
    for name in [
        "secondary_entry",
        "timer_vcpu1",
        "abort_unmapped_ipa",
        "hvc_unknown_immediate",
        "abort_ldp_mmio",
        "sgi_to_vcpu1",
        "vcpu1_still_ticking",
        "cpu_off",
    ] {
        let line = format!("testguest: {name} ok");
        assert!(
            console.lines().any(|l| l == line),
            "missing '{line}'\n{}",
            out.transcript()
        );
    }
}

/// The guest alone on QEMU (EL1, no EL2): every check that needs no
/// hypervisor passes, so the guest's own code is sound.
#[test]
fn testguest_passes_on_bare_qemu() {
    let guest = build(true).expect("testguest (bare-qemu) builds");
    // No hypervisor: no ELF with a log table to decode.
    let mut cfg = RunConfig::new(guest.image, PathBuf::new());
    cfg.cpus = 2;
    cfg.memory_mb = 1024;
    cfg.echo = false;
    cfg.semihosting = false;
    cfg.virtualization = false;
    cfg.append = Some(BOOTARGS.into());
    cfg.timeout = Duration::from_secs(60);
    let out = run(&cfg).expect("QEMU runs");
    let console = guest_console(&out, None);
    check_passed(&out, &console);
    let t = out.transcript();
    // Only what needs a hypervisor is skipped.
    let skipped: Vec<&str> = out
        .console
        .lines()
        .filter(|l| l.ends_with(" skipped (no hypervisor)"))
        .collect();
    assert_eq!(
        skipped,
        ["testguest: hvc_unknown_immediate skipped (no hypervisor)"],
        "{t}"
    );
    // QEMU answers the unassigned address with an external abort, as the
    // hypervisor must for an unmapped IPA.
    for name in [
        "abort_unmapped_ipa",
        "abort_ldp_mmio",
        "cpu_on_again",
        "sgi_to_vcpu1",
        "cpu_off",
    ] {
        let line = format!("testguest: {name} ok");
        assert!(
            out.console.lines().any(|l| l == line),
            "missing '{line}'\n{t}"
        );
    }
}
