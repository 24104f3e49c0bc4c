//! Several domains from one device tree, in Xen's dom0less binding: the
//! runner writes the tree from a scenario (qemu-virt/src/scenario.rs),
//! QEMU loads the modules, hv-arm builds every domain the tree describes
//! and refuses, by name, the ones it cannot.
//!
//! - two Debian Linux domains with 2 vCPUs each on a 4-CPU machine (the
//!   null scheduler), each printing its markers under its own name;
//! - one panics while the other keeps counting its timer ticks, and comes
//!   back (`hv,on-crash = "restart"`);
//! - four domains of one vCPU on two CPUs (time-sliced) all reach their
//!   shells, each answering a command typed after CTRL-A three times;
//! - a malformed-tree matrix: one bad domain per error kind beside a good
//!   one (the bare-metal test guest), which still boots and passes.

use std::path::Path;
use std::time::Duration;

use qemu_virt::image::build_hv_arm;
use qemu_virt::linux::{self, domain_console};
use qemu_virt::multi;
use qemu_virt::qemu::{ConsoleStep, RunOutcome, run};
use qemu_virt::scenario::Scenario;
use qemu_virt::testguest::{BOOTARGS, build_testguest};

fn scenario(toml: &str) -> Scenario {
    Scenario::from_toml(toml, Path::new(".")).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn boot(s: &Scenario, extra: &str, tag: &str, steps: Vec<ConsoleStep>) -> RunOutcome {
    let hv = build_hv_arm("qemu-virt", false).expect("hv-arm builds");
    let mut cfg = multi::prepare(s, &hv, extra, tag).expect("the scenario's tree is written");
    cfg.echo = false;
    cfg.timeout = Duration::from_secs(400);
    cfg.console_input = steps;
    run(&cfg).expect("QEMU runs")
}

fn linux_domain(name: &str, cpus: u32, mem: &str, args: &str, extra: &str) -> String {
    format!(
        "[[domain]]\nname = \"{name}\"\nkernel = \"debian\"\nramdisk = \"busybox\"\n\
         bootargs = \"console=ttyAMA0 {args}\"\nmemory = \"{mem}\"\ncpus = {cpus}\n{extra}\n"
    )
}

#[test]
fn two_linux_domains_boot_together_on_four_cpus() {
    let toml = format!(
        "[machine]\ncpus = 4\nmemory = \"2G\"\n{}{}",
        linux_domain("linux1", 2, "256M", "hvtest=poweroff", ""),
        linux_domain("linux2", 2, "256M", "hvtest=poweroff", "")
    );
    let out = boot(&scenario(&toml), "", "two", Vec::new());
    let t = out.transcript();
    assert!(!out.timed_out, "timed out\n{t}");
    assert_eq!(out.status, 0, "QEMU status\n{t}");
    assert!(
        out.console
            .contains("linux1: domain 1, 256 MiB, 2 vcpus on cpus 0,1"),
        "{t}"
    );
    assert!(
        out.console
            .contains("linux2: domain 2, 256 MiB, 2 vcpus on cpus 2,3"),
        "{t}"
    );
    for name in ["linux1", "linux2"] {
        let c = domain_console(&out.console, name);
        assert!(c.contains("HVTEST: init reached"), "{name}: no marker\n{t}");
        assert_eq!(linux::values(&c, "nproc"), ["2"], "{name}\n{t}");
        linux::check_interrupts(&c, 2).unwrap_or_else(|e| panic!("{name}: {e}\n{t}"));
        assert!(c.contains("HVTEST: powering off"), "{name}\n{t}");
        assert!(
            out.console.contains(&format!(
                "({name}) destroyed: 256 MiB scrubbed and returned"
            )),
            "{name}: memory not returned\n{t}"
        );
        assert!(
            out.console.contains(&format!("({name}) powered off")),
            "{t}"
        );
    }
}

#[test]
fn a_panicking_domain_restarts_while_the_other_keeps_ticking() {
    let toml = format!(
        "[machine]\ncpus = 4\nmemory = \"2G\"\n{}{}",
        linux_domain("ticker", 1, "192M", "hvtest=ticker", "pin = [3]"),
        linux_domain(
            "crasher",
            1,
            "192M",
            "hvtest=panic panic=-1 reboot=panic_warm",
            "on_crash = \"restart\""
        )
    );
    // The ticker has the input focus: a typed line ends it, once the
    // crasher is back.
    let steps = vec![ConsoleStep::new(
        "(crasher) HVTEST: back after the panic",
        "\r",
    )];
    let out = boot(&scenario(&toml), "", "panic", steps);
    let t = out.transcript();
    assert!(!out.timed_out, "timed out\n{t}");
    assert_eq!(
        out.status, 0,
        "QEMU status (a restarted domain is no loss)\n{t}"
    );
    let crash = out
        .console
        .find("(crasher) crashed on vcpu 0: warm reset requested")
        .unwrap_or_else(|| panic!("no crash line\n{t}"));
    let back = out
        .console
        .find("(crasher) HVTEST: back after the panic")
        .unwrap_or_else(|| panic!("the crasher did not come back\n{t}"));
    assert!(
        out.console.contains("(crasher) restarting after its crash"),
        "{t}"
    );
    let crasher = domain_console(&out.console, "crasher");
    assert!(crasher.contains("sysrq triggered crash"), "{t}");
    assert_eq!(linux::values(&crasher, "restart-count"), ["0", "1"], "{t}");
    // The ticker counted on, before, during and after the crash.
    let ticks = |text: &str| -> Vec<u64> {
        linux::values(&domain_console(text, "ticker"), "ticks")
            .iter()
            .map(|v| v.parse().expect("a tick count"))
            .collect()
    };
    let all = ticks(&out.console);
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "ticks not rising: {all:?}\n{t}"
    );
    let during = ticks(&out.console[crash..back]);
    assert!(
        during.len() >= 2,
        "the ticker printed {} tick lines while the crasher was down and rebooting\n{t}",
        during.len()
    );
    assert!(
        domain_console(&out.console, "ticker").contains("HVTEST: powering off"),
        "{t}"
    );
}

