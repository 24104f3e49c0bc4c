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

use std::time::Duration;

/// The domains: (name, the viridian list given to the hypervisor, the
/// mask the guest must then see). `base` alone means no frequency MSRs
/// (mask bit 1 set by the hypervisor's list parser, Xen's "!freq").
const DOMAINS: [(&str, &str, u64); 3] = [
    ("plain", "", 0),
    ("defaults", "viridian=defaults", 0x1),
    ("nofreq", "viridian=base,time_ref_count", 0x7),
];

/// Runs Bochs; returns COM1's text and Bochs' log tail.
fn run_bochs() -> (String, String) {
    let mut modules: Vec<String> = DOMAINS
        .iter()
        .map(|(name, viridian, mask)| format!("{name} {viridian} expect={mask:#x}"))
        .collect();
    // The fourth domain triple-faults once in long mode.
    modules.push("crasher viridian=all mode=triple expect=0x5".into());
    let run = qemu_virt::bochs::run(
        "x86",
        "ple_gap=128 ple_window=4096",
        &modules,
        256,
        Duration::from_secs(300),
    )
    .expect("Bochs runs");
    assert!(
        run.ended,
        "Bochs did not end by itself within 300 s\nCOM1:\n{}\nbochs.log:\n{}",
        run.com1, run.log_tail
    );
    (run.com1, run.log_tail)
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
            "hostile",
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
        let exits = lines
            .iter()
            .find(|l| l.starts_with(&format!("d{d}: ")) && l.contains(" VM exits, "));
        assert!(
            exits.is_some_and(|l| l.contains("VMCALL") && l.contains("EPT violation 1")),
            "d{d} exit counts\n{ctx}"
        );
        // The guests spin with PAUSE while they wait for their upcall:
        // pause-loop exiting hands the CPU to the next domain.
        assert!(
            exits.is_some_and(|l| l.contains(", PAUSE ")),
            "d{d} pause-loop exits\n{ctx}"
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
