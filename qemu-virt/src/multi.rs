//! Booting a scenario (see [`crate::scenario`]): several domains from one
//! device tree, in Xen's dom0less binding.
//!
//! The runner writes the tree: QEMU virt's own (dumped once per CPU count
//! and memory size, and cached) with the scenario's `/chosen` domain nodes
//! merged over it by dtc; QEMU boots with it (`-dtb`) and loads every
//! module file once, at the address its nodes give, with a guest-loader
//! device (the nodes guest-loader would add itself are dropped with
//! `-dtb`, so the tree holds exactly the scenario's). The tree and its
//! source are kept under `target/cache/scenarios/` to look at.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::fixtures::{debian_arm64_image, dtc, dts_of, qemu_virt_dtb};
use crate::host::cache_dir;
use crate::image::Built;
use crate::linux::{self, Mode};
use crate::qemu::{BootModule, CPU_FOR_LINUX, ModuleKind, RunConfig};
use crate::scenario::{self, FileRef, Scenario};

/// The file a [`FileRef`] names: Debian's kernel and the runner's
/// initramfs are fetched or built here.
pub fn resolve(f: &FileRef) -> Result<PathBuf, String> {
    match f {
        FileRef::Debian => debian_arm64_image(),
        FileRef::Busybox => linux::initramfs(Mode::Poweroff),
        FileRef::TestGuest => crate::testguest::build_testguest(),
        FileRef::Path(p) => Ok(p.clone()),
    }
}

/// Sets every domain's `hvtest=` (adding it when missing).
pub fn set_hvtest(s: &mut Scenario, mode: Mode) {
    for d in &mut s.domains {
        let mut words: Vec<String> = d
            .bootargs
            .split_whitespace()
            .filter(|w| !w.starts_with("hvtest="))
            .map(String::from)
            .collect();
        words.push(format!("hvtest={mode}"));
        d.bootargs = words.join(" ");
    }
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// The QEMU run of scenario `s` under hypervisor `hv`. `extra_chosen` is
/// DTS text added inside `/chosen` after the scenario's nodes (tests use it
/// to add malformed domains); `tag` names the written tree.
pub fn prepare(
    s: &Scenario,
    hv: &Built,
    extra_chosen: &str,
    tag: &str,
) -> Result<RunConfig, String> {
    let mut paths: HashMap<FileRef, PathBuf> = HashMap::new();
    for (f, _) in s.module_files() {
        let p = resolve(&f)?;
        paths.insert(f, p);
    }
    let size_of = |f: &FileRef| -> Result<u64, String> {
        let p = paths.get(f).ok_or_else(|| format!("{f}: not resolved"))?;
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let placed = s.place_modules(&size_of)?;
    let base = qemu_virt_dtb(s.machine.cpus, s.machine.memory_mb, "")?;
    let mut dts = dts_of(&base)?;
    dts.push('\n');
    dts.push_str(&s.chosen_dts(&placed));
    if !extra_chosen.is_empty() {
        dts.push_str("\n/ {\n\tchosen {\n");
        dts.push_str(extra_chosen);
        dts.push_str("\n\t};\n};\n");
    }
    let dir = cache_dir().join("scenarios");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    let out = dir.join(format!("{tag}-{}-{n}.dtb", std::process::id()));
    dtc(&dts, &out).map_err(|e| format!("the scenario's device tree: {e}"))?;
    let mut cfg = RunConfig::new(hv.image.clone(), hv.elf.clone());
    cfg.cpus = s.machine.cpus;
    cfg.memory_mb = s.machine.memory_mb;
    cfg.cpu = CPU_FOR_LINUX.into();
    cfg.dtb = Some(out);
    cfg.timeout = Duration::from_secs(300);
    for p in &placed {
        let path = paths
            .get(&p.file)
            .cloned()
            .ok_or_else(|| format!("{}: not resolved", p.file))?;
        let kind = match p.kind {
            // The tree carries the bootargs; guest-loader only loads.
            scenario::ModuleKind::Kernel => ModuleKind::Kernel {
                bootargs: String::new(),
            },
            scenario::ModuleKind::Ramdisk => ModuleKind::Ramdisk,
            scenario::ModuleKind::DeviceTree => ModuleKind::Raw,
        };
        cfg.modules.push(BootModule {
            addr: p.addr,
            path,
            kind,
        });
    }
    Ok(cfg)
}

/// The scenario `cargo run` boots when it is given none.
pub fn default_scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scenarios")
        .join("two-linux.toml")
}
