//! `cargo run -- bench linux`: what the hypervisor costs a Linux boot;
//! `cargo run -- bench xen`: xentool's Xen-ABI figures (see [`xen`]).
//!
//! Two boots of the same Debian kernel and initramfs, one after the other,
//! each under `-icount shift=0,sleep=off`, `dtb-randomness=off`, an RTC on
//! the VM clock and `-seed 1` (RunConfig::icount), so guest time repeats
//! exactly and one virtual nanosecond is one instruction (of all CPUs: TCG
//! runs them in turn):
//!
//! - native: QEMU boots the kernel directly (no EL2), 2 CPUs, 512 MiB;
//! - guest: hv-arm (`-append hv.console_timestamps=1`) boots it as its
//!   2-vCPU guest with 512 MiB.
//!
//! Both guests get `hvtest=poweroff hvbench quiet`: `quiet` keeps the
//! console output (every byte of which traps under hv-arm) equally small,
//! and `hvbench` makes /init print the kernel log's `Run /init` and marker
//! lines with their printk times. For the guest, hv-arm stamps each
//! console line with `[hv <secs>]` (time since its entry) and logs `first
//! guest instruction`. A figure that cannot be found prints `n/a`.

use std::time::{Duration, Instant};

use crate::host::target_dir;
use crate::image::build_hv_arm;
use crate::linux::{self, MARKER, Mode, RUN_INIT, domain_console};
use crate::multi;
use crate::qemu::{ConsoleStep, RunConfig, RunOutcome, run};
use crate::scenario::Scenario;

/// The guests' command line tail for both runs.
pub const BENCH_BOOTARGS: &str = "hvbench quiet";
/// The hypervisor's command line for the guest run.
pub const HV_BOOTARGS: &str = "hv.console_timestamps=1";
/// The hypervisor log line that carries the guest's start.
pub const FIRST_GUEST_INSN: &str = "first guest instruction";
/// Wall-clock limit per run (icount runs on one host thread).
const TIMEOUT: Duration = Duration::from_secs(600);

/// What one run measured, in seconds of guest (virtual) time; `None` when
/// the line was not found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// printk time of "Run /init as init process".
    pub run_init: Option<f64>,
    /// printk time of the marker /init wrote to /dev/kmsg.
    pub marker_printk: Option<f64>,
    /// Hypervisor entry to the guest's first instruction.
    pub hv_first_guest: Option<f64>,
    /// Hypervisor entry to the marker line on the console.
    pub hv_marker: Option<f64>,
    /// Host seconds QEMU ran.
    pub wall: f64,
    /// QEMU's exit status.
    pub status: i32,
    /// The run hit its time limit.
    pub timed_out: bool,
    /// Why the run did not happen (e.g. hv-arm did not build).
    pub not_run: Option<String>,
}

