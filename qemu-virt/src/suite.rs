//! `cargo run -- test`: the whole test suite, in order.
//!
//! Every step runs even when an earlier one failed, so one run shows every
//! problem; the last line counts the steps that passed and failed.

use std::process::Command;
use std::time::Instant;

use crate::host::workspace_root;

/// One step's result.
struct Step {
    name: String,
    ok: bool,
    secs: f64,
}

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

/// Runs the suite; returns true when every step passed.
pub fn run_all() -> bool {
    let mut steps: Vec<Step> = Vec::new();
    let mut step = |name: String, f: &mut dyn FnMut() -> Result<(), String>| {
        println!("\n=== suite: {name}");
        let t = Instant::now();
        let r = f();
        if let Err(e) = &r {
            println!("=== suite: {name}: FAILED: {e}");
        }
        steps.push(Step {
            name,
            ok: r.is_ok(),
            secs: t.elapsed().as_secs_f64(),
        });
    };

    step("install emulators".into(), &mut || {
        crate::host::ensure_qemu_arm()?;
        crate::host::ensure_qemu_x86()
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
    step("cargo test (unit, DT and boot tests)".into(), &mut || {
        cargo(&[
            "test",
            "--workspace",
            "--exclude",
            "hv-arm",
            "--exclude",
            "hv-x86",
        ])
    });

    println!("\n=== suite summary");
    for s in &steps {
        println!(
            "{:>7.1}s  {}  {}",
            s.secs,
            if s.ok { "ok    " } else { "FAILED" },
            s.name
        );
    }
    let passed = steps.iter().filter(|s| s.ok).count();
    let failed = steps.len() - passed;
    println!("suite: {passed} passed, {failed} failed");
    failed == 0
}
