//! `cargo run -- test`: the whole test suite, in order.
//!
//! Every step runs even when an earlier one failed, so one run shows every
//! problem; the last line counts the steps that passed and failed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::host::workspace_root;

/// One step's result.
struct Step {
    name: String,
    outcome: Outcome,
    secs: f64,
    /// Why it failed, repeated after the summary table so the end of a
    /// long CI log names the failing test and its message.
    why: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    /// Could not run on this machine (said why); counted apart.
    Skipped,
}

/// Returned by a step that cannot run here.
const SKIP: &str = "SKIPPED";

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args(args);
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

/// `cargo test` with its standard output echoed line by line and also
/// kept, so that a failure returns the failing tests' names and the tail of
/// each one's captured output instead of only "cargo test failed".
fn cargo_test(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(args)
        .stdout(Stdio::piped());
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            lines.push(line);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for cargo: {e}"))?;
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "cargo {} failed ({status}){}",
        args.join(" "),
        failure_digest(&lines)
    ))
}

/// The parts of libtest's output that say what failed: every
/// `---- name stdout ----` block (its last 40 lines) and every
/// `test ... FAILED` line.
fn failure_digest(lines: &[String]) -> String {
    const TAIL: usize = 40;
    let mut out = String::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_block = false;
    let flush = |block: &mut Vec<&str>, out: &mut String| {
        let skip = block.len().saturating_sub(TAIL + 1);
        if let Some(head) = block.first() {
            out.push('\n');
            out.push_str(head);
            if skip > 0 {
                out.push_str(&format!("\n    [{skip} earlier lines]"));
            }
            for l in block.iter().skip(1 + skip) {
                out.push('\n');
                out.push_str(l);
            }
        }
        block.clear();
    };
    for line in lines {
        if line.starts_with("---- ") && line.ends_with(" ----") {
            flush(&mut block, &mut out);
            in_block = true;
            block.push(line);
        } else if line == "failures:" || line.starts_with("test result:") {
            flush(&mut block, &mut out);
            in_block = false;
        } else if in_block {
            block.push(line);
        }
    }
    flush(&mut block, &mut out);
    for line in lines {
        if line.starts_with("test ") && line.ends_with("FAILED") {
            out.push('\n');
            out.push_str(line);
        }
    }
    out
}

