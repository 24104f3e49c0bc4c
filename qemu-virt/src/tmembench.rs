//! `cargo run -- bench tmem`: what transcendent memory costs and saves.
//!
//! Three parts, printed together:
//! 1. the host benchmark of the store (`cargo bench -p common --bench
//!    tmem`, criterion): puts and gets per second, raw and LZ4;
//! 2. compression on real page mixes: every 4 KiB page of Debian's arm64
//!    kernel Image and of the static busybox binary (what cleancache
//!    would hold of a system's page cache), put into a store with
//!    compression on: bytes held against bytes put;
//! 3. the in-guest benchmark: the test guest (`testguest tmem=bench-*`,
//!    scenarios/tmem-bench.toml) on one CPU under `-icount shift=0`,
//!    booted twice, without and with `hv,tmem-compress`, timing a null
//!    hypercall (the baseline run in the same boot) and the puts and
//!    gets of 1,024 pages. 1 virtual ns = 1 instruction, so the figures
//!    repeat from run to run.

use std::process::Command;
use std::time::{Duration, Instant};

use common::tmem::{ClientConfig, PAGE, PoolKind, Tmem};

use crate::fixtures::{busybox_static_arm64, debian_arm64_image};
use crate::host::{target_dir, workspace_root};
use crate::image::build_hv_arm;
use crate::linux::domain_console;
use crate::multi;
use crate::qemu::run;
use crate::scenario::Scenario;

/// Wall-clock limit of one in-guest run.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// One criterion result: name, ns per op (the middle estimate).
fn criterion_figures(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once("time:") else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with("tmem/") {
            continue;
        }
        // time:   [359.98 ns 366.92 ns 373.94 ns]
        let fields: Vec<&str> = rest
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split_whitespace()
            .collect();
        if let [_, _, mid, unit, ..] = fields.as_slice()
            && let Ok(v) = mid.parse::<f64>()
        {
            let ns = match *unit {
                "ps" => v / 1000.0,
                "ns" => v,
                "µs" | "us" => v * 1000.0,
                "ms" => v * 1e6,
                _ => continue,
            };
            out.push((name.to_string(), ns));
        }
    }
    out
}

/// Pages of `bytes` (the last one zero-padded) put into a store with
/// compression on: (pages, pages kept compressed, bytes held).
pub fn compression(bytes: &[u8]) -> (u64, u64, u64) {
    let pages = bytes.len().div_ceil(PAGE);
    let mut t = Tmem::new((pages + 1) * PAGE);
    t.configure(
        1,
        ClientConfig {
            compress: true,
            ..ClientConfig::default()
        },
    );
    let Ok(pool) = t.new_pool(1, PoolKind::default(), [0; 2]) else {
        return (0, 0, 0);
    };
    for (i, chunk) in bytes.chunks(PAGE).enumerate() {
        let mut page = [0u8; PAGE];
        page[..chunk.len()].copy_from_slice(chunk);
        let Ok(index) = u32::try_from(i) else { break };
        if t.put(1, pool, [0; 3], index, &page).is_err() {
            break;
        }
    }
    let s = t.stats();
    (s.pages, s.compressed_pages, s.bytes)
}

/// Null hypercall, put and get: ns (instructions) per op.
type GuestFigures = (u64, u64, u64);

/// The guest's `tmembench:` line.
fn guest_figures(console: &str) -> Option<GuestFigures> {
    let line = console
        .lines()
        .find_map(|l| l.split_once("tmembench: ").map(|p| p.1))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("null_ns")?, field("put_ns")?, field("get_ns")?))
}