/// Under the default `hv,on-crash = "destroy"` a panicking domain is
/// destroyed and its memory returned; the other runs to its end, and the
/// exit status says a domain was lost.
#[test]
fn a_crashed_domain_is_destroyed_by_default() {
    let toml = format!(
        "[machine]\ncpus = 2\nmemory = \"1G\"\n{}{}",
        linux_domain("steady", 1, "192M", "hvtest=poweroff", ""),
        linux_domain(
            "crasher",
            1,
            "192M",
            "hvtest=panic panic=-1 reboot=panic_warm",
            ""
        )
    );
    let out = boot(&scenario(&toml), "", "destroy", Vec::new());
    let t = out.transcript();
    assert!(!out.timed_out, "timed out\n{t}");
    assert_eq!(out.status, 3, "QEMU status after a destroyed domain\n{t}");
    assert!(out.console.contains("(crasher) crashed on vcpu 0"), "{t}");
    assert!(
        out.console
            .contains("(crasher) destroyed: 192 MiB scrubbed and returned"),
        "{t}"
    );
    assert!(!out.console.contains("(crasher) restarting"), "{t}");
    let steady = domain_console(&out.console, "steady");
    assert!(steady.contains("HVTEST: powering off"), "{t}");
    assert!(out.console.contains("(steady) powered off"), "{t}");
}

#[test]
fn four_domains_on_two_cpus_reach_their_shells() {
    let mut toml = String::from("[machine]\ncpus = 2\nmemory = \"2G\"\nslice_ms = 10\n");
    for n in 1..=4 {
        toml.push_str(&linux_domain(
            &format!("d{n}"),
            1,
            "192M",
            "hvtest=shell quiet",
            "",
        ));
    }
    let switch = "\u{1}\u{1}\u{1}";
    let mut steps = Vec::new();
    for n in 1..=4 {
        steps.push(ConsoleStep::new(format!("console input goes to d{n}"), ""));
        steps.push(ConsoleStep::new(
            format!("(d{n}) / # "),
            format!("echo HELLO-$(({n}*7))\r"),
        ));
        steps.push(ConsoleStep::new(format!("HELLO-{}", n * 7), switch));
    }
    // Back at d1: power each off; the focus moves on by itself.
    for n in 1..=4 {
        steps.push(ConsoleStep::new(format!("console input goes to d{n}"), ""));
        steps.push(ConsoleStep::new("", "poweroff -f\r"));
        steps.push(ConsoleStep::new(format!("(d{n}) powered off"), ""));
    }
    let out = boot(&scenario(&toml), "", "four", steps);
    let t = out.transcript();
    assert!(!out.timed_out, "timed out\n{t}");
    assert_eq!(out.status, 0, "QEMU status\n{t}");
    for n in 1..=4 {
        let c = domain_console(&out.console, &format!("d{n}"));
        assert!(c.contains("HVTEST: shell:"), "d{n}\n{t}");
        assert!(
            c.lines().any(|l| l.trim() == format!("HELLO-{}", n * 7)),
            "d{n} did not answer\n{t}"
        );
    }
    assert!(
        out.log
            .iter()
            .any(|l| l.contains("serves 2 vcpus, time-sliced")),
        "{t}"
    );
}

