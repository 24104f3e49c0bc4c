//! Transcendent memory under QEMU: two bare-metal test-guest domains
//! (scenarios/tmem-pair.toml) drive tmem through Xen's hypercall 38.
//! `a` and `b` share an ephemeral pool (one puts, the other gets, both
//! ways); `a`'s private persistent pool, in memory it gave back, survives
//! a flood of ephemeral puts past the budget while its oldest ephemeral
//! pages are dropped; `b` powers off mid-way and everything `a` holds,
//! and what `b` left in the shared pool, is still there.

use std::time::Duration;

use qemu_virt::image::build_hv_arm;
use qemu_virt::linux::domain_console;
use qemu_virt::multi;
use qemu_virt::qemu::run;
use qemu_virt::scenario::Scenario;

#[test]
fn two_guests_share_a_pool_persistent_pages_survive_pressure_and_a_destroyed_domain() {
    let path = qemu_virt::host::workspace_root().join("scenarios/tmem-pair.toml");
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e:#?}"));
    let hv = build_hv_arm("qemu-virt", false).expect("hv-arm builds");
    let mut cfg = multi::prepare(&s, &hv, "", "tmem-pair").expect("the scenario's tree is written");
    cfg.echo = false;
    cfg.timeout = Duration::from_secs(300);
    let out = run(&cfg).expect("QEMU runs");
    let t = out.transcript();
    let _ = std::fs::write(qemu_virt::host::target_dir().join("tmem-pair.log"), &t);
    assert!(!out.timed_out, "timed out\n{t}");
    assert_eq!(out.status, 0, "QEMU status\n{t}");
    assert!(out.console.contains("tmem: 1024 KiB budget"), "{t}");
    let a = domain_console(&out.console, "a").replace('\r', "");
    let b = domain_console(&out.console, "b").replace('\r', "");
    for (name, c, checks) in [
        (
            "a",
            &a,
            &[
                "tmem_pools",
                "tmem_refusals",
                "tmem_shared_put",
                "tmem_shared_get_from_b",
                "tmem_persistent_needs_room",
                "tmem_pressure",
                "tmem_other_domain_destroyed",
                "tmem_intact_after_destroy",
                "tmem_teardown",
            ][..],
        ),
        (
            "b",
            &b,
            &[
                "tmem_join_shared",
                "tmem_shared_get",
                "tmem_shared_get_again",
                "tmem_private_get_exclusive",
                "tmem_shared_put",
                "tmem_wait_for_a",
            ][..],
        ),
    ] {
        let failed: Vec<&str> = c.lines().filter(|l| l.contains(" FAIL")).collect();
        assert!(failed.is_empty(), "{name}: {failed:#?}\n{t}");
        for check in checks {
            let line = format!("testguest: {check} ok");
            assert!(c.lines().any(|l| l == line), "{name}: no '{line}'\n{t}");
        }
        assert!(
            c.lines().any(|l| l == "testguest: PASS"),
            "{name}: no PASS\n{t}"
        );
    }
    // Pages were really dropped under pressure.
    let dropped = a
        .lines()
        .find_map(|l| l.strip_prefix("testguest: tmem_pressure: "))
        .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "{t}");
    // b was destroyed while a still ran: a saw its domain go
    // (tmem_other_domain_destroyed) before its last checks.
    assert!(out.console.contains("(b) destroyed"), "{t}");
}