/// The figures of one run's output.
pub fn figures(out: &RunOutcome, wall: Duration) -> Figures {
    Figures {
        run_init: linux::printk_time(&out.console, RUN_INIT),
        marker_printk: linux::printk_time(&out.console, MARKER),
        hv_first_guest: linux::log_time(&out.log, FIRST_GUEST_INSN)
            .or_else(|| linux::console_time(&out.console, FIRST_GUEST_INSN)),
        hv_marker: linux::console_time(&out.console, MARKER),
        wall: wall.as_secs_f64(),
        status: out.status,
        timed_out: out.timed_out,
        not_run: None,
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Guest seconds as µs and instructions (1 virtual ns = 1 instruction).
fn virt(t: Option<f64>) -> String {
    match t {
        Some(s) if s.is_finite() && s >= 0.0 => {
            let ns = (s * 1e9).round() as u64;
            format!("{} us = {} insn", grouped(ns / 1000), grouped(ns))
        }
        _ => "n/a".into(),
    }
}

fn ratio(guest: Option<f64>, native: Option<f64>) -> String {
    match (guest, native) {
        (Some(g), Some(n)) if n > 0.0 => format!("{:.3}", g / n),
        _ => "n/a".into(),
    }
}

/// The result table.
pub fn table(native: &Figures, guest: &Figures) -> String {
    let rows: Vec<[String; 4]> = vec![
        [
            "figure".into(),
            "native".into(),
            "hv-arm guest".into(),
            "guest/native".into(),
        ],
        [
            format!("printk \"{RUN_INIT}\""),
            virt(native.run_init),
            virt(guest.run_init),
            ratio(guest.run_init, native.run_init),
        ],
        [
            format!("printk \"{MARKER}\""),
            virt(native.marker_printk),
            virt(guest.marker_printk),
            ratio(guest.marker_printk, native.marker_printk),
        ],
        [
            "hv entry -> first guest instruction".into(),
            "-".into(),
            virt(guest.hv_first_guest),
            "".into(),
        ],
        [
            "hv entry -> marker line on console".into(),
            "-".into(),
            virt(guest.hv_marker),
            "".into(),
        ],
        [
            "QEMU status".into(),
            status(native),
            status(guest),
            "".into(),
        ],
        [
            "host wall clock (moves +-30%)".into(),
            wall(native),
            wall(guest),
            ratio(
                guest.not_run.is_none().then_some(guest.wall),
                native.not_run.is_none().then_some(native.wall),
            ),
        ],
    ];
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i == 0 {
                line.push_str(&format!("{cell:<w$}", w = widths[0]));
            } else {
                line.push_str(&format!("  {cell:>w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn wall(f: &Figures) -> String {
    match f.not_run {
        Some(_) => "n/a".into(),
        None => format!("{:.1} s", f.wall),
    }
}

fn status(f: &Figures) -> String {
    if f.not_run.is_some() {
        "not run".into()
    } else if f.timed_out {
        "timed out".into()
    } else {
        f.status.to_string()
    }
}

fn timed(name: &str, cfg: &RunConfig) -> Result<(RunOutcome, Figures), String> {
    eprintln!("qemu-virt: bench: {name} run ...");
    let t = Instant::now();
    let out = run(cfg)?;
    let f = figures(&out, t.elapsed());
    eprintln!(
        "qemu-virt: bench: {name} run: status {}{}, {:.1} s wall",
        out.status,
        if out.timed_out { " (timed out)" } else { "" },
        f.wall
    );
    Ok((out, f))
}

/// The last `n` lines of a run's transcript, for a run that missed figures.
fn tail(out: &RunOutcome, n: usize) -> String {
    let t = out.transcript();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs both boots and prints the table; `echo` shows their consoles and
/// logs as they run. Ok(true) when both runs ended with status 0.
pub fn linux(echo: bool) -> Result<bool, String> {
    let files = linux::files()?;
    let bootargs = linux::bootargs(Mode::Poweroff, BENCH_BOOTARGS);

    let mut native = linux::native_config(&files, &bootargs);
    native.icount = true;
    native.echo = echo;
    native.timeout = TIMEOUT;
    let (n_out, n) = timed("native", &native)?;
    let mut outs = vec![("native", n_out, n.clone())];

    // The native figures are worth printing even when the hypervisor side
    // is not there yet.
    let g = match build_hv_arm("qemu-virt", false) {
        Ok(hv) => {
            let mut guest = linux::guest_config(&hv, &files, &bootargs);
            guest.icount = true;
            guest.echo = echo;
            guest.timeout = TIMEOUT;
            guest.append = Some(HV_BOOTARGS.into());
            let (g_out, g) = timed("guest", &guest)?;
            outs.push(("guest", g_out, g.clone()));
            g
        }
        Err(e) => {
            eprintln!("qemu-virt: bench: no guest run: {e}");
            Figures {
                not_run: Some(e),
                ..Figures::default()
            }
        }
    };
    for (name, out, f) in &outs {
        if f.run_init.is_none() || f.marker_printk.is_none() || f.status != 0 {
            eprintln!(
                "qemu-virt: bench: the {name} run is missing figures; its last lines:\n{}",
                tail(out, 30)
            );
        }
    }
    println!(
        "\nbench linux: {} with the runner's busybox initramfs, {} CPUs, \
         guest command line \"{bootargs}\"",
        files
            .kernel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        linux::CPUS
    );
    println!(
        "-icount shift=0,sleep=off, dtb-randomness=off, -rtc clock=vm, -seed 1: guest time repeats exactly; 1 virtual ns = 1 instruction \
         (all CPUs). printk times count from the guest kernel's clock start; hv times from \
         hypervisor entry.\n"
    );
    print!("{}", table(&n, &g));
    let ok = |f: &Figures| f.not_run.is_none() && f.status == 0 && !f.timed_out;
    Ok(ok(&n) && ok(&g))
}

// ------------------------------------------------------------- bench xen

/// Xen 4.17's figures (Debian's Xen on the same QEMU board and Linux,
/// dom0less domUs, the same icount settings), as the Xen-ABI issue gives
/// them; they are not measured by this command: (bench name, ns).
///
/// "gntdev map" is read as mapping a grant through gntdev until it can
/// be read (IOCTL_GNTDEV_MAP_GRANT_REF, mmap, which makes the hypercall,
/// and a first read), next to the raw map and unmap hypercalls the issue
/// lists apart. The unmap half and the whole cycle are printed without a
/// Xen figure. docs/decisions.md says why.
pub const XEN_NS: &[(&str, u64)] = &[
    ("privcmd_ioctl", 1_008),
    ("null_hypercall", 1_504),
    ("evtchn_roundtrip", 38_928),
    ("gntdev_map", 18_480),
    ("raw_map", 3_632),
    ("raw_unmap", 3_712),
];
/// Xen's hypervisor path of the null hypercall (xen_version - baseline).
pub const XEN_NULL_PATH_NS: u64 = 496;
/// Wall-clock limit of the `bench xen` run.
const XEN_TIMEOUT: Duration = Duration::from_secs(1200);

/// The `bench xen` scenario: scenarios/xen-pair.toml squeezed onto one
/// CPU, one vCPU per domain.
pub fn xen_scenario() -> Result<Scenario, String> {
    let path = crate::host::workspace_root().join("scenarios/xen-pair.toml");
    let mut s =
        Scenario::load(&path).map_err(|e| format!("{}: {}", path.display(), e.join("; ")))?;
    s.machine.cpus = 1;
    for d in &mut s.domains {
        d.cpus = 1;
        d.pin = None;
    }
    Ok(s)
}

/// The console script: linux1 serves, linux2 runs the benchmark.
pub fn xen_steps() -> Vec<ConsoleStep> {
    let ctrl_a = "\u{1}\u{1}\u{1}";
    vec![
        ConsoleStep::new("(linux1) HVTEST: shell", "sleep 2; xentool serve 2\r"),
        ConsoleStep::new("(linux1) XT: serve port=", ""),
        ConsoleStep::new("\n", ctrl_a),
        ConsoleStep::new("", "xentool bench 1 ${port} ${rw}\r"),
        // `alive` follows the last figure; the next `XT: bench ` line is
        // the verdict (`XT: bench ok` or `XT: bench FAIL ...`).
        ConsoleStep::new("(linux2) XT: alive", ""),
        ConsoleStep::new("(linux2) XT: bench ", ""),
        ConsoleStep::new("\n", "poweroff -f\r"),
        ConsoleStep::new("(linux2) powered off", "\rpoweroff -f\r"),
    ]
}

/// xentool's `XT: bench <name> median_ns=N [mbps=M]` lines: name ->
/// (median ns, MB/s).
pub fn xen_figures(console: &str) -> Vec<(String, u64, Option<String>)> {
    let mut out = Vec::new();
    for line in console.lines() {
        let Some(i) = line.find("XT: bench ") else {
            continue;
        };
        let mut words = line[i + "XT: bench ".len()..].split_whitespace();
        let Some(name) = words.next() else { continue };
        let mut median = None;
        let mut mbps = None;
        for w in words {
            if let Some(v) = w.strip_prefix("median_ns=") {
                median = v.parse::<u64>().ok();
            } else if let Some(v) = w.strip_prefix("mbps=") {
                mbps = Some(v.to_string());
            }
        }
        if let Some(m) = median {
            out.push((name.to_string(), m, mbps));
        }
    }
    out
}

/// The `bench xen` table.
pub fn xen_table(figs: &[(String, u64, Option<String>)]) -> String {
    let get = |n: &str| figs.iter().find(|f| f.0 == n).map(|f| f.1);
    let ns = |v: Option<u64>| {
        v.map(|v| format!("{} ns", grouped(v)))
            .unwrap_or("n/a".into())
    };
    let r = |ours: Option<u64>, xen: u64| match ours {
        Some(o) if xen > 0 => format!("{:.3}", o as f64 / xen as f64),
        _ => "n/a".into(),
    };
    let xen = |n: &str| XEN_NS.iter().find(|x| x.0 == n).map(|x| x.1).unwrap_or(0);
    let mut rows: Vec<[String; 4]> = vec![[
        "figure (median)".into(),
        "hv-arm".into(),
        "Xen 4.17".into(),
        "hv-arm/Xen".into(),
    ]];
    for (label, name) in [
        ("xen_version via privcmd", "null_hypercall"),
        (
            "privcmd ioctl, never reaches the hv (baseline)",
            "privcmd_ioctl",
        ),
        ("event-channel round trip (goal 0.7x)", "evtchn_roundtrip"),
        ("gntdev map: ioctl + mmap + first read", "gntdev_map"),
        ("gntdev unmap: munmap + ioctl", "gntdev_unmap"),
        ("gntdev whole cycle (map + unmap)", "gntdev_cycle"),
        ("raw GNTTABOP_map_grant_ref via privcmd", "raw_map"),
        ("raw GNTTABOP_unmap_grant_ref via privcmd", "raw_unmap"),
    ] {
        let x = xen(name);
        let (theirs, ratio) = if x > 0 {
            (ns(Some(x)), r(get(name), x))
        } else {
            ("-".into(), String::new())
        };
        rows.push([label.into(), ns(get(name)), theirs, ratio]);
    }
    let path = match (get("null_hypercall"), get("privcmd_ioctl")) {
        (Some(h), Some(b)) => Some(h.saturating_sub(b)),
        _ => None,
    };
    rows.push([
        "null hypercall, hv path (xen_version - baseline)".into(),
        ns(path),
        ns(Some(XEN_NULL_PATH_NS)),
        r(path, XEN_NULL_PATH_NS),
    ]);
    let copy = figs.iter().find(|f| f.0 == "grant_copy");
    rows.push([
        "grant copy, 4 KiB page".into(),
        ns(copy.map(|f| f.1)),
        "-".into(),
        "".into(),
    ]);
    rows.push([
        "grant copy throughput".into(),
        copy.and_then(|f| f.2.clone())
            .map(|m| format!("{m} MB/s"))
            .unwrap_or("n/a".into()),
        "n/a".into(),
        "".into(),
    ]);
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = format!("{:<w$}", row[0], w = widths[0]);
        for i in 1..4 {
            line.push_str(&format!("  {:>w$}", row[i], w = widths[i]));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `cargo run -- bench xen`: two Linux domains on one CPU under Xen's ABI,
/// icount, xentool's benchmark from linux2 against linux1. Ok(true) when
/// QEMU ended with status 0 and every figure was found.
pub fn xen(echo: bool) -> Result<bool, String> {
    let s = xen_scenario()?;
    let hv = build_hv_arm("qemu-virt", false)?;
    let mut cfg = multi::prepare(&s, &hv, "", "bench-xen")?;
    // -icount shift=0,sleep=off, dtb-randomness=off, -rtc clock=vm, -seed 1.
    cfg.icount = true;
    cfg.echo = echo;
    cfg.timeout = XEN_TIMEOUT;
    cfg.console_input = xen_steps();
    eprintln!("qemu-virt: bench: xen run ...");
    let t = Instant::now();
    let out = run(&cfg)?;
    let wall = t.elapsed().as_secs_f64();
    let log = target_dir().join("bench-xen.log");
    let _ = std::fs::write(&log, out.transcript());
    eprintln!(
        "qemu-virt: bench: xen run: status {}{}, {wall:.1} s wall; transcript in {}",
        out.status,
        if out.timed_out { " (timed out)" } else { "" },
        log.display()
    );
    let two = domain_console(&out.console, "linux2");
    let figs = xen_figures(&two);
    let verdict = two
        .lines()
        .find(|l| l.starts_with("XT: bench ok") || l.starts_with("XT: bench FAIL"))
        .map(str::to_string);
    let complete = [
        "privcmd_ioctl",
        "null_hypercall",
        "evtchn_roundtrip",
        "gntdev_map",
        "gntdev_unmap",
        "gntdev_cycle",
        "raw_map",
        "raw_unmap",
        "grant_copy",
    ]
    .iter()
    .all(|n| figs.iter().any(|f| f.0 == *n));
    if !complete || out.status != 0 || out.timed_out {
        let xt: Vec<&str> = out
            .console
            .lines()
            .filter(|l| l.contains("XT:") || l.contains("HVTEST"))
            .collect();
        eprintln!(
            "qemu-virt: bench: the xen run is missing figures; its XT/HVTEST lines:\n{}\n\
             its last lines:\n{}",
            xt.join("\n"),
            tail(&out, 30)
        );
    }
    println!(
        "\nbench xen: two Debian Linux domains (linux1 serves, linux2 measures with \
         `xentool bench`), 1 vCPU and 256 MiB each, on ONE CPU, Xen's ABI (no-xenstore)"
    );
    println!(
        "-icount shift=0,sleep=off, dtb-randomness=off, -rtc clock=vm, -seed 1: \
         1 virtual ns = 1 instruction. Medians of xentool's samples \
         (10,000 privcmd calls, the default count of event-channel round trips, \
         1,000 gntdev maps, 1,000 raw map/unmap pairs, 1,000 grant copies)."
    );
    println!(
        "The Xen 4.17 column is constants measured outside this command (same board, same \
         kernel); the baseline run in this command is the privcmd ioctl that never reaches \
         the hypervisor.\n"
    );
    print!("{}", xen_table(&figs));
    println!(
        "xentool verdict: {}; QEMU status {}{}; host wall clock {wall:.1} s",
        verdict.as_deref().unwrap_or("none"),
        out.status,
        if out.timed_out { " (timed out)" } else { "" }
    );
    Ok(complete && out.status == 0 && !out.timed_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(console: &str, log: &[&str]) -> RunOutcome {
        RunOutcome {
            status: 0,
            console: console.into(),
            log: log.iter().map(|s| s.to_string()).collect(),
            timed_out: false,
        }
    }

    #[test]
    fn reads_figures_and_prints_n_a_for_missing_ones() {
        let guest = outcome(
            "[hv 0.040000] [    0.000000] Booting Linux\n\
             [hv 1.100000] HVTEST: init reached\n\
             [hv 1.200000] HVTEST: dmesg: [    0.950000] Run /init as init process\n\
             [hv 1.200100] HVTEST: dmesg: [    1.000000] HVTEST: init reached\n",
            &[
                "[hv] 0.001000 INFO  entered",
                "[hv] 0.020000 INFO  first guest instruction",
            ],
        );
        let g = figures(&guest, Duration::from_secs(10));
        assert_eq!(g.run_init, Some(0.95));
        assert_eq!(g.marker_printk, Some(1.0));
        assert_eq!(g.hv_first_guest, Some(0.02));
        assert_eq!(g.hv_marker, Some(1.1));
        let native = outcome(
            "HVTEST: dmesg: [    0.858000] Run /init as init process\n",
            &[],
        );
        let n = figures(&native, Duration::from_secs(5));
        assert_eq!(n.marker_printk, None);
        let t = table(&n, &g);
        assert!(t.contains("858,000 us = 858,000,000 insn"), "{t}");
        assert!(t.contains("20,000 us = 20,000,000 insn"), "{t}");
        assert!(t.contains("1.107"), "{t}");
        assert!(t.contains("n/a"), "{t}");
        assert!(t.contains("2.000"), "wall ratio\n{t}");
        assert_eq!(t.lines().count(), 7);
        let missing = Figures {
            not_run: Some("no build".into()),
            ..Figures::default()
        };
        let t = table(&n, &missing);
        let wall_row = t.lines().last().unwrap();
        let last: Vec<&str> = wall_row.split_whitespace().rev().take(2).collect();
        assert_eq!(last, ["n/a", "n/a"], "{t}");
        assert!(t.contains("not run"), "{t}");
    }

    #[test]
    fn xen_table_compares_what_xen_has_and_leaves_the_rest_blank() {
        let console = "XT: bench privcmd_ioctl median_ns=1000\n\
                       XT: bench null_hypercall median_ns=1500\n\
                       XT: bench gntdev_map median_ns=9240\n\
                       XT: bench gntdev_unmap median_ns=12000\n\
                       XT: bench grant_copy median_ns=9664 mbps=414.6\n\
                       XT: bench ok\n";
        let figs = xen_figures(console);
        assert_eq!(figs.len(), 5);
        let t = xen_table(&figs);
        let row = |start: &str| {
            t.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no {start} row\n{t}"))
                .to_string()
        };
        let map = row("gntdev map:");
        assert!(
            map.contains("9,240 ns") && map.ends_with("18,480 ns       0.500"),
            "{t}"
        );
        let unmap = row("gntdev unmap:");
        assert!(unmap.contains("12,000 ns") && unmap.ends_with(" -"), "{t}");
        assert!(row("gntdev whole cycle").contains("n/a"), "{t}");
        assert!(row("null hypercall, hv path").contains("500 ns"), "{t}");
        assert!(row("grant copy throughput").contains("414.6 MB/s"), "{t}");
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(858_123_000), "858,123,000");
    }
}
