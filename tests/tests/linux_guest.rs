//! Debian's own arm64 kernel (6.1, unmodified) with the runner's busybox
//! initramfs: as hv-arm's 2-vCPU guest (kernel and initramfs handed over
//! as guest-loader modules under /chosen), and booted by QEMU directly as
//! the baseline. The initramfs' /init prints `HVTEST: ` lines and acts on
//! the kernel parameter `hvtest=` (see `qemu_virt::linux`).
//!
//! Slow: each test boots Linux under TCG (seconds on a fast host, a minute
//! or more on CI's two slow cores). The boots take turns (each has the
//! host to itself, so its time limit, `qemu_virt::linux::TIMEOUT`, means
//! the same on any machine).

use std::sync::Mutex;

use qemu_virt::image::build_hv_arm;
use qemu_virt::linux::{self, MARKER, Mode, RUN_INIT};
use qemu_virt::qemu::{ConsoleStep, RunConfig, RunOutcome};

/// One Linux boot at a time.
static ONE_BOOT: Mutex<()> = Mutex::new(());

fn run(cfg: &RunConfig) -> RunOutcome {
    let _turn = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    qemu_virt::qemu::run(cfg).expect("QEMU runs")
}

fn files() -> linux::LinuxFiles {
    linux::files().expect("Debian's arm64 kernel and the busybox initramfs")
}

/// Boots hv-arm with the Linux guest in `mode`.
fn guest(mode: Mode) -> RunOutcome {
    let hv = build_hv_arm("qemu-virt", false).expect("hv-arm builds");
    let mut cfg = linux::guest_config(&hv, &files(), &linux::bootargs(mode, ""));
    cfg.echo = false;
    run(&cfg)
}

/// What every completed /init run prints, guest or native.
fn check_init(out: &RunOutcome) {
    let t = out.transcript();
    assert!(!out.timed_out, "timed out\n{t}");
    assert!(out.console.contains(MARKER), "{t}");
    assert_eq!(
        linux::values(&out.console, "nproc").first(),
        Some(&"2"),
        "{t}"
    );
    if let Err(e) = linux::check_interrupts(&out.console, 2) {
        panic!("{e}\n{t}");
    }
    assert!(
        !out.console.contains("HVTEST: failed"),
        "/init failed a step\n{t}"
    );
    assert!(!out.console.contains("Kernel panic"), "{t}");
}

/// hv-arm saw the guest's PSCI SYSTEM_OFF (its log, or its console).
fn check_system_off(out: &RunOutcome) {
    let t = out.transcript();
    assert_eq!(out.status, 0, "QEMU status\n{t}");
    assert!(
        out.log.iter().any(|l| l.contains("PSCI SYSTEM_OFF"))
            || out.console.contains("PSCI SYSTEM_OFF"),
        "no 'PSCI SYSTEM_OFF' from hv-arm\n{t}"
    );
}

/// The guest boots to /init on both vCPUs, its timers tick on both, they
/// exchange IPIs, and `poweroff -f` ends the run through the hypervisor.
#[test]
fn linux_guest_boots_and_powers_off() {
    let out = guest(Mode::Poweroff);
    check_init(&out);
    assert_eq!(
        linux::values(&out.console, "restart-count"),
        ["0"],
        "{}",
        out.transcript()
    );
    check_system_off(&out);
}

/// `reboot -f` (PSCI SYSTEM_RESET) restarts the guest, not the machine:
/// the second boot finds /chosen/hv,restart-count = 1 and powers off.
#[test]
fn linux_guest_reboots_once() {
    let out = guest(Mode::Reboot);
    let t = out.transcript();
    check_init(&out);
    assert!(out.console.contains("HVTEST: rebooting"), "{t}");
    assert_eq!(
        linux::values(&out.console, "restart-count"),
        ["0", "1"],
        "{t}"
    );
    let reboot_at = out.console.find("HVTEST: rebooting").unwrap_or(0);
    assert!(
        out.console[reboot_at..].contains("HVTEST: back after reboot"),
        "{t}"
    );
    check_system_off(&out);
}