/// Runs the suite; returns true when every step passed.
pub fn run_all() -> bool {
    let mut steps: Vec<Step> = Vec::new();
    let mut step = |name: String, f: &mut dyn FnMut() -> Result<(), String>| {
        println!("\n=== suite: {name}");
        let t = Instant::now();
        let mut why = String::new();
        let outcome = match f() {
            Ok(()) => Outcome::Passed,
            Err(e) if e.starts_with(SKIP) => {
                println!("=== suite: {name}: {e}");
                Outcome::Skipped
            }
            Err(e) => {
                println!("=== suite: {name}: FAILED: {e}");
                why = e;
                Outcome::Failed
            }
        };
        steps.push(Step {
            name,
            outcome,
            secs: t.elapsed().as_secs_f64(),
            why,
        });
    };

    step("install emulators".into(), &mut || {
        crate::host::ensure_qemu_arm()?;
        crate::host::ensure_qemu_x86()?;
        crate::host::ensure_bochs()
    });
    step("rustfmt".into(), &mut || {
        cargo(&["fmt", "--all", "--", "--check"])
    });
    step("clippy (host crates)".into(), &mut || {
        cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "hv-arm",
            "--exclude",
            "hv-x86",
            "--exclude",
            "testguest",
            "--exclude",
            "x86guest",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    });
    for profile in boards::ARM_PROFILES {
        for text in [false, true] {
            if text && profile.name != "qemu-virt" {
                continue;
            }
            let mut features = format!("board-{}", profile.name);
            if text {
                features.push_str(",text-log");
            }
            step(format!("clippy hv-arm ({features})"), &mut || {
                cargo(&[
                    "clippy",
                    "-p",
                    "hv-arm",
                    "--target",
                    "aarch64-unknown-none",
                    "--release",
                    "--no-default-features",
                    "--features",
                    &features,
                    "--",
                    "-D",
                    "warnings",
                ])
            });
        }
    }
    step("clippy hv-x86".into(), &mut || {
        cargo(&[
            "clippy",
            "-p",
            "hv-x86",
            "--target",
            "x86_64-unknown-none",
            "--release",
            "--",
            "-D",
            "warnings",
        ])
    });
    step("clippy x86guest".into(), &mut || {
        cargo(&[
            "clippy",
            "-p",
            "x86guest",
            "--target",
            "x86_64-unknown-none",
            "--release",
            "--",
            "-D",
            "warnings",
        ])
    });
    for features in ["", "bare-qemu"] {
        step(
            format!(
                "clippy testguest ({})",
                if features.is_empty() {
                    "default"
                } else {
                    features
                }
            ),
            &mut || {
                let mut args = vec![
                    "clippy",
                    "-p",
                    "testguest",
                    "--target",
                    "aarch64-unknown-none",
                    "--release",
                ];
                if !features.is_empty() {
                    args.extend(["--features", features]);
                }
                args.extend(["--", "-D", "warnings"]);
                cargo(&args)
            },
        );
    }
    // hv-x86's Multiboot parser is a library that also builds and is tested
    // on the host.
    step("clippy hv-x86 (host library and tests)".into(), &mut || {
        cargo(&[
            "clippy", "-p", "hv-x86", "--lib", "--tests", "--", "-D", "warnings",
        ])
    });
    for profile in boards::ARM_PROFILES {
        step(format!("flashable Image for {}", profile.name), &mut || {
            let built = crate::image::build_hv_arm(profile.name, false)?;
            println!(
                "{}: {} bytes ({} KiB) at {:#x}, {} KiB in memory",
                built.image.display(),
                built.info.file_size,
                built.info.file_size.div_ceil(1024),
                built.info.load_address,
                built.info.image_size.div_ceil(1024)
            );
            Ok(())
        });
    }
    step(
        "cargo test (unit, DT, boot and Linux-guest tests)".into(),
        &mut || {
            cargo_test(&[
                "test",
                "--workspace",
                "--exclude",
                "hv-arm",
                "--exclude",
                "hv-x86",
                "--exclude",
                "testguest",
                "--exclude",
                "x86guest",
            ])
        },
    );
    step("cargo test hv-x86 (host library)".into(), &mut || {
        cargo_test(&["test", "-p", "hv-x86", "--lib"])
    });

    step(
        "fuzz the device-tree and boot-module parsers (60 s)".into(),
        &mut fuzz_platform_dt,
    );
    step(
        "fuzz the dom0less domain parser (30 s)".into(),
        &mut fuzz_dom0less,
    );
    step(
        "fuzz the guest-facing vGIC and vPL011 models (30 s)".into(),
        &mut fuzz_guest_mmio,
    );
    step(
        "fuzz the Xen hypercall handlers (60 s)".into(),
        &mut fuzz_hypercalls,
    );
    step(
        "fuzz tmem operation sequences of three domains (30 s)".into(),
        &mut fuzz_tmem,
    );
    step(
        "fuzz the x86 parsers and guest-facing models (Multiboot, ACPI, ELF, viridian, page walks) (40 s)".into(),
        &mut fuzz_x86_boot,
    );

    for s in steps.iter().filter(|s| s.outcome == Outcome::Failed) {
        println!("\n=== why \"{}\" failed: {}", s.name, s.why);
    }
    println!("\n=== suite summary");
    for s in &steps {
        let tag = match s.outcome {
            Outcome::Passed => "ok     ",
            Outcome::Failed => "FAILED ",
            Outcome::Skipped => "skipped",
        };
        println!("{:>7.1}s  {}  {}", s.secs, tag, s.name);
    }
    let count = |o| steps.iter().filter(|s| s.outcome == o).count();
    let (passed, failed, skipped) = (
        count(Outcome::Passed),
        count(Outcome::Failed),
        count(Outcome::Skipped),
    );
    if skipped > 0 {
        println!(
            "suite: {skipped} skipped (could not run here; counted neither passed nor failed)"
        );
    }
    // The last line, in one fixed form, for people and CI alike.
    println!("suite: {passed} passed, {failed} failed");
    failed == 0
}

/// A short libFuzzer run of `common/fuzz`'s `platform_dt` target, seeded
/// with the real trees the DT tests use. Needs a nightly toolchain (for the
/// sanitizer flags) and cargo-fuzz, which it installs from crates.io.
/// Errs (as a skip) when cargo-fuzz cannot run here; installs it if only
/// the tool is missing.
fn fuzz_ready() -> Result<(), String> {
    let toolchains = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map_err(|e| e.to_string())?;
    if !String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        return Err(format!(
            "{SKIP}: no nightly toolchain on this machine (cargo-fuzz needs one)"
        ));
    }
    let have_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_fuzz {
        cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    Ok(())
}

