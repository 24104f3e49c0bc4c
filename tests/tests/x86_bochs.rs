//! hv-x86 under Bochs, the one emulator here with VMX (EPT, VPID,
//! unrestricted guest): GRUB boots the hypervisor from a rescue ISO with
//! four copies of the real-mode test guest (tests/guests/x86guest) as boot
//! modules, each a domain with its own viridian configuration; one of them
//! triple-faults on purpose. The guests check themselves from the inside
//! (CPUID and the viridian MSRs against the mask the test expects, Xen
//! hypercalls: an event channel to itself, a grant copy, refusals, an
//! access to unmapped guest-physical memory); this test checks their
//! verdicts on COM1, that the crash took only its own domain, and that the
//! run ended by itself (the hypervisor writes Bochs' shutdown port).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qemu_virt::cargo::Build;
use qemu_virt::host::{BOCHS_BIOS, BOCHS_VGABIOS, cache_dir, ensure_bochs};

fn build(package: &'static str) -> PathBuf {
    Build {
        package,
        target: "x86_64-unknown-none",
        features: vec![],
        no_default_features: false,
        release: true,
    }
    .run()
    .unwrap_or_else(|e| panic!("{package} builds: {e}"))
}

/// The domains: (name, the viridian list given to the hypervisor, the
/// mask the guest must then see). `base` alone means no frequency MSRs
/// (mask bit 1 set by the hypervisor's list parser, Xen's "!freq").
const DOMAINS: [(&str, &str, u64); 3] = [
    ("plain", "", 0),
    ("defaults", "viridian=defaults", 0x1),
    ("nofreq", "viridian=base,time_ref_count", 0x7),
];

fn grub_cfg() -> String {
    let mut cfg = String::from("set timeout=0\nset default=0\nmenuentry \"hv-x86\" {\n");
    cfg.push_str("  multiboot2 /boot/hv-x86 ple_gap=128 ple_window=4096\n");
    for (name, viridian, mask) in DOMAINS {
        cfg.push_str(&format!(
            "  module2 /boot/x86guest {name} {viridian} expect={mask:#x}\n"
        ));
    }
    // The fourth domain triple-faults once in long mode.
    cfg.push_str("  module2 /boot/x86guest crasher viridian=all mode=triple expect=0x5\n");
    cfg.push_str("  boot\n}\n");
    cfg
}

fn bochsrc(iso: &Path, com1: &Path, log: &Path) -> String {
    format!(
        "megs: 256\n\
         cpu: model=corei7_haswell_4770, count=1, ips=50000000\n\
         romimage: file={BOCHS_BIOS}\n\
         vgaromimage: file={BOCHS_VGABIOS}\n\
         ata0-master: type=cdrom, path={}, status=inserted\n\
         boot: cdrom\n\
         display_library: rfb, options=\"timeout=0\"\n\
         port_e9_hack: enabled=1\n\
         com1: enabled=1, mode=file, dev={}\n\
         log: {}\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=report\n\
         debug: action=ignore\n\
         clock: sync=none, time0=1\n\
         sound: driver=dummy\n\
         speaker: enabled=0\n",
        iso.display(),
        com1.display(),
        log.display()
    )
}

/// Builds the ISO and runs Bochs; returns COM1's text and Bochs' log tail.
fn run_bochs() -> (String, String) {
    ensure_bochs().expect("bochs and grub-mkrescue available");
    let hv = build("hv-x86");
    let guest = build("x86guest");
    let dir = cache_dir().join("bochs-x86");
    let _ = std::fs::remove_dir_all(&dir);
    let grub = dir.join("iso/boot/grub");
    std::fs::create_dir_all(&grub).unwrap();
    std::fs::copy(&hv, dir.join("iso/boot/hv-x86")).unwrap();
    std::fs::copy(&guest, dir.join("iso/boot/x86guest")).unwrap();
    std::fs::write(grub.join("grub.cfg"), grub_cfg()).unwrap();
    let iso = dir.join("hv.iso");
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(dir.join("iso"))
        .output()
        .expect("grub-mkrescue runs");
    assert!(
        out.status.success(),
        "grub-mkrescue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (com1, log) = (dir.join("com1.out"), dir.join("bochs.log"));
    std::fs::write(dir.join("bochsrc"), bochsrc(&iso, &com1, &log)).unwrap();
    // Debian's Bochs has its debugger built in; this makes it continue.
    std::fs::write(dir.join("debugger.rc"), "c\n").unwrap();
    let mut child = Command::new("bochs")
        .current_dir(&dir)
        .args(["-q", "-f", "bochsrc", "-rc", "debugger.rc"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bochs starts");
    let start = Instant::now();
    let ended = loop {
        if child.try_wait().expect("wait for bochs").is_some() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&com1)
        .unwrap_or_default()
        .replace('\r', "");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = log_text.lines().rev().take(15).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(
        ended,
        "Bochs did not end by itself within 300 s\nCOM1:\n{text}\nbochs.log:\n{tail}"
    );
    (text, tail)
}

#[test]
fn hv_x86_runs_real_mode_guests_with_viridian_under_bochs() {
    let (out, tail) = run_bochs();
    let ctx = format!("COM1:\n{out}\nbochs.log (end):\n{tail}");
    let lines: Vec<&str> = out.lines().collect();
    let has = |l: &str| lines.contains(&l);
    let starts = |p: &str| lines.iter().any(|l| l.starts_with(p));
    assert!(
        has("loader: GRUB 2.06-13+deb12u2 (Multiboot2)") || starts("loader: GRUB"),
        "{ctx}"
    );
    assert!(starts("acpi: "), "ACPI tables read\n{ctx}");
    assert!(starts("vmx: on ("), "VMX on\n{ctx}");
    assert!(
        out.contains("pause-loop exiting gap 128 window 4096"),
        "{ctx}"
    );
    assert!(!out.contains("panic"), "{ctx}");
    for (k, (name, _, mask)) in DOMAINS.iter().enumerate() {
        let d = k + 1;
        assert!(
            starts(&format!("d{d} ({name}): 16 MiB, entry ")),
            "d{d} built\n{ctx}"
        );
        assert!(
            out.contains(&format!("viridian {mask:#x}")),
            "d{d} mask {mask:#x}\n{ctx}"
        );
        let fails: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("(d{d}) x86guest: ")) && l.contains(" FAIL"))
            .collect();
        assert!(fails.is_empty(), "d{d} failures: {fails:#?}\n{ctx}");
        for check in [
            "boot",
            "cpuid",
            "viridian-cpuid",
            "xen-version",
            "evtchn-self",
            "grant-copy",
            "ept-fault",
        ] {
            assert!(
                has(&format!("(d{d}) x86guest: {check} ok")),
                "d{d}: {check}\n{ctx}"
            );
        }
        assert!(has(&format!("(d{d}) x86guest: PASS")), "d{d} passes\n{ctx}");
        assert!(
            has(&format!("d{d}: shut down (poweroff)")),
            "d{d} powered off\n{ctx}"
        );
    }
    // The crasher: only it goes, the others above all passed and shut down.
    assert!(has("(d4) x86guest: triple-faulting now"), "{ctx}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("d4: triple fault at rip ") && l.ends_with(": domain crashed")),
        "{ctx}"
    );
    assert!(!has("(d4) x86guest: PASS"), "{ctx}");
    assert_eq!(
        lines.last().copied(),
        Some("hv-x86: all domains are gone; stopping"),
        "{ctx}"
    );
}
