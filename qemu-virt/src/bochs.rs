//! hv-x86 under Bochs: a GRUB rescue ISO with the hypervisor and boot
//! modules (copies of the x86 test guest, each line naming a domain and its
//! options), run until the hypervisor powers the emulator off.
//!
//! Bochs is the one emulator here with VMX (EPT, VPID, unrestricted
//! guest). Debian's build has its debugger compiled in, so it is started
//! with an rc file holding `c`; `display_library: rfb` with `timeout=0`
//! stands in for a headless mode it lacks. With `clock: sync=none` time is
//! emulated instructions (`ips`), so runs repeat exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cargo::Build;
use crate::host::{BOCHS_BIOS, BOCHS_VGABIOS, cache_dir, ensure_bochs};

/// Emulated instructions per second (also what the TSC counts).
pub const IPS: u64 = 50_000_000;

/// What a run left behind.
pub struct Run {
    /// COM1: the hypervisor's log and the guests' consoles.
    pub com1: String,
    /// The last lines of Bochs' own log (for failure messages).
    pub log_tail: String,
    /// False when it had to be killed at the time limit.
    pub ended: bool,
}

fn build(package: &'static str) -> Result<PathBuf, String> {
    Build {
        package,
        target: "x86_64-unknown-none",
        features: vec![],
        no_default_features: false,
        release: true,
    }
    .run()
}

fn grub_cfg(hv_cmdline: &str, modules: &[String]) -> String {
    let mut cfg = String::from("set timeout=0\nset default=0\nmenuentry \"hv-x86\" {\n");
    cfg.push_str(&format!("  multiboot2 /boot/hv-x86 {hv_cmdline}\n"));
    for m in modules {
        cfg.push_str(&format!("  module2 /boot/x86guest {m}\n"));
    }
    cfg.push_str("  boot\n}\n");
    cfg
}

