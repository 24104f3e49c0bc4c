//! Host set-up: finds the workspace and installs missing Debian packages.
//!
//! Owns every change this tool makes to the host machine, so they are all
//! announced the same way: a line saying what is missing and what will be
//! installed, then apt-get's own output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Serializes installs: tests run in parallel and apt holds a lock.
static APT: Mutex<bool> = Mutex::new(false);

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo target directory of the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Directory for downloaded inputs (Debian packages, extracted DTBs, ...):
/// under the target directory so it is never committed and `cargo clean`
/// drops it.
pub fn cache_dir() -> PathBuf {
    let d = target_dir().join("cache");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// True when `program` is found on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Runs `apt-get update` once per process.
pub fn apt_update() -> Result<(), String> {
    let mut updated = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !*updated {
        run_apt(&["update"])?;
        *updated = true;
    }
    Ok(())
}

fn run_apt(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    // Not root: try sudo without a password prompt.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !is_root {
        cmd = Command::new("sudo");
        cmd.arg("-n")
            .arg("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("apt-get {} failed ({status})", args.join(" ")))
    }
}

/// Makes sure each `(program, debian_package)` is present, installing the
/// packages of the missing programs with apt-get (one line says so first).
pub fn ensure_programs(needed: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&(&str, &str)> = needed.iter().filter(|(prog, _)| !have(prog)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|(_, pkg)| *pkg).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    let progs: Vec<&str> = missing.iter().map(|(prog, _)| *prog).collect();
    eprintln!(
        "qemu-virt: {} not found; installing Debian package(s) {} with apt-get",
        progs.join(", "),
        pkgs.join(" ")
    );
    apt_update()?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(pkgs.iter().copied());
    {
        let _guard = APT.lock().unwrap_or_else(|e| e.into_inner());
        run_apt(&args)?;
    }
    match needed.iter().find(|(prog, _)| !have(prog)) {
        Some((prog, pkg)) => Err(format!("{prog} still missing after installing {pkg}")),
        None => Ok(()),
    }
}

/// QEMU for aarch64 and the device-tree compiler.
pub fn ensure_qemu_arm() -> Result<(), String> {
    ensure_programs(&[
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("dtc", "device-tree-compiler"),
    ])
}

/// QEMU for x86_64.
pub fn ensure_qemu_x86() -> Result<(), String> {
    ensure_programs(&[("qemu-system-x86_64", "qemu-system-x86")])
}

/// Bochs (the x86 emulator with VMX, EPT and unrestricted guest), its
/// BIOS images, and what builds a GRUB rescue ISO for it.
pub fn ensure_bochs() -> Result<(), String> {
    ensure_programs(&[
        ("bochs", "bochs"),
        ("grub-mkrescue", "grub-common"),
        ("xorriso", "xorriso"),
        ("mformat", "mtools"),
    ])?;
    let files = [
        (BOCHS_BIOS, "bochsbios"),
        (BOCHS_VGABIOS, "vgabios"),
        ("/usr/lib/grub/i386-pc/multiboot2.mod", "grub-pc-bin"),
    ];
    let missing: Vec<&str> = files
        .iter()
        .filter(|(f, _)| !std::path::Path::new(f).is_file())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "qemu-virt: installing Debian package(s) {} with apt-get",
        missing.join(" ")
    );
    apt_update()?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    {
        let _guard = APT.lock().unwrap_or_else(|e| e.into_inner());
        run_apt(&args)?;
    }
    match files
        .iter()
        .find(|(f, _)| !std::path::Path::new(f).is_file())
    {
        Some((f, pkg)) => Err(format!("{f} still missing after installing {pkg}")),
        None => Ok(()),
    }
}

/// Bochs' system BIOS (Debian's bochsbios).
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// The VGA BIOS Bochs loads (Debian's vgabios).
pub const BOCHS_VGABIOS: &str = "/usr/share/vgabios/vgabios.bin";
