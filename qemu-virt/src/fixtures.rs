//! Real device trees and kernels for the tests, fetched at test time and
//! cached under `target/cache/` (never committed).
//!
//! Board DTBs come from Debian's own arm64 kernel package (`apt-get
//! download`, which needs the arm64 architecture known to dpkg: added once,
//! with a line saying so). QEMU virt's tree is dumped by QEMU itself with
//! `-machine dumpdtb`. The same kernel package provides the Linux guest
//! ([`debian_arm64_image`]), and Debian's `busybox-static:arm64` its
//! initramfs ([`busybox_static_arm64`]; the archive itself is built by
//! [`crate::linux::initramfs`]).

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

/// `apt-cache ARGS` about an arm64 package; when the answer is not what
/// `answered` expects, the arm64 architecture is added to dpkg (once, said
/// first) and the package lists refreshed, then the question is asked again.
fn apt_cache_arm64(args: &[&str], answered: impl Fn(&str) -> bool) -> Result<String, String> {
    let query = || run(Command::new("apt-cache").args(args));
    match query() {
        Ok(d) if answered(&d) => Ok(d),
        _ => {
            let archs =
                run(Command::new("dpkg").arg("--print-foreign-architectures")).unwrap_or_default();
            if !archs.lines().any(|a| a.trim() == "arm64") {
                eprintln!(
                    "qemu-virt: adding the arm64 architecture to dpkg to download Debian's arm64 packages"
                );
                run(&mut as_root("dpkg", &["--add-architecture", "arm64"]))?;
            }
            // Always refresh here: an earlier update in this process may
            // predate the arm64 architecture.
            eprintln!(
                "qemu-virt: apt-get update, to find {}",
                args.last().copied().unwrap_or("arm64 packages")
            );
            run(&mut as_root("apt-get", &["update"]))?;
            query()
        }
    }
}

/// The name of the versioned kernel package `linux-image-arm64` depends on.
fn arm64_kernel_package() -> Result<String, String> {
    let deps = apt_cache_arm64(&["depends", "linux-image-arm64:arm64"], |d| {
        d.contains("Depends")
    })?;
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

/// Offset and value of the arm64 Image header magic ("ARM\x64").
const ARM64_MAGIC_OFFSET: usize = 0x38;
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";

/// True when `head` (the first 64 bytes or more of a file) is an arm64 Image.
pub fn is_arm64_image(head: &[u8]) -> bool {
    head.get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4) == Some(&ARM64_MAGIC[..])
}

/// The uncompressed arm64 `Image` of Debian's kernel (the package of
/// [`debian_arm64_kernel`]), as hv-arm loads it.
///
/// Decided: the hypervisor loads raw Images only (no decompressor at EL2);
/// the runner decompresses. A gzip'ed `vmlinuz` is gunzipped here, once,
/// into `target/cache/debian-arm64-kernel/Image-<version>`; a `vmlinuz`
/// that is already a raw Image (Debian 12's arm64 packages ship it so,
/// EFI stub included) is returned as it is. Anything else is refused.
pub fn debian_arm64_image() -> Result<PathBuf, String> {
    let vmlinuz = debian_arm64_vmlinuz()?;
    let mut head = [0u8; 64];
    {
        use std::io::Read;
        let mut f =
            std::fs::File::open(&vmlinuz).map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
        f.read_exact(&mut head)
            .map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
    }
    if is_arm64_image(&head) {
        return Ok(vmlinuz);
    }
    if head[..2] != [0x1f, 0x8b] {
        return Err(format!(
            "{} is neither an arm64 Image nor gzip'ed",
            vmlinuz.display()
        ));
    }
    let version = vmlinuz
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_string()
        })
        .unwrap_or_default();
    let base = cache_dir().join("debian-arm64-kernel");
    let out = base.join(format!("Image-{version}"));
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if out.is_file() {
        return Ok(out);
    }
    let _lock = lock_file(&base)?;
    if out.is_file() {
        return Ok(out);
    }
    let tmp = base.join(format!(".Image-{version}.{}", std::process::id()));
    gunzip_image(&vmlinuz, &tmp)?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// Decompresses the gzip'ed arm64 Image `src` into `dst`, checking the