/// One in-guest run: its figures and a verdict for the table.
fn guest_run(lz4: bool, echo: bool) -> Result<(Option<GuestFigures>, String), String> {
    let path = workspace_root().join("scenarios/tmem-bench.toml");
    let mut s = Scenario::load(&path).map_err(|e| format!("{e:?}"))?;
    let mode = if lz4 { "lz4" } else { "raw" };
    for d in &mut s.domains {
        d.bootargs = format!("testguest tmem=bench-{mode}");
        if let Some(t) = d.tmem.as_mut() {
            t.compress = lz4;
        }
    }
    let hv = build_hv_arm("qemu-virt", false)?;
    let mut cfg = multi::prepare(&s, &hv, "", &format!("bench-tmem-{mode}"))?;
    cfg.icount = true;
    cfg.echo = echo;
    cfg.timeout = GUEST_TIMEOUT;
    eprintln!("qemu-virt: bench: tmem {mode} run ...");
    let out = run(&cfg)?;
    let log = target_dir().join(format!("bench-tmem-{mode}.log"));
    let _ = std::fs::write(&log, out.transcript());
    let console = domain_console(&out.console, "bench");
    let figs = guest_figures(&console);
    let verdict = if out.timed_out {
        "timed out".to_string()
    } else if console.lines().any(|l| l.trim_end() == "testguest: PASS") {
        format!("PASS, QEMU status {}", out.status)
    } else {
        format!("no PASS (see {})", log.display())
    };
    Ok((figs, verdict))
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

/// Runs the three parts and prints their tables. Ok(true) when every
/// figure was found.
pub fn tmem(echo: bool) -> Result<bool, String> {
    let mut complete = true;

    eprintln!("qemu-virt: bench: cargo bench -p common --bench tmem ...");
    let t0 = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["bench", "-p", "common", "--bench", "tmem"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cargo bench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if echo {
        print!("{text}");
    }
    let host = criterion_figures(&text);
    let get = |n: &str| host.iter().find(|f| f.0 == n).map(|f| f.1);
    println!(
        "\nbench tmem, 1. the store on this host (criterion, {:.0} s): a page mix of \
         mostly-zero, text-like and noise pages, one third each",
        t0.elapsed().as_secs_f64()
    );
    println!(
        "{:<10} {:>12} {:>14} {:>12}",
        "op", "ns/op", "ops/s", "lz4/raw"
    );
    for op in ["put", "get"] {
        let raw = get(&format!("tmem/{op}/raw"));
        let lz4 = get(&format!("tmem/{op}/lz4"));
        for (mode, v) in [("raw", raw), ("lz4", lz4)] {
            match v {
                Some(ns) => println!(
                    "{:<10} {:>12.1} {:>14.0} {:>12}",
                    format!("{op}/{mode}"),
                    ns,
                    1e9 / ns,
                    if mode == "lz4" {
                        ratio(ns, raw.unwrap_or(0.0))
                    } else {
                        String::new()
                    }
                ),
                None => {
                    complete = false;
                    println!("{:<10} {:>12}", format!("{op}/{mode}"), "n/a");
                }
            }
        }
    }
    if !out.status.success() {
        complete = false;
        eprintln!(
            "qemu-virt: bench: cargo bench failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    println!(
        "\nbench tmem, 2. compression on real pages (LZ4; a page is kept compressed \
         only when that saves an eighth of it)"
    );
    println!(
        "{:<28} {:>8} {:>11} {:>12} {:>12} {:>8}",
        "pages of", "pages", "compressed", "raw KiB", "held KiB", "held"
    );
    let mut all = Vec::new();
    for (name, path) in [
        ("Debian arm64 kernel Image", debian_arm64_image()?),
        ("busybox-static (arm64)", busybox_static_arm64()?),
    ] {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        all.extend_from_slice(&bytes);
        all.resize(all.len().next_multiple_of(PAGE), 0);
        print_compression(name, &bytes);
    }
    print_compression("both", &all);

    let (raw, raw_verdict) = guest_run(false, echo)?;
    let (lz4, lz4_verdict) = guest_run(true, echo)?;
    println!(
        "\nbench tmem, 3. in the guest: the test guest on one CPU, -icount shift=0,sleep=off \
         (1 virtual ns = 1 instruction), 1,024 puts and gets of the same page mix; the \
         baseline is a null hypercall (xen_version) in the same boot"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "figure", "raw ns", "lz4 ns", "lz4/raw", "raw/null", "lz4/null"
    );
    match (raw, lz4) {
        (Some(r), Some(l)) => {
            for (name, a, b) in [
                ("null hypercall", r.0, l.0),
                ("put", r.1, l.1),
                ("get", r.2, l.2),
            ] {
                println!(
                    "{:<22} {:>10} {:>10} {:>10} {:>9} {:>9}",
                    name,
                    a,
                    b,
                    ratio(b as f64, a as f64),
                    ratio(a as f64, r.0 as f64),
                    ratio(b as f64, l.0 as f64)
                );
            }
        }
        _ => {
            complete = false;
            println!("n/a: a run printed no tmembench line");
        }
    }
    println!("runs: raw {raw_verdict}; lz4 {lz4_verdict}");
    Ok(complete)
}

fn print_compression(name: &str, bytes: &[u8]) {
    let (pages, compressed, held) = compression(bytes);
    let raw = pages * PAGE as u64;
    println!(
        "{:<28} {:>8} {:>11} {:>12} {:>12} {:>7.1}%",
        name,
        pages,
        compressed,
        raw / 1024,
        held / 1024,
        if raw > 0 {
            held as f64 * 100.0 / raw as f64
        } else {
            0.0
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_and_guest_lines() {
        let text = "Benchmarking tmem/put/raw: Analyzing\n\
                    tmem/put/raw            time:   [359.98 ns 366.92 ns 373.94 ns]\n\
                    thrpt:  [2.6742 Melem/s 2.7254 Melem/s 2.7779 Melem/s]\n\
                    tmem/get/lz4            time:   [1.0 µs 1.5 µs 2.0 µs]\n\
                    other/x time: [1 ns 2 ns 3 ns]\n";
        assert_eq!(
            criterion_figures(text),
            [
                ("tmem/put/raw".to_string(), 366.92),
                ("tmem/get/lz4".to_string(), 1500.0)
            ]
        );
        let console = "testguest: tmem role bench-raw\n\
                       tmembench: mode=raw ops=1024 null_ns=512 put_ns=9000 get_ns=7000\n";
        assert_eq!(guest_figures(console), Some((512, 9000, 7000)));
        assert_eq!(guest_figures("tmembench: mode=raw null_ns=1"), None);
    }

    #[test]
    fn compression_counts_what_is_held() {
        // Two zero pages compress; one of noise stays raw.
        let mut bytes = vec![0u8; 2 * PAGE];
        let mut x = 1u64;
        bytes.extend((0..PAGE).map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        }));
        let (pages, compressed, held) = compression(&bytes);
        assert_eq!((pages, compressed), (3, 2));
        assert!(held > PAGE as u64 && held < PAGE as u64 + 200, "{held}");
    }
}
