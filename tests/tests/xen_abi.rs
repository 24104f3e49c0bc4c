//! Xen's guest ABI, proven with the Debian kernel's own Xen drivers: two
//! Linux domains with `xen,enhanced = "no-xenstore"` get the /hypervisor
//! node, detect Xen, set up shared info, the grant table and event
//! channels, and talk to each other through /dev/xen/{evtchn,gntalloc,
//! gntdev,privcmd} with the in-guest tool xentool
//! (tests/guests/xentool).

use std::time::Duration;

use qemu_virt::image::build_hv_arm;
use qemu_virt::linux::domain_console;
use qemu_virt::multi;
use qemu_virt::qemu::{ConsoleStep, RunOutcome, run};
use qemu_virt::scenario::Scenario;

fn boot(s: &Scenario, extra: &str, tag: &str, steps: Vec<ConsoleStep>) -> RunOutcome {
    let hv = build_hv_arm("qemu-virt", false).expect("hv-arm builds");
    let mut cfg = multi::prepare(s, &hv, extra, tag).expect("the scenario's tree is written");
    cfg.echo = false;
    cfg.timeout = Duration::from_secs(400);
    cfg.console_input = steps;
    run(&cfg).expect("QEMU runs")
}

/// scenarios/xen-pair.toml: linux1 and linux2 with `xen = "no-xenstore"`,
/// linux1 naming linux2 in `peers`, a static channel (ports 10 and 11),
/// both booting with `hvtest` = `mode`.
fn xen_pair(mode: &str) -> Scenario {
    let path = qemu_virt::host::workspace_root().join("scenarios/xen-pair.toml");
    let mut s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e:#?}"));
    for d in &mut s.domains {
        d.bootargs = d.bootargs.replace("hvtest=xen", &format!("hvtest={mode}"));
    }
    s
}

#[test]
fn linux_detects_xen_and_sets_up_its_interfaces() {
    let out = boot(&xen_pair("poweroff"), "", "xen-detect", Vec::new());
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
    let ctrl_a = "\u{1}\u{1}\u{1}";
    let steps = vec![
        // linux1 writes the static shared memory, then serves: one typed
        // line of 90 bytes, more than the UART's FIFO (the rest waits in
        // the vPL011's backlog instead of being lost).
        ConsoleStep::new(
            "(linux1) HVTEST: shell",
            "devmem 0x23000000 32 0x5eed1234; devmem 0x231ffffc 32 0xc0ffee01; \
             sleep 2; xentool serve 2\r",
        ),
        ConsoleStep::new("(linux1) XT: serve port=", ""),
        ConsoleStep::new("\n", ctrl_a),
        ConsoleStep::new("", "xentool connect 1 ${port} ${rw} ${ro}\r"),
        ConsoleStep::new("(linux2) XT: connect ", "xentool status-static 11\r"),
        // linux2 reads both ends of the region back.
        ConsoleStep::new("(linux2) XT: static port=11", "a=$(devmem 0x23000000 32)\r"),
        ConsoleStep::new("(linux2) / # ", "b=$(devmem 0x231ffffc 32)\r"),
        ConsoleStep::new("(linux2) / # ", "echo SHM $a $b\r"),
        ConsoleStep::new("(linux2) SHM ", "poweroff -f\r"),
        ConsoleStep::new("(linux2) powered off", "\rpoweroff -f\r"),
    ];
    let out = boot(&xen_pair("xen"), "", "xen-pingpong", steps);
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
    // `refuse WHAT errno=N (NAME) ok ...`; a kernel message may continue
    // the line (the console is shared with printk).
    for what in [
        "bad_gref",
        "ro_write",
        "evtchn_status_peer",
        "evtchn_send_unallocated",
        "gnttab_map_bad_gref",
    ] {
        assert!(
            two.lines()
                .any(|l| l.contains("XT: refuse") && l.contains(what) && l.contains(") ok")),
            "refusal {what}\n{t}"
        );
    }
    assert!(two.contains("XT: alive ok"), "alive\n{t}");
    assert!(two.contains("XT: connect ok"), "client\n{t}");
    // The static shared memory: what linux1 wrote, linux2 reads.
    assert!(
        two.contains("SHM 0x5EED1234 0xC0FFEE01"),
        "static shared memory\n{t}"
    );
    assert!(
        out.console
            .contains("shared memory ring: host 0x70000000-0x70200000 (2048 KiB) set aside"),
        "{t}"
    );
    // The static channel from the tree, seen through EVTCHNOP_status.
    assert!(
        two.contains("XT: static port=11 status=2 remote_dom=1 remote_port=10"),
        "static channel\n{t}"
    );
}
