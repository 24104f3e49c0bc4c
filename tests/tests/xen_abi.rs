//! Xen's guest ABI, proven with the Debian kernel's own Xen drivers: two
//! Linux domains with `xen,enhanced = "no-xenstore"` get the /hypervisor
//! node, detect Xen, set up shared info, the grant table and event
//! channels, and talk to each other through /dev/xen/{evtchn,gntalloc,
//! gntdev,privcmd} with the in-guest tool xentool
//! (tests/guests/xentool).

use std::path::Path;
use std::time::Duration;

use qemu_virt::image::build_hv_arm;
use qemu_virt::linux::domain_console;
use qemu_virt::multi;
use qemu_virt::qemu::{ConsoleStep, RunOutcome, run};
use qemu_virt::scenario::Scenario;

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

fn linux_domain(name: &str, args: &str) -> String {
    format!(
        "[[domain]]\nname = \"{name}\"\nkernel = \"debian\"\nramdisk = \"busybox\"\n\
         bootargs = \"console=ttyAMA0 {args}\"\nmemory = \"256M\"\ncpus = 2\n"
    )
}

/// The /chosen additions: both domains speak the ABI and may talk.
const XEN_PAIR: &str = "\t\tlinux1 {\n\t\t\txen,enhanced = \"no-xenstore\";\n\t\t\thv,xen-peers = \"linux2\";\n\t\t};\n\
\t\tlinux2 {\n\t\t\txen,enhanced = \"no-xenstore\";\n\t\t};\n";

#[test]
fn linux_detects_xen_and_sets_up_its_interfaces() {
    let toml = format!(
        "[machine]\ncpus = 4\nmemory = \"2G\"\n{}{}",
        linux_domain("linux1", "hvtest=poweroff"),
        linux_domain("linux2", "hvtest=poweroff")
    );
    let out = boot(&scenario(&toml), XEN_PAIR, "xen-detect", Vec::new());
    let t = out.transcript();
    let _ = std::fs::write(qemu_virt::host::target_dir().join("xen-detect.log"), &t);
    assert!(!out.timed_out, "timed out\n{t}");
    assert_eq!(out.status, 0, "QEMU status\n{t}");
    for name in ["linux1", "linux2"] {
        let c = domain_console(&out.console, name);
        assert!(
            c.contains("Xen 4.17 support found"),
            "{name}: Xen not detected\n{t}"
        );
        assert!(c.contains("HVTEST: init reached"), "{name}\n{t}");
        for bad in ["BUG", "WARNING:", "Oops"] {
            assert!(!c.contains(bad), "{name}: {bad}\n{t}");
        }
    }
}

/// Both domains with hvtest=xen (the Xen modules loaded, a shell), linux1
/// serving and linux2 connecting with xentool: 10,000 event-channel round
/// trips, a page shared each way, and the refusals.
#[test]
fn two_domains_ping_pong_and_share_pages_through_linux_drivers() {
    let toml = format!(
        "[machine]\ncpus = 4\nmemory = \"2G\"\n{}{}",
        linux_domain("linux1", "hvtest=xen"),
        linux_domain("linux2", "hvtest=xen")
    );
    let ctrl_a = "\u{1}\u{1}\u{1}";
    let steps = vec![
        ConsoleStep::new("(linux1) HVTEST: shell", "sleep 2; xentool serve 2\r"),
        ConsoleStep::new("(linux1) XT: serve port=", ""),
        ConsoleStep::new("\n", ctrl_a),
        ConsoleStep::new("", "xentool connect 1 ${port} ${rw} ${ro}\r"),
        ConsoleStep::new("(linux2) XT: connect ", "poweroff -f\r"),
        ConsoleStep::new("(linux2) powered off", "\rpoweroff -f\r"),
    ];
    let out = boot(&scenario(&toml), XEN_PAIR, "xen-pingpong", steps);
    let t = out.transcript();
    let _ = std::fs::write(qemu_virt::host::target_dir().join("xen-pingpong.log"), &t);
    assert!(!out.timed_out, "timed out\n{t}");
    assert_eq!(out.status, 0, "QEMU status\n{t}");
    let one = domain_console(&out.console, "linux1");
    let two = domain_console(&out.console, "linux2");
    for (name, c) in [("linux1", &one), ("linux2", &two)] {
        assert!(c.contains("HVTEST: xen devices ok"), "{name}: drivers\n{t}");
        for bad in ["BUG", "Oops", "FAIL"] {
            assert!(!c.contains(bad), "{name}: {bad}\n{t}");
        }
        // One warning is Linux's own and known (README, "Not done yet"):
        // after gntdev gave its ballooned pages back, the balloon thread
        // of a kernel with XEN_BALLOON_MEMORY_HOTPLUG tries to hot-add
        // memory below RAM and arm64's vmemmap_populate warns. Any other
        // warning fails.
        let warnings = c.matches("WARNING:").count();
        let balloon = c.matches("at arch/arm64/mm/mmu.c").count();
        assert!(
            warnings == 0 || warnings == balloon && c.contains("balloon_thread"),
            "{name}: a kernel warning\n{t}"
        );
    }
    assert!(one.contains("XT: serve ok"), "server\n{t}");
    assert!(two.contains("XT: pingpong n=10000 "), "ping-pong\n{t}");
    for what in [
        "bad_gref",
        "ro_write",
        "evtchn_status_peer",
        "evtchn_send_unallocated",
        "gnttab_map_bad_gref",
    ] {
        assert!(
            two.lines().any(|l| l.contains("XT: refuse")
                && l.contains(what)
                && l.split_whitespace().any(|w| w == "ok")),
            "refusal {what}\n{t}"
        );
    }
    assert!(two.contains("XT: alive ok"), "alive\n{t}");
    assert!(two.contains("XT: connect ok"), "client\n{t}");
}