/// One bad domain per error kind, beside the good test guest.
#[test]
fn malformed_domains_are_refused_by_name_and_the_good_one_boots() {
    let guest = build_testguest().expect("testguest builds");
    let toml = format!(
        "[machine]\ncpus = 2\nmemory = \"1G\"\n[[domain]]\nname = \"good\"\nkernel = \"{}\"\n\
         bootargs = \"{BOOTARGS}\"\nmemory = \"64M\"\ncpus = 2\n",
        guest.display()
    );
    let s = scenario(&toml);
    let module = |name: &str, compat: &str, addr: u64, size: u64| {
        format!(
            "\t\t\t{name} {{ compatible = \"{compat}\", \"multiboot,module\"; \
             reg = <0x0 {addr:#x} 0x0 {size:#x}>; }};\n"
        )
    };
    let domain = |name: &str, mem_kib: u64, body: &str| {
        format!(
            "\t\t{name} {{\n\t\t\tcompatible = \"xen,domain\";\n\t\t\t#address-cells = <2>;\n\
             \t\t\t#size-cells = <2>;\n\t\t\tmemory = <0 {mem_kib}>;\n\t\t\tcpus = <1>;\n\
             \t\t\tvpl011;\n{body}\t\t}};\n"
        )
    };
    let k = "multiboot,kernel";
    let r = "multiboot,ramdisk";
    let high = 0x7000_0000u64;
    let mut full = String::new();
    for i in 0..11u64 {
        let base = high + i * 0x1_0000;
        full.push_str(&domain(
            &format!("bad{i:02}"),
            8192,
            &(module("kernel", k, base, 0x1000)
                + &module("ramdisk", r, base + 0x2000, 0x1000)
                + &module("dtb", "multiboot,device-tree", base + 0x4000, 0x1000)),
        ));
    }
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "overlap",
            // The good domain's kernel sits at 0x41000000.
            domain("bad", 8192, &module("kernel", k, 0x4100_1000, 0x1000)),
            "/chosen/bad/kernel: overlaps boot module",
        ),
        (
            "outside-ram",
            domain("bad", 8192, &module("kernel", k, 0x1000_0000, 0x1000)),
            "/chosen/bad/kernel: module lies outside RAM",
        ),
        (
            "zero-length",
            domain("bad", 8192, &module("kernel", k, high, 0)),
            "/chosen/bad/kernel: module is empty",
        ),
        (
            "oversized",
            domain("bad", 4096, &module("kernel", k, high, 8 << 20)),
            "/chosen/bad/kernel: modules leave less than 2 MiB of the domain's memory",
        ),
        (
            "missing-kernel",
            domain("bad", 8192, &module("ramdisk", r, high, 0x1000)),
            "/chosen/bad: no kernel module",
        ),
        (
            "unknown-compatible",
            domain(
                "bad",
                8192,
                &(module("kernel", k, high, 0x1000)
                    + "\t\t\tgpu { compatible = \"vendor,gpu\"; };\n"),
            ),
            "/chosen/bad/gpu: unknown compatible",
        ),
        (
            "memory-does-not-fit",
            domain("bad", 3 << 20, &module("kernel", k, high, 0x1000)),
            "/chosen/bad: cannot build: 3072 MiB of memory asked for",
        ),
        (
            // Static shared memory the parser accepts, but whose guest
            // range lies in the domain's own RAM.
            "shm-over-guest-ram",
            domain(
                "bad",
                8192,
                &(module("kernel", k, high, 0x1000)
                    + "\t\t\tshm { compatible = \"xen,domain-shared-memory-v1\"; \
                       xen,shm-id = \"s\"; \
                       xen,shared-mem = <0x0 0x71000000 0x0 0x40000000 0x0 0x1000>; };\n"),
            ),
            "/chosen/bad: static shared memory s at guest 0x40000000 (0x1000 bytes) overlaps the domain's RAM; not built",
        ),
        (
            "33rd-module",
            full,
            "/chosen/bad10/ramdisk: more than 32 boot modules",
        ),
    ];
    for (case, dts, want) in cases {
        let out = boot(&s, &dts, case, Vec::new());
        let t = out.transcript();
        assert!(!out.timed_out, "{case}: timed out\n{t}");
        assert!(
            out.console.lines().any(|l| l.contains(want)),
            "{case}: no line with '{want}'\n{t}"
        );
        let good = domain_console(&out.console, "good").replace('\r', "");
        assert!(
            good.lines().any(|l| l == "testguest: PASS"),
            "{case}: the good domain did not pass\n{t}"
        );
        assert_eq!(out.status, 0, "{case}: QEMU status\n{t}");
    }
}