/// A guest process reading unmapped guest-physical memory gets an external
/// abort from the hypervisor: it dies of SIGBUS, the kernel and the other
/// processes carry on, and the run ends normally.
#[test]
fn linux_guest_survives_a_hostile_access() {
    let out = guest(Mode::Hostile);
    let t = out.transcript();
    check_init(&out);
    let status = linux::values(&out.console, "devmem status");
    assert_eq!(status.len(), 1, "{t}");
    // ash reports 128 + SIGBUS (7 on arm64): 135.
    assert_ne!(status[0], "0", "devmem must not succeed\n{t}");
    assert!(out.console.contains("HVTEST: alive after fault"), "{t}");
    // arm64 6.1 logs "devmem[N]: unhandled exception: DABT (lower EL), ESR
    // ..., synchronous external abort ..." (/init also greps it from dmesg).
    assert!(
        out.console.contains("external abort"),
        "the kernel logged no external abort\n{t}"
    );
    assert_eq!(linux::values(&out.console, "nproc"), ["2", "2"], "{t}");
    check_system_off(&out);
}

/// The same kernel and initramfs booted by QEMU directly (no EL2, no
/// hypervisor): proves the initramfs, and is the benchmark's baseline.
#[test]
fn the_kernel_and_initramfs_boot_without_the_hypervisor() {
    let files = files();
    let mut cfg = linux::native_config(&files, &linux::bootargs(Mode::Poweroff, ""));
    cfg.echo = false;
    let out = run(&cfg);
    let t = out.transcript();
    check_init(&out);
    assert_eq!(out.status, 0, "{t}");
    assert!(out.console.contains(RUN_INIT), "{t}");
    assert_eq!(linux::values(&out.console, "restart-count"), ["0"], "{t}");
    assert!(out.console.contains("HVTEST: powering off"), "{t}");
}

/// Typing reaches the guest: QEMU's stdin feeds the board's PL011, whose
/// input hv-arm moves into the guest's vPL011. The shell (`hvtest=shell`)
/// evaluates a typed command, arithmetic and all (so its answer is no
/// echo of the typed line), and a typed `poweroff -f` ends the run.
#[test]
fn console_input_reaches_the_guest_shell() {
    let hv = build_hv_arm("qemu-virt", false).expect("hv-arm builds");
    let mut cfg = linux::guest_config(&hv, &files(), &linux::bootargs(Mode::Shell, "quiet"));
    cfg.echo = false;
    // busybox ash's prompt as root in /; Enter is a carriage return. Each
    // line waits for a prompt: typed ahead, the guest's echo of it would
    // land inside the previous answer's line.
    cfg.console_input = vec![
        ConsoleStep::new("/ # ", "echo HELLO-$((6*7))\r"),
        ConsoleStep::new("HELLO-42", ""),
        ConsoleStep::new("/ # ", "poweroff -f\r"),
    ];
    let out = run(&cfg);
    let t = out.transcript();
    assert!(!out.timed_out, "timed out\n{t}");
    assert!(out.console.contains("HVTEST: shell:"), "{t}");
    let typed = out
        .console
        .find("echo HELLO-$((6*7))")
        .unwrap_or_else(|| panic!("the typed line was not echoed\n{t}"));
    let d1 = linux::domain_console(&out.console[typed..], "d1");
    assert!(
        d1.lines().any(|l| l.trim() == "HELLO-42"),
        "the shell did not answer HELLO-42 as (d1)\n{t}"
    );
    assert_eq!(out.status, 0, "QEMU status\n{t}");
    assert!(out.console.contains("(d1) PSCI SYSTEM_OFF"), "{t}");
}

/// Guest RAM the hypervisor cannot give (`dom0_mem=` not a multiple of
/// 2 MiB, or too small) is refused with a line naming it, before anything
/// runs: exit status 2, no guest output.
#[test]
fn impossible_guest_memory_is_refused() {
    let hv = build_hv_arm("qemu-virt", false).expect("hv-arm builds");
    for mem in ["3M", "2M", "4G"] {
        let mut cfg = linux::guest_config(&hv, &files(), &linux::bootargs(Mode::Poweroff, ""));
        cfg.echo = false;
        cfg.append = Some(format!("dom0_mem={mem}"));
        let out = run(&cfg);
        let t = out.transcript();
        assert_eq!(out.status, 2, "dom0_mem={mem}\n{t}");
        assert!(out.console.contains(": cannot build: guest RAM of"), "{t}");
        assert!(!out.console.contains("HVTEST"), "{t}");
    }
}
