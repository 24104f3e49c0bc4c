//! `cargo run -- bench linux`: what the hypervisor costs a Linux boot.
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

use crate::image::build_hv_arm;
use crate::linux::{self, MARKER, Mode, RUN_INIT};
use crate::qemu::{RunConfig, RunOutcome, run};

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
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(858_123_000), "858,123,000");
    }
}