/// Runs cargo-fuzz target `target` of the fuzz project in `dir` for
/// `secs` seconds over `corpus`.
fn run_fuzzer(dir: &str, target: &str, corpus: &std::path::Path, secs: u32) -> Result<(), String> {
    let status = Command::new("cargo")
        .current_dir(workspace_root().join(dir))
        .args(["+nightly", "fuzz", "run", target])
        .arg(corpus)
        .args(["--", &format!("-max_total_time={secs}"), "-max_len=131072"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the fuzzer found a crash ({status}); see {dir}/artifacts"
        ))
    }
}

/// The guest-facing device models (vGIC, vPL011) and decoders, 30 s.
fn fuzz_guest_mmio() -> Result<(), String> {
    fuzz_ready()?;
    let corpus = crate::host::cache_dir().join("fuzz-corpus-guest-mmio");
    std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
    run_fuzzer("armvm/fuzz", "guest_mmio", &corpus, 30)
}

/// `common/fuzz`'s `hypercalls` target, 60 s: every hypercall handler
/// with arbitrary arguments and guest memory from three domains, and the
/// event-channel operation sequences.
fn fuzz_hypercalls() -> Result<(), String> {
    fuzz_ready()?;
    let corpus = crate::host::cache_dir().join("fuzz-corpus-hypercalls");
    std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
    run_fuzzer("common/fuzz", "hypercalls", &corpus, 60)
}

/// `common/fuzz`'s `tmem` target: operation sequences from three
/// domains against the store's invariants and a model of what it must
/// keep.
fn fuzz_tmem() -> Result<(), String> {
    fuzz_ready()?;
    let corpus = crate::host::cache_dir().join("fuzz-corpus-tmem");
    std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
    run_fuzzer("common/fuzz", "tmem", &corpus, 30)
}

/// `hv-x86/fuzz`'s five targets, 8 s each: the ACPI tables (RSDP search,
/// RSDT/XSDT, MADT, DMAR) over hostile firmware memory, the Multiboot1
/// and Multiboot2 information blocks, the ELF loader, viridian's list
/// parser and MSR/hypercall/CPUID sequences, and guest page walks.
fn fuzz_x86_boot() -> Result<(), String> {
    fuzz_ready()?;
    for target in ["acpi", "multiboot", "elf", "viridian", "gwalk"] {
        let corpus = crate::host::cache_dir().join(format!("fuzz-corpus-x86-{target}"));
        std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
        run_fuzzer("hv-x86/fuzz", target, &corpus, 8)?;
    }
    Ok(())
}

fn fuzz_platform_dt() -> Result<(), String> {
    fuzz_ready()?;
    let corpus = crate::host::cache_dir().join("fuzz-corpus-platform-dt");
    std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
    let mut seeds = vec![
        crate::fixtures::qemu_virt_dtb(4, 1024, "")?,
        crate::fixtures::qemu_virt_dtb(2, 1024, "iommu=smmuv3")?,
    ];
    for (name, _) in crate::fixtures::BOARD_DTBS {
        seeds.push(crate::fixtures::board_dtb(name)?);
    }
    for s in seeds {
        if let Some(n) = s.file_name() {
            std::fs::copy(&s, corpus.join(n)).map_err(|e| e.to_string())?;
        }
    }
    run_fuzzer("common/fuzz", "platform_dt", &corpus, 60)
}

/// `common/fuzz`'s `dom0less` target, 30 s, seeded with QEMU virt's own
/// tree and a dom0less tree ([`dom0less_seed_dts`]) compiled with dtc.
fn fuzz_dom0less() -> Result<(), String> {
    fuzz_ready()?;
    let corpus = crate::host::cache_dir().join("fuzz-corpus-dom0less");
    std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
    let seed = crate::host::cache_dir().join("dom0less-seed.dtb");
    crate::fixtures::dtc(&dom0less_seed_dts(), &seed)?;
    let seeds = vec![crate::fixtures::qemu_virt_dtb(4, 1024, "")?, seed];
    for s in seeds {
        if let Some(n) = s.file_name() {
            std::fs::copy(&s, corpus.join(n)).map_err(|e| e.to_string())?;
        }
    }
    run_fuzzer("common/fuzz", "dom0less", &corpus, 30)
}

