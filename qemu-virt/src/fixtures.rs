//! Real device trees and kernels for the tests, fetched at test time and
//! cached under `target/cache/` (never committed).
//!
//! Board DTBs come from Debian's own arm64 kernel package (`apt-get
//! download`, which needs the arm64 architecture known to dpkg: added once,
//! with a line saying so). QEMU virt's tree is dumped by QEMU itself with
//! `-machine dumpdtb`. The same kernel package will provide the Linux guest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::host::{cache_dir, ensure_programs, ensure_qemu_arm};

/// One fetch at a time within a process; across processes a lock file
/// serializes the download, and the extraction is made atomic by renaming a
/// finished directory into place.
static FETCH: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `program` with `args`, through `sudo -n` when we are not root (the
/// changes to dpkg's and apt's state need it).
fn as_root(program: &str, args: &[&str]) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let mut cmd = if is_root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    };
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// The name of the versioned kernel package `linux-image-arm64` depends on.
fn arm64_kernel_package() -> Result<String, String> {
    let query = || run(Command::new("apt-cache").args(["depends", "linux-image-arm64:arm64"]));
    let deps = match query() {
        Ok(d) if d.contains("Depends") => d,
        _ => {
            let archs =
                run(Command::new("dpkg").arg("--print-foreign-architectures")).unwrap_or_default();
            if !archs.lines().any(|a| a.trim() == "arm64") {
                eprintln!(
                    "qemu-virt: adding the arm64 architecture to dpkg to download Debian's arm64 kernel package"
                );
                run(&mut as_root("dpkg", &["--add-architecture", "arm64"]))?;
            }
            // Always refresh here: an earlier update in this process may
            // predate the arm64 architecture.
            eprintln!("qemu-virt: apt-get update, to find linux-image-arm64:arm64");
            run(&mut as_root("apt-get", &["update"]))?;
            query()?
        }
    };
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|p| p.trim().trim_end_matches(":arm64").to_string())
        .find(|p| p.starts_with("linux-image-") && !p.contains("unsigned"))
        .ok_or_else(|| format!("linux-image-arm64 names no kernel package:\n{deps}"))
}

/// Downloads and unpacks Debian's arm64 kernel package; returns the root
/// of the unpacked tree (holding `boot/` and `usr/lib/linux-image-*/`).
pub fn debian_arm64_kernel() -> Result<PathBuf, String> {
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let base = cache_dir().join("debian-arm64-kernel");
    if let Some(found) = existing(&base) {
        return Ok(found);
    }
    // Other test processes may be here too: one downloads while the rest
    // wait on the lock, then find its result.
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let lock_path = base.join(".lock");
    let _lock = std::fs::File::create(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if let Some(found) = existing(&base) {
        return Ok(found);
    }
    ensure_programs(&[("dpkg-deb", "dpkg"), ("apt-get", "apt")])?;
    let package = arm64_kernel_package()?;
    let final_dir = base.join(&package);
    let work = base.join(format!(".{package}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    eprintln!(
        "qemu-virt: downloading {package}:arm64 with apt-get download (cached in {})",
        base.display()
    );
    run(Command::new("apt-get")
        .current_dir(&work)
        .args(["download", &format!("{package}:arm64")]))?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download produced no .deb")?;
    let tree = work.join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    let _ = std::fs::remove_file(&deb);
    match std::fs::rename(&tree, &final_dir) {
        Ok(()) => {}
        // Another process finished first: use theirs.
        Err(_) if final_dir.is_dir() => {}
        Err(e) => return Err(format!("{}: {e}", final_dir.display())),
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(final_dir)
}

fn existing(base: &Path) -> Option<PathBuf> {
    std::fs::read_dir(base)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("linux-image-"))
                && p.join("boot").is_dir()
        })
}

/// The arm64 kernel Image (`boot/vmlinuz-*`) from the same package.
pub fn debian_arm64_vmlinuz() -> Result<PathBuf, String> {
    let root = debian_arm64_kernel()?;
    std::fs::read_dir(root.join("boot"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| "no boot/vmlinuz-* in the kernel package".into())
}

/// Real board DTBs the tests read.
pub const BOARD_DTBS: &[(&str, &str)] = &[
    ("rpi4", "broadcom/bcm2711-rpi-4-b.dtb"),
    ("zcu102", "xilinx/zynqmp-zcu102-rev1.0.dtb"),
    ("imx8mp-evk", "freescale/imx8mp-evk.dtb"),
];

/// A board's DTB from Debian's kernel package, by the short names in
/// [`BOARD_DTBS`].
pub fn board_dtb(name: &str) -> Result<PathBuf, String> {
    let rel = BOARD_DTBS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .ok_or(format!("unknown board {name}"))?;
    let lib = debian_arm64_kernel()?.join("usr/lib");
    let dir = std::fs::read_dir(&lib)
        .map_err(|e| format!("{}: {e}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("linux-image-"))
        })
        .ok_or("no usr/lib/linux-image-* in the kernel package")?;
    let path = dir.join(rel);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} not in the kernel package", path.display()))
    }
}

/// QEMU virt's own tree for `cpus` CPUs and `mem_mb` MiB, with extra `-M`
/// options (e.g. "iommu=smmuv3"), dumped by QEMU and cached.
pub fn qemu_virt_dtb(cpus: u32, mem_mb: u32, extra_machine_opts: &str) -> Result<PathBuf, String> {
    ensure_qemu_arm()?;
    // Parallel tests ask for the same tree: one dump at a time in this
    // process, and a rename into place that tolerates another process.
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let tag = extra_machine_opts.replace([',', '='], "-");
    let dir = cache_dir().join("qemu-dtb");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!(
        "virt-{cpus}cpu-{mem_mb}m{}{tag}.dtb",
        if tag.is_empty() { "" } else { "-" }
    ));
    if path.is_file() {
        return Ok(path);
    }
    let tmp = dir.join(format!(
        ".dump-{}-{cpus}-{mem_mb}{tag}.dtb",
        std::process::id()
    ));
    let mut machine = String::from("virt,virtualization=on,gic-version=3");
    if !extra_machine_opts.is_empty() {
        machine.push(',');
        machine.push_str(extra_machine_opts);
    }
    machine.push_str(&format!(",dumpdtb={}", tmp.display()));
    run(Command::new("qemu-system-aarch64").args([
        "-M",
        &machine,
        "-cpu",
        "max",
        "-smp",
        &cpus.to_string(),
        "-m",
        &mem_mb.to_string(),
        "-display",
        "none",
    ]))?;
    match std::fs::rename(&tmp, &path) {
        Ok(()) => Ok(path),
        Err(_) if path.is_file() => Ok(path),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Compiles device-tree source with dtc (for tests that write a tree).
pub fn dtc(source: &str, out: &Path) -> Result<(), String> {
    ensure_qemu_arm()?;
    let src = out.with_extension("dts");
    std::fs::write(&src, source).map_err(|e| e.to_string())?;
    run(Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(out)
        .arg(&src))
    .map(|_| ())
}

/// Decompiles a DTB to source with dtc.
pub fn dts_of(dtb: &Path) -> Result<String, String> {
    ensure_qemu_arm()?;
    run(Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts"])
        .arg(dtb))
}