/// result is an arm64 Image.
pub fn gunzip_image(src: &Path, dst: &Path) -> Result<(), String> {
    use std::io::Read;
    let f = std::fs::File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut image = Vec::new();
    flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f))
        .read_to_end(&mut image)
        .map_err(|e| format!("gunzip {}: {e}", src.display()))?;
    if !is_arm64_image(&image) {
        return Err(format!(
            "{} does not decompress to an arm64 Image",
            src.display()
        ));
    }
    std::fs::write(dst, &image).map_err(|e| format!("{}: {e}", dst.display()))
}

/// An exclusive lock on `dir/.lock` (created with `dir`), held until the
/// returned file is dropped: serializes fetches across processes.
fn lock_file(dir: &Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = dir.join(".lock");
    std::fs::File::create(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| format!("{}: {e}", lock_path.display()))
}

/// Debian's statically linked busybox for arm64 (`bin/busybox` of
/// `busybox-static:arm64`, fetched with `apt-get download` and unpacked
/// with `dpkg-deb -x` under `target/cache/busybox-static-arm64/`).
pub fn busybox_static_arm64() -> Result<PathBuf, String> {
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let base = cache_dir().join("busybox-static-arm64");
    let found = |base: &Path| -> Option<PathBuf> {
        std::fs::read_dir(base)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
            })
            .map(|p| p.join("bin/busybox"))
            .find(|p| p.is_file())
    };
    if let Some(bb) = found(&base) {
        return Ok(bb);
    }
    let _lock = lock_file(&base)?;
    if let Some(bb) = found(&base) {
        return Ok(bb);
    }
    ensure_programs(&[("dpkg-deb", "dpkg"), ("apt-get", "apt")])?;
    let spec = "busybox-static:arm64";
    apt_cache_arm64(&["show", "--no-all-versions", spec], |d| {
        d.contains("Package: busybox-static")
    })?;
    let work = base.join(format!(".fetch.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    eprintln!(
        "qemu-virt: downloading {spec} with apt-get download (cached in {})",
        base.display()
    );
    run(Command::new("apt-get")
        .current_dir(&work)
        .args(["download", spec]))?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download produced no .deb")?;
    // Named after the package file (name_version_arch), so a new Debian
    // version lands beside the old one instead of over it.
    let name = deb
        .file_stem()
        .map(|n| n.to_string_lossy().replace('%', "_"))
        .ok_or("a .deb without a name")?;
    let tree = work.join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    if !tree.join("bin/busybox").is_file() {
        return Err(format!("{} holds no bin/busybox", deb.display()));
    }
    let final_dir = base.join(name);
    match std::fs::rename(&tree, &final_dir) {
        Ok(()) => {}
        Err(_) if final_dir.join("bin/busybox").is_file() => {}
        Err(e) => return Err(format!("{}: {e}", final_dir.display())),
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(final_dir.join("bin/busybox"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunzips_an_image_and_refuses_other_payloads() {
        use std::io::Write;
        let dir = cache_dir().join(format!("gunzip-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gz = |payload: &[u8], name: &str| {
            let path = dir.join(name);
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(payload).unwrap();
            std::fs::write(&path, e.finish().unwrap()).unwrap();
            path
        };
        let mut image = vec![0u8; 4096];
        image[ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4].copy_from_slice(ARM64_MAGIC);
        image[100] = 7;
        let out = dir.join("Image");
        gunzip_image(&gz(&image, "ok.gz"), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), image);
        assert!(is_arm64_image(&image));
        let err = gunzip_image(&gz(b"not a kernel", "bad.gz"), &out).unwrap_err();
        assert!(err.contains("does not decompress"), "{err}");
        assert!(gunzip_image(&out, &dir.join("x")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