/// A dom0less boot tree in the form ImageBuilder writes: top-level dom0
/// modules, then twelve domains of three modules each, two sharing a
/// kernel (the last two find the module table full), with vCPU pinning,
/// event-channel and shared-memory nodes, and every domain property.
fn dom0less_seed_dts() -> String {
    let mut s = String::from(
        "/dts-v1/;\n/ {\n\t#address-cells = <2>;\n\t#size-cells = <2>;\n\
         \tmemory@40000000 { device_type = \"memory\"; reg = <0 0x40000000 0 0x80000000>; };\n\
         \tchosen {\n\t\t#address-cells = <2>;\n\t\t#size-cells = <2>;\n\
         \t\txen,xen-bootargs = \"console=dtuart sched=null\";\n\
         \t\tmodule@41000000 { compatible = \"multiboot,kernel\", \"multiboot,module\"; \
         reg = <0 0x41000000 0 0x10000>; bootargs = \"console=hvc0\"; };\n\
         \t\tmodule@42000000 { compatible = \"multiboot,ramdisk\", \"multiboot,module\"; \
         reg = <0 0x42000000 0 0x10000>; };\n",
    );
    for d in 0u32..12 {
        let base = 0x5000_0000 + d * 0x40_0000;
        // Domains 0 and 1 boot one kernel image.
        let kernel = if d == 1 { 0x5000_0000 } else { base };
        s.push_str(&format!(
            "\t\tdomU{d} {{\n\t\t\tcompatible = \"xen,domain\";\n\
             \t\t\t#address-cells = <1>;\n\t\t\t#size-cells = <1>;\n\
             \t\t\tmemory = <0 0x4000>;\n\t\t\tcpus = <2>;\n\t\t\tvpl011;\n\
             \t\t\tcapabilities = <{caps}>;\n\t\t\tpassthrough = \"disabled\";\n\
             \t\t\txen,enhanced = \"no-xenstore\";\n\t\t\thv,on-crash = \"restart\";\n\
             \t\t\tkernel {{ compatible = \"multiboot,kernel\", \"multiboot,module\"; \
             reg = <{kernel:#x} 0x10000>; bootargs = \"console=ttyAMA0\"; }};\n\
             \t\t\tramdisk {{ compatible = \"multiboot,ramdisk\", \"multiboot,module\"; \
             reg = <{r:#x} 0x10000>; }};\n\
             \t\t\tdtb {{ compatible = \"multiboot,device-tree\", \"multiboot,module\"; \
             reg = <{t:#x} 0x1000>; }};\n\
             \t\t\tvcpu0 {{ compatible = \"xen,vcpu\"; id = <0>; hard-affinity = <{d} 1>; }};\n\
             \t\t\tevtchn {{ compatible = \"xen,evtchn-v1\"; }};\n\
             \t\t\tshm {{ compatible = \"xen,domain-shared-memory-v1\"; }};\n\
             \t\t}};\n",
            caps = if d == 0 { 4 } else { 0 },
            r = base + 0x10_0000,
            t = base + 0x20_0000,
        ));
    }
    s.push_str("\t};\n};\n");
    s
}

#[cfg(test)]
mod tests {
    use super::failure_digest;

    #[test]
    fn digest_names_the_failing_test_and_keeps_its_message() {
        let out: Vec<String> = [
            "running 2 tests",
            "test a ... ok",
            "test b ... FAILED",
            "",
            "failures:",
            "",
            "---- b stdout ----",
            "thread 'b' panicked at tests/b.rs:3:5:",
            "the guest said no",
            "",
            "failures:",
            "    b",
            "",
            "test result: FAILED. 1 passed; 1 failed",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let d = failure_digest(&out);
        assert!(d.contains("---- b stdout ----"), "{d}");
        assert!(d.contains("the guest said no"), "{d}");
        assert!(d.contains("test b ... FAILED"), "{d}");
        assert!(!d.contains("test a"), "{d}");
    }

    #[test]
    fn digest_keeps_only_the_tail_of_a_long_block() {
        let mut out = vec!["---- long stdout ----".to_string()];
        out.extend((0..100).map(|i| format!("line {i}")));
        out.push("failures:".into());
        let d = failure_digest(&out);
        assert!(d.contains("[60 earlier lines]"), "{d}");
        assert!(d.contains("line 99") && d.contains("line 60"), "{d}");
        assert!(!d.contains("line 59\n"), "{d}");
    }
}