fn bochsrc(iso: &Path, com1: &Path, log: &Path, megs: u32) -> String {
    format!(
        "megs: {megs}\n\
         cpu: model=corei7_haswell_4770, count=1, ips={IPS}\n\
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

/// Boots hv-x86 (command line `hv_cmdline`) with one x86guest module per
/// entry of `modules` (each the module's command line) in a `megs` MiB
/// Bochs machine, in `target/cache/bochs-<tag>/`; kills it after `limit`.
pub fn run(
    tag: &str,
    hv_cmdline: &str,
    modules: &[String],
    megs: u32,
    limit: Duration,
) -> Result<Run, String> {
    ensure_bochs()?;
    let hv = build("hv-x86")?;
    let guest = build("x86guest")?;
    let dir = cache_dir().join(format!("bochs-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let grub = dir.join("iso/boot/grub");
    std::fs::create_dir_all(&grub).map_err(|e| e.to_string())?;
    std::fs::copy(&hv, dir.join("iso/boot/hv-x86")).map_err(|e| e.to_string())?;
    std::fs::copy(&guest, dir.join("iso/boot/x86guest")).map_err(|e| e.to_string())?;
    std::fs::write(grub.join("grub.cfg"), grub_cfg(hv_cmdline, modules))
        .map_err(|e| e.to_string())?;
    let iso = dir.join("hv.iso");
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(dir.join("iso"))
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "grub-mkrescue: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (com1, log) = (dir.join("com1.out"), dir.join("bochs.log"));
    std::fs::write(dir.join("bochsrc"), bochsrc(&iso, &com1, &log, megs))
        .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("debugger.rc"), "c\n").map_err(|e| e.to_string())?;
    let mut child = Command::new("bochs")
        .current_dir(&dir)
        .args(["-q", "-f", "bochsrc", "-rc", "debugger.rc"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start bochs: {e}"))?;
    let start = Instant::now();
    let ended = loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break true;
        }
        if start.elapsed() > limit {
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
    let mut tail: Vec<&str> = log_text.lines().rev().take(15).collect();
    tail.reverse();
    Ok(Run {
        com1: text,
        log_tail: tail.join("\n"),
        ended,
    })
}

/// One measurement of the guest's bench mode.
#[derive(Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub ticks: u64,
}

/// The `x86guest: bench NAME TICKS ticks/op ...` lines of domain `d`.
pub fn figures(com1: &str, d: u32) -> Vec<Figure> {
    let prefix = format!("(d{d}) x86guest: bench ");
    com1.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            let name = w.next()?.to_string();
            let ticks = w.next()?.parse().ok()?;
            Some(Figure { name, ticks })
        })
        .collect()
}

/// `cargo run -- bench x86`: VM-exit round trips under Bochs, in a domain
/// without viridian and one with it, each figure against the CPUID exit
/// measured in the same run. One domain per run: the guest's TSC is the
/// machine's, so another domain's time slices would land in its figures.
pub fn bench(verbose: bool) -> Result<bool, String> {
    let mut tables = Vec::new();
    let mut notes = Vec::new();
    for (tag, module) in [
        ("bench-plain", "bench-plain mode=bench expect=0"),
        (
            "bench-viridian",
            "bench-viridian viridian=defaults mode=bench expect=0x1",
        ),
    ] {
        let run = run(
            tag,
            "",
            &[String::from(module)],
            128,
            Duration::from_secs(300),
        )?;
        if verbose || !run.ended {
            println!("{}", run.com1);
        }
        if !run.ended {
            return Err(format!("Bochs did not end within 300 s ({tag})"));
        }
        tables.push(figures(&run.com1, 1));
        notes.extend(
            run.com1
                .lines()
                .filter(|l| {
                    l.contains(" VM exits") || (l.starts_with("hv-x86: ") && l.contains("heap"))
                })
                .map(|l| format!("{tag}: {l}")),
        );
    }
    let (a, b) = (&tables[0], &tables[1]);
    println!(
        "hv-x86 under Bochs ({IPS} instructions/s, clock sync=none: guest TSC ticks are emulated instructions, identical run to run)"
    );
    println!(
        "{:<16} {:>12} {:>10} {:>12} {:>10}",
        "operation", "no viridian", "x cpuid", "viridian", "x cpuid"
    );
    let base = |f: &[Figure]| f.iter().find(|f| f.name == "cpuid").map_or(0, |f| f.ticks);
    let (ba, bb) = (base(a), base(b));
    let mut names: Vec<&str> = Vec::new();
    for f in a.iter().chain(b.iter()) {
        if !names.contains(&f.name.as_str()) {
            names.push(&f.name);
        }
    }
    for name in names {
        let cell = |f: &[Figure], base: u64| match f.iter().find(|f| f.name == name) {
            Some(f) if base > 0 => (
                f.ticks.to_string(),
                format!("{:.2}", f.ticks as f64 / base as f64),
            ),
            Some(f) => (f.ticks.to_string(), String::from("n/a")),
            None => (String::from("n/a"), String::from("n/a")),
        };
        let (ta, ra) = cell(a, ba);
        let (tb, rb) = cell(b, bb);
        println!("{name:<16} {ta:>12} {ra:>10} {tb:>12} {rb:>10}");
    }
    for n in notes {
        println!("{n}");
    }
    Ok(!a.is_empty() && !b.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_one_domain() {
        let com1 = "(d1) x86guest: bench cpuid 900 ticks/op (1.00 x cpuid)\n\
                    (d2) x86guest: bench cpuid 950 ticks/op (1.00 x cpuid)\n\
                    (d1) x86guest: bench xen_version 1800 ticks/op (2.00 x cpuid)\n\
                    (d1) x86guest: bench broken\n";
        assert_eq!(
            figures(com1, 1),
            vec![
                Figure {
                    name: "cpuid".into(),
                    ticks: 900
                },
                Figure {
                    name: "xen_version".into(),
                    ticks: 1800
                },
            ]
        );
        assert_eq!(figures(com1, 2).len(), 1);
    }

    #[test]
    fn grub_config_lists_every_module() {
        let cfg = grub_cfg(
            "ple_gap=128",
            &[String::from("a expect=0"), String::from("b viridian=all")],
        );
        assert!(cfg.contains("  multiboot2 /boot/hv-x86 ple_gap=128\n"));
        assert!(cfg.contains("  module2 /boot/x86guest a expect=0\n"));
        assert!(cfg.contains("  module2 /boot/x86guest b viridian=all\n"));
    }
}
