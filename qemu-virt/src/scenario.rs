//! Multi-domain scenarios: one TOML file describes the machine QEMU
//! emulates and the domains the hypervisor builds at boot (Xen's dom0less
//! model). This module parses and validates the file (every problem is
//! reported before anything boots), places the boot modules in QEMU virt's
//! RAM, and writes the device-tree source fragment that describes the
//! domains in Xen's dom0less binding, to be merged over QEMU's own tree.
//!
//! # The file
//!
//! ```toml
//! # Machine QEMU emulates.
//! [machine]
//! cpus = 4               # -smp, 1..=8
//! memory = "2G"          # -m, at least 512M, a whole number of MiB
//! bootargs = "..."       # optional: the hypervisor's own command line
//!                        # (/chosen xen,xen-bootargs)
//! slice_ms = 10          # optional, 1..=1000: time slice when vCPUs outnumber
//!                        # CPUs; appended to the hypervisor's command line
//!                        # as `sched_slice_ms=N`
//!
//! [[domain]]
//! name = "linux1"        # node name under /chosen: [a-z0-9_-], 1..=15
//!                        # characters, starting with a letter, unique
//! kernel = "debian"      # "debian": the Debian arm64 kernel the runner
//!                        # fetches; else a path (relative paths resolve
//!                        # against the TOML file's directory)
//! ramdisk = "busybox"    # optional: "busybox": the runner's initramfs;
//!                        # else a path
//! dtb = "extra.dtb"      # optional: a partial device tree (a path)
//! bootargs = "console=ttyAMA0"   # optional: the kernel's command line
//! memory = "256M"        # 4M..=3G, a multiple of 2M
//! cpus = 2               # 1..=8 vCPUs (may outnumber the machine's CPUs)
//! vpl011 = true          # optional, default true: a virtual PL011 console
//! on_crash = "restart"   # optional: "destroy" (default) or "restart"
//! pin = [0, 1]           # optional: the physical CPU of each vCPU
//!                        # (one entry per vCPU, each < machine.cpus)
//! passthrough = []       # optional: host DT paths of devices to assign;
//!                        # accepted, but any entry is refused for now
//!                        # (device passthrough needs the SMMU driver)
//! ```
//!
//! Sizes are a string with a `K`, `M` or `G` suffix (binary units, either
//! case) or a plain number of bytes (integer or string). Unknown keys are
//! errors. A file named `debian` or `busybox` is written `./debian`.
//!
//! # What is checked
//!
//! A file that does not parse (TOML syntax, an unknown key, a missing key,
//! a value of the wrong type) yields that one error. A file that parses is
//! then checked as a whole and every problem is reported, each naming the
//! machine or the domain: 1..=16 domains; names valid, unique and not one
//! of /chosen's own properties (`bootargs`, `stdout-path`, `kaslr-seed`,
//! `rng-seed`); memory and CPU bounds; `pin` length and range;
//! `machine.cpus` 1..=8; `machine.memory` 512M..=255G (QEMU virt's RAM
//! window) in whole MiB; the domains' memory plus [`RESERVED_MB`] (the
//! hypervisor's image and heap, the boot modules and QEMU's device tree)
//! within the machine's memory; files that exist ([`FileRef::Path`]);
//! `debian` only as a kernel and `busybox` only as a ramdisk; one file used
//! as one kind of module only; at most [`MAX_MODULES`] distinct files;
//! `on_crash`; `passthrough` empty; `slice_ms` 1..=1000; no NUL in a
//! command line.
//!
//! # Boot modules and their place in RAM
//!
//! Each distinct file is one module, loaded once: domains that name the
//! same file (the same [`FileRef`]) share it, their module nodes giving the
//! same address (Xen shares modules with the same address too).
//! [`Scenario::place_modules`] puts them from [`MODULES_BASE`] upward, each
//! 2 MiB aligned, first fit around the 2 MiB kept for QEMU's device tree
//! at [`dtb_address`], all below the end of RAM; the rest of RAM is the
//! hypervisor's.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::qemu::{GUEST_KERNEL_ADDR, RAM_BASE, dtb_address};

/// At most this many domains.
pub const MAX_DOMAINS: usize = 16;
/// At most this many distinct module files (the hypervisor's module table,
/// `common::modules::MAX_MODULES`).
pub const MAX_MODULES: usize = 32;
/// RAM kept out of the domains' budget: the hypervisor's image (16 MiB at
/// the base of RAM) and heap, the boot modules and QEMU's device tree.
/// The domains' memory plus this must fit in the machine's memory.
pub const RESERVED_MB: u32 = 128;
/// The first address a module may take: the hypervisor's image occupies
/// RAM from its base up to here.
pub const MODULES_BASE: u64 = GUEST_KERNEL_ADDR;
/// Modules start on this alignment (the hypervisor maps 2 MiB blocks).
pub const MODULE_ALIGN: u64 = 2 << 20;
/// Room kept for QEMU's device tree at [`dtb_address`].
pub const DTB_ROOM: u64 = 2 << 20;
/// Room a domain's memory must keep, besides copies of its modules, for
/// the device tree the hypervisor writes for it.
pub const GUEST_DTB_ROOM: u64 = 2 << 20;

const MACHINE_CPUS: std::ops::RangeInclusive<i64> = 1..=8;
const DOMAIN_CPUS: std::ops::RangeInclusive<i64> = 1..=8;
/// QEMU virt's RAM window is 255 GiB.
const MACHINE_MAX_MB: u64 = 255 << 10;
const MACHINE_MIN_MB: u64 = 512;
const DOMAIN_MIN: u64 = 4 << 20;
const DOMAIN_MAX: u64 = 3 << 30;
const DOMAIN_ALIGN: u64 = 2 << 20;
const SLICE_MS: std::ops::RangeInclusive<i64> = 1..=1000;
const NAME_MAX: usize = 15;
/// Properties QEMU (or this module) puts in /chosen: a domain node of the
/// same name would clash with them.
const RESERVED_NAMES: [&str; 4] = ["bootargs", "stdout-path", "kaslr-seed", "rng-seed"];
const PASSTHROUGH_UNSUPPORTED: &str = "device passthrough needs the SMMU driver: not supported yet";

/// A scenario: the machine and its domains, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The machine QEMU emulates.
    pub machine: Machine,
    /// The domains, in file order.
    pub domains: Vec<DomainCfg>,
    /// The directory relative paths were resolved against (the TOML
    /// file's).
    pub dir: PathBuf,
}

/// The machine QEMU emulates (`[machine]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// CPUs (`-smp`), 1..=8.
    pub cpus: u32,
    /// RAM in MiB (`-m`).
    pub memory_mb: u32,
    /// The hypervisor's own command line, as written.
    pub bootargs: Option<String>,
    /// Time slice in ms when vCPUs outnumber CPUs (`sched_slice_ms=N`).
    pub slice_ms: Option<u32>,
}

/// A file a domain boots from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileRef {
    /// `"debian"`: the Debian arm64 kernel the runner fetches.
    Debian,
    /// `"busybox"`: the runner's busybox initramfs.
    Busybox,
    /// Any other file: resolved against the scenario's directory (and
    /// canonical when it exists), so one file is one `FileRef`.
    Path(PathBuf),
}

impl fmt::Display for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileRef::Debian => f.write_str("debian"),
            FileRef::Busybox => f.write_str("busybox"),
            FileRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a domain does when it crashes (`hv,on-crash`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCrash {
    /// The domain is destroyed (the default).
    #[default]
    Destroy,
    /// The domain is rebuilt from its modules and started again.
    Restart,
}

impl OnCrash {
    /// The value as written in the file and in the device tree.
    pub fn as_str(self) -> &'static str {
        match self {
            OnCrash::Destroy => "destroy",
            OnCrash::Restart => "restart",
        }
    }
}

/// One domain (`[[domain]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainCfg {
    /// Its node name under /chosen.
    pub name: String,
    /// Its kernel ([`FileRef::Debian`] or a path).
    pub kernel: FileRef,
    /// Its initramfs ([`FileRef::Busybox`] or a path).
    pub ramdisk: Option<FileRef>,
    /// A partial device tree (a path).
    pub dtb: Option<FileRef>,
    /// The kernel's command line (empty when not given).
    pub bootargs: String,
    /// RAM in MiB: 4..=3072, even.
    pub memory_mb: u32,
    /// vCPUs, 1..=8.
    pub cpus: u32,
    /// A virtual PL011 console.
    pub vpl011: bool,
    /// What happens when it crashes.
    pub on_crash: OnCrash,
    /// The physical CPU of each vCPU.
    pub pin: Option<Vec<u32>>,
    /// Host device-tree paths of devices to assign (always empty in a
    /// validated scenario, for now).
    pub passthrough: Vec<String>,
}

impl DomainCfg {
    /// Its module files with their kinds: kernel, then ramdisk, then
    /// device tree.
    pub fn modules(&self) -> impl Iterator<Item = (&FileRef, ModuleKind)> {
        std::iter::once((&self.kernel, ModuleKind::Kernel))
            .chain(self.ramdisk.iter().map(|r| (r, ModuleKind::Ramdisk)))
            .chain(self.dtb.iter().map(|d| (d, ModuleKind::DeviceTree)))
    }
}

/// What a boot module is to the hypervisor (its `multiboot,*` compatible).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleKind {
    /// `multiboot,kernel`.
    Kernel,
    /// `multiboot,ramdisk`.
    Ramdisk,
    /// `multiboot,device-tree`.
    DeviceTree,
}

impl ModuleKind {
    /// The specific compatible string.
    pub fn compatible(self) -> &'static str {
        match self {
            ModuleKind::Kernel => "multiboot,kernel",
            ModuleKind::Ramdisk => "multiboot,ramdisk",
            ModuleKind::DeviceTree => "multiboot,device-tree",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            ModuleKind::Kernel => "kernel",
            ModuleKind::Ramdisk => "ramdisk",
            ModuleKind::DeviceTree => "dtb",
        }
    }
}

/// A module file placed in RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The file.
    pub file: FileRef,
    /// What it is.
    pub kind: ModuleKind,
    /// Physical address of its first byte (2 MiB aligned).
    pub addr: u64,
    /// Its size in bytes.
    pub size: u64,
}

impl Scenario {
    /// Parses and validates a scenario; relative paths resolve against
    /// `dir`. A file that does not parse gives one error; one that parses
    /// gives every problem found, each naming the machine or the domain.
    pub fn from_toml(text: &str, dir: &Path) -> Result<Scenario, Vec<String>> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        validate(raw, dir)
    }

    /// Reads, parses and validates the scenario file at `path` (relative
    /// paths in it resolve against its directory). Every error starts with
    /// `path`.
    pub fn load(path: &Path) -> Result<Scenario, Vec<String>> {
        let at = |e: String| format!("{}: {e}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| vec![at(e.to_string())])?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Scenario::from_toml(&text, &dir).map_err(|es| es.into_iter().map(at).collect())
    }

    /// The hypervisor's command line: `machine.bootargs`, then
    /// `sched_slice_ms=N` when `slice_ms` is set.
    pub fn hv_bootargs(&self) -> String {
        let slice = self.machine.slice_ms.map(|n| format!("sched_slice_ms={n}"));
        [self.machine.bootargs.clone(), slice]
            .into_iter()
            .flatten()
            .filter(|s| !s.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The distinct module files with their kinds, in order of first use
    /// (domain by domain: kernel, ramdisk, device tree).
    pub fn module_files(&self) -> Vec<(FileRef, ModuleKind)> {
        let mut out: Vec<(FileRef, ModuleKind)> = Vec::new();
        for d in &self.domains {
            for (f, kind) in d.modules() {
                if !out.iter().any(|(g, _)| g == f) {
                    out.push((f.clone(), kind));
                }
            }
        }
        out
    }

    /// Places the distinct module files (identical FileRef used by several
    /// domains = ONE module, loaded once; Xen shares modules with the same
    /// address too) given each file's size; returns the load address of
    /// every distinct file, or an error if they do not fit.
    ///
    /// Modules go from [`MODULES_BASE`] upward in order of first use, each
    /// 2 MiB aligned, into the first gap that holds them: below or above
    /// the [`DTB_ROOM`] kept at [`dtb_address`], below the end of RAM. An
    /// empty file is an error (the hypervisor refuses empty modules), and
    /// so is a domain whose modules and [`GUEST_DTB_ROOM`] exceed its
    /// memory (the hypervisor refuses it), and a set of modules so large
    /// that the RAM left (without the hypervisor's 16 MiB, QEMU's device
    /// tree and the modules) is less than the domains' memory.
    pub fn place_modules(
        &self,
        size_of: &dyn Fn(&FileRef) -> Result<u64, String>,
    ) -> Result<Vec<Placed>, String> {
        let ram_end = RAM_BASE + (u64::from(self.machine.memory_mb) << 20);
        let dtb = dtb_address(self.machine.memory_mb);
        // Free gaps [start, end), in address order.
        let mut gaps: Vec<(u64, u64)> = [
            (MODULES_BASE, dtb.min(ram_end)),
            ((dtb + DTB_ROOM).max(MODULES_BASE), ram_end),
        ]
        .into_iter()
        .filter(|(s, e)| s < e)
        .collect();
        let mut placed = Vec::new();
        let mut taken = 0u64;
        for (file, kind) in self.module_files() {
            let size = size_of(&file).map_err(|e| format!("{} {file}: {e}", kind.noun()))?;
            if size == 0 {
                return Err(format!("{} {file}: the file is empty", kind.noun()));
            }
            let room = size
                .checked_next_multiple_of(MODULE_ALIGN)
                .ok_or_else(|| format!("{} {file}: {size} bytes is too large", kind.noun()))?;
            let Some(gap) = gaps.iter_mut().find(|(s, e)| e - s >= room) else {
                let free = gaps
                    .iter()
                    .map(|(s, e)| format!("{s:#x}-{e:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!(
                    "{} {file} ({size} bytes) does not fit in the RAM left for modules \
                     (free: {}; {} MiB of RAM, QEMU's device tree at {dtb:#x})",
                    kind.noun(),
                    if free.is_empty() { "none" } else { &free },
                    self.machine.memory_mb,
                ));
            };
            let addr = gap.0;
            gap.0 += room;
            taken += room;
            placed.push(Placed {
                file,
                kind,
                addr,
                size,
            });
        }
        // The hypervisor copies a domain's modules into its memory and
        // wants 2 MiB more there for the device tree it writes
        // (common::dom0less, GUEST_DTB_ROOM).
        for d in &self.domains {
            let modules: u64 = d
                .modules()
                .filter_map(|(f, _)| placed.iter().find(|p: &&Placed| p.file == *f))
                .map(|p| p.size)
                .sum();
            if modules + GUEST_DTB_ROOM > u64::from(d.memory_mb) << 20 {
                return Err(format!(
                    "domain '{}': its modules ({modules} bytes) and {} MiB for its device tree \
                     do not fit in its {} MiB of memory",
                    d.name,
                    GUEST_DTB_ROOM >> 20,
                    d.memory_mb
                ));
            }
        }
        let domains: u64 = self
            .domains
            .iter()
            .map(|d| u64::from(d.memory_mb) << 20)
            .sum();
        let left =
            (ram_end - RAM_BASE).saturating_sub((MODULES_BASE - RAM_BASE) + DTB_ROOM + taken);
        if left < domains {
            return Err(format!(
                "the modules take {} MiB: the {} MiB of RAM left cannot hold the domains' {} MiB",
                taken >> 20,
                left >> 20,
                domains >> 20
            ));
        }
        Ok(placed)
    }

    /// The DTS text to merge over QEMU's own tree: `/ { chosen { ... }; };`
    /// with `xen,xen-bootargs` (when [`Scenario::hv_bootargs`] is not
    /// empty) and one `xen,domain` node per domain, named after it, with
    /// `module@ADDR` children (the shared address of a shared file), the
    /// kernel's `bootargs`, and a `vcpuN` node per vCPU when pinned.
    ///
    /// Panics if a module file of the scenario is missing from `placed`
    /// (give it what [`Scenario::place_modules`] returned).
    pub fn chosen_dts(&self, placed: &[Placed]) -> String {
        let mut s = String::from("/ {\n\tchosen {\n");
        let hv = self.hv_bootargs();
        if !hv.is_empty() {
            let _ = writeln!(s, "\t\txen,xen-bootargs = {};", dts_string(&hv));
        }
        for d in &self.domains {
            if !s.ends_with("{\n") {
                s.push('\n');
            }
            let _ = writeln!(s, "\t\t{} {{", d.name);
            s.push_str("\t\t\tcompatible = \"xen,domain\";\n");
            s.push_str("\t\t\t#address-cells = <2>;\n\t\t\t#size-cells = <2>;\n");
            let kib = u64::from(d.memory_mb) << 10;
            let _ = writeln!(s, "\t\t\tmemory = <{} {}>;", kib >> 32, kib & 0xffff_ffff);
            let _ = writeln!(s, "\t\t\tcpus = <{}>;", d.cpus);
            if d.vpl011 {
                s.push_str("\t\t\tvpl011;\n");
            }
            let _ = writeln!(s, "\t\t\thv,on-crash = \"{}\";", d.on_crash.as_str());
            for (file, kind) in d.modules() {
                let p = placed
                    .iter()
                    .find(|p| p.file == *file)
                    .unwrap_or_else(|| panic!("module {file} of domain '{}' not placed", d.name));
                let _ = writeln!(s, "\n\t\t\tmodule@{:x} {{", p.addr);
                let _ = writeln!(
                    s,
                    "\t\t\t\tcompatible = \"{}\", \"multiboot,module\";",
                    kind.compatible()
                );
                let _ = writeln!(
                    s,
                    "\t\t\t\treg = <{:#x} {:#x} {:#x} {:#x}>;",
                    p.addr >> 32,
                    p.addr & 0xffff_ffff,
                    p.size >> 32,
                    p.size & 0xffff_ffff
                );
                if kind == ModuleKind::Kernel && !d.bootargs.is_empty() {
                    let _ = writeln!(s, "\t\t\t\tbootargs = {};", dts_string(&d.bootargs));
                }
                s.push_str("\t\t\t};\n");
            }
            for (i, cpu) in d.pin.iter().flatten().enumerate() {
                let _ = writeln!(s, "\n\t\t\tvcpu{i} {{");
                s.push_str("\t\t\t\tcompatible = \"xen,vcpu\";\n");
                let _ = writeln!(s, "\t\t\t\tid = <{i}>;");
                let _ = writeln!(s, "\t\t\t\thard-affinity = <{cpu}>;");
                s.push_str("\t\t\t};\n");
            }
            s.push_str("\t\t};\n");
        }
        s.push_str("\t};\n};\n");
        s
    }
}

/// A DTS string literal: quotes and backslashes escaped, control and
/// non-ASCII bytes as `\xNN`, so the text is plain ASCII.
fn dts_string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for &b in v.as_bytes() {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

// ---- The file as written ------------------------------------------------

/// Numbers are read as `i64` and strings as strings, so that out-of-range
/// and misspelt values are validation errors (all reported together)
/// rather than parse errors (the first only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    machine: RawMachine,
    #[serde(default)]
    domain: Vec<RawDomain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    cpus: i64,
    memory: RawSize,
    bootargs: Option<String>,
    slice_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: String,
    kernel: String,
    ramdisk: Option<String>,
    dtb: Option<String>,
    bootargs: Option<String>,
    memory: RawSize,
    cpus: i64,
    vpl011: Option<bool>,
    on_crash: Option<String>,
    pin: Option<Vec<i64>>,
    passthrough: Option<Vec<String>>,
}

/// A size as written: an integer or a string, read by [`RawSize::bytes`].
enum RawSize {
    Int(i64),
    Str(String),
}

impl fmt::Display for RawSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawSize::Int(n) => write!(f, "{n}"),
            RawSize::Str(s) => f.write_str(s),
        }
    }
}

impl RawSize {
    /// Bytes: a plain number, or one with a K, M or G suffix (binary).
    fn bytes(&self) -> Option<u64> {
        match self {
            RawSize::Int(n) => u64::try_from(*n).ok(),
            RawSize::Str(s) => {
                let s = s.trim();
                let (digits, shift) = match s.as_bytes().last()? {
                    b'K' | b'k' => (&s[..s.len() - 1], 10),
                    b'M' | b'm' => (&s[..s.len() - 1], 20),
                    b'G' | b'g' => (&s[..s.len() - 1], 30),
                    _ => (s, 0),
                };
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse::<u64>().ok()?.checked_mul(1 << shift)
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"256M\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---- Validation -----------------------------------------------------------

fn range_text(r: &std::ops::RangeInclusive<i64>) -> String {
    format!("{}..={}", r.start(), r.end())
}

fn valid_name(n: &str) -> bool {
    (1..=NAME_MAX).contains(&n.len())
        && n.as_bytes()[0].is_ascii_lowercase()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Resolves a file name of kind `kind`: `debian` (kernels only), `busybox`
/// (ramdisks only) or a path, which must name an existing file.
fn file_ref(v: &str, kind: ModuleKind, dir: &Path, err: &mut impl FnMut(String)) -> FileRef {
    let noun = kind.noun();
    match v {
        "debian" => {
            if kind != ModuleKind::Kernel {
                err(format!(
                    "{noun} \"debian\": the Debian kernel can only be a kernel (write ./debian for a file)"
                ));
            }
            FileRef::Debian
        }
        "busybox" => {
            if kind != ModuleKind::Ramdisk {
                err(format!(
                    "{noun} \"busybox\": the busybox initramfs can only be a ramdisk (write ./busybox for a file)"
                ));
            }
            FileRef::Busybox
        }
        "" => {
            err(format!("{noun}: empty file name"));
            FileRef::Path(PathBuf::new())
        }
        _ => {
            let p = dir.join(v);
            match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => FileRef::Path(std::fs::canonicalize(&p).unwrap_or(p)),
                Ok(_) => {
                    err(format!("{noun} {}: not a regular file", p.display()));
                    FileRef::Path(p)
                }
                Err(e) => {
                    err(format!("{noun} {}: {e}", p.display()));
                    FileRef::Path(p)
                }
            }
        }
    }
}

fn validate(raw: RawScenario, dir: &Path) -> Result<Scenario, Vec<String>> {
    let mut errors: Vec<String> = Vec::new();

    // The machine.
    let m = &raw.machine;
    let mut merr = |e: String| errors.push(format!("machine: {e}"));
    if !MACHINE_CPUS.contains(&m.cpus) {
        merr(format!(
            "cpus {}: must be {}",
            m.cpus,
            range_text(&MACHINE_CPUS)
        ));
    }
    let machine_mb = match m.memory.bytes() {
        Some(b) if b % (1 << 20) == 0 && (MACHINE_MIN_MB..=MACHINE_MAX_MB).contains(&(b >> 20)) => {
            Some((b >> 20) as u32)
        }
        Some(_) => {
            merr(format!(
                "memory {}: must be 512M..=255G and a whole number of MiB",
                m.memory
            ));
            None
        }
        None => {
            merr(format!(
                "memory {:?}: not a size (a number of bytes, or one with a K, M or G suffix)",
                m.memory.to_string()
            ));
            None
        }
    };
    if let Some(n) = m.slice_ms
        && !SLICE_MS.contains(&n)
    {
        merr(format!("slice_ms {n}: must be {}", range_text(&SLICE_MS)));
    }
    if m.bootargs.as_deref().is_some_and(|b| b.contains('\0')) {
        merr("bootargs: contains a NUL character".into());
    }

    // The domains.
    let n = raw.domain.len();
    if n == 0 {
        errors.push("no [[domain]]: a scenario needs at least 1".into());
    } else if n > MAX_DOMAINS {
        errors.push(format!("{n} domains: at most {MAX_DOMAINS}"));
    }
    let mut first_use: HashMap<&str, usize> = HashMap::new();
    let mut domains = Vec::with_capacity(n);
    let mut memory_sum: Option<u64> = Some(0);
    for (i, d) in raw.domain.iter().enumerate() {
        let label = format!("domain '{}'", d.name);
        let mut derr = |e: String| errors.push(format!("{label}: {e}"));
        if !valid_name(&d.name) {
            derr(format!(
                "name: must be 1..={NAME_MAX} characters of a-z, 0-9, _ and -, starting with a letter"
            ));
        } else if RESERVED_NAMES.contains(&d.name.as_str()) {
            derr("name: reserved (a property of /chosen has it)".into());
        }
        if let Some(&j) = first_use.get(d.name.as_str()) {
            derr(format!(
                "name: used by domain {} already (this is domain {})",
                j + 1,
                i + 1
            ));
        } else {
            first_use.insert(&d.name, i);
        }
        let kernel = file_ref(&d.kernel, ModuleKind::Kernel, dir, &mut derr);
        let ramdisk = d
            .ramdisk
            .as_deref()
            .map(|r| file_ref(r, ModuleKind::Ramdisk, dir, &mut derr));
        let dtb = d
            .dtb
            .as_deref()
            .map(|r| file_ref(r, ModuleKind::DeviceTree, dir, &mut derr));
        let memory_mb = match d.memory.bytes() {
            Some(b) if (DOMAIN_MIN..=DOMAIN_MAX).contains(&b) && b % DOMAIN_ALIGN == 0 => {
                (b >> 20) as u32
            }
            Some(_) => {
                derr(format!(
                    "memory {}: must be 4M..=3G and a multiple of 2M",
                    d.memory
                ));
                memory_sum = None;
                0
            }
            None => {
                derr(format!(
                    "memory {:?}: not a size (a number of bytes, or one with a K, M or G suffix)",
                    d.memory.to_string()
                ));
                memory_sum = None;
                0
            }
        };
        if let Some(s) = memory_sum.as_mut() {
            *s += u64::from(memory_mb);
        }
        if !DOMAIN_CPUS.contains(&d.cpus) {
            derr(format!(
                "cpus {}: must be {}",
                d.cpus,
                range_text(&DOMAIN_CPUS)
            ));
        }
        let on_crash = match d.on_crash.as_deref() {
            None | Some("destroy") => OnCrash::Destroy,
            Some("restart") => OnCrash::Restart,
            Some(other) => {
                derr(format!(
                    "on_crash {other:?}: must be \"destroy\" or \"restart\""
                ));
                OnCrash::Destroy
            }
        };
        if let Some(pin) = &d.pin {
            if pin.len() as i64 != d.cpus {
                derr(format!(
                    "pin has {} entries: must have one per vCPU ({})",
                    pin.len(),
                    d.cpus
                ));
            }
            for (v, &c) in pin.iter().enumerate() {
                // Against a valid CPU count only (a bad one is reported).
                if MACHINE_CPUS.contains(&m.cpus) && (c < 0 || c >= m.cpus) {
                    derr(format!(
                        "pin: vCPU {v} on CPU {c}: the machine's CPUs are 0..={}",
                        m.cpus - 1
                    ));
                }
            }
        }
        let passthrough = d.passthrough.clone().unwrap_or_default();
        if !passthrough.is_empty() {
            derr(format!(
                "passthrough {:?}: {PASSTHROUGH_UNSUPPORTED}",
                passthrough
            ));
        }
        let bootargs = d.bootargs.clone().unwrap_or_default();
        if bootargs.contains('\0') {
            derr("bootargs: contains a NUL character".into());
        }
        domains.push(DomainCfg {
            name: d.name.clone(),
            kernel,
            ramdisk,
            dtb,
            bootargs,
            memory_mb,
            cpus: u32::try_from(d.cpus).unwrap_or(0),
            vpl011: d.vpl011.unwrap_or(true),
            on_crash,
            pin: d
                .pin
                .as_ref()
                .map(|p| p.iter().map(|&c| u32::try_from(c).unwrap_or(0)).collect()),
            passthrough,
        });
    }

    // The memory budget (only when every size is known).
    if let (Some(total), Some(machine)) = (memory_sum, machine_mb)
        && total + u64::from(RESERVED_MB) > u64::from(machine)
    {
        errors.push(format!(
            "the domains' memory ({total} MiB) plus {RESERVED_MB} MiB for the hypervisor, \
             its modules and QEMU's device tree exceeds the machine's {machine} MiB"
        ));
    }

    // The modules: one kind per file, and a bounded number of files.
    let mut kinds: Vec<(&FileRef, ModuleKind, &str)> = Vec::new();
    for d in &domains {
        for (f, kind) in d.modules() {
            match kinds.iter().find(|(g, _, _)| *g == f) {
                // (debian and busybox out of place are reported above.)
                Some((FileRef::Path(_), k, first)) if *k != kind => errors.push(format!(
                    "domain '{}': {} {f}: domain '{first}' uses this file as its {}; \
                     a file is one kind of module",
                    d.name,
                    kind.noun(),
                    k.noun()
                )),
                Some(_) => {}
                None => kinds.push((f, kind, &d.name)),
            }
        }
    }
    if kinds.len() > MAX_MODULES {
        errors.push(format!(
            "{} distinct module files: the hypervisor takes at most {MAX_MODULES}",
            kinds.len()
        ));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Scenario {
        machine: Machine {
            cpus: m.cpus as u32,
            memory_mb: machine_mb.unwrap_or(0),
            bootargs: m.bootargs.clone(),
            slice_ms: m.slice_ms.map(|n| n as u32),
        },
        domains,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MIB: u64 = 1 << 20;

    /// A fresh directory under the system's temporary directory.
    fn temp_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "hv-scenario-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
    }

    const MACHINE: &str = "[machine]\ncpus = 4\nmemory = \"2G\"\n";

    fn domain(name: &str, extra: &str) -> String {
        format!(
            "[[domain]]\nname = \"{name}\"\nkernel = \"debian\"\nramdisk = \"busybox\"\n\
             memory = \"256M\"\ncpus = 2\n{extra}\n"
        )
    }

    fn parse(text: &str) -> Result<Scenario, Vec<String>> {
        Scenario::from_toml(text, Path::new("/nonexistent-dir"))
    }

    /// The errors of `text`, which must be refused.
    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(s) => panic!("accepted: {s:#?}\n{text}"),
            Err(e) => e,
        }
    }

    /// `text` is refused with exactly one error, containing `want`.
    fn one_error(text: &str, want: &str) {
        let e = errors(text);
        assert!(
            e.len() == 1 && e[0].contains(want),
            "want one error containing {want:?}, got {e:#?}\n{text}"
        );
    }

    #[test]
    fn a_full_domain_reads_back() {
        let d = temp_dir();
        std::fs::write(d.join("k"), b"k").unwrap();
        std::fs::write(d.join("part.dtb"), b"d").unwrap();
        let text = "[machine]\ncpus = 4\nmemory = 2147483648\nbootargs = \"hv.console_timestamps=1\"\n\
                    slice_ms = 5\n\
                    [[domain]]\nname = \"a-1_b\"\nkernel = \"k\"\ndtb = \"part.dtb\"\n\
                    bootargs = \"quiet\"\nmemory = \"4096K\"\ncpus = 3\nvpl011 = false\n\
                    on_crash = \"restart\"\npin = [3, 0, 3]\npassthrough = []\n";
        let s = Scenario::from_toml(text, &d).unwrap();
        assert_eq!(
            s.machine,
            Machine {
                cpus: 4,
                memory_mb: 2048,
                bootargs: Some("hv.console_timestamps=1".into()),
                slice_ms: Some(5),
            }
        );
        let k = std::fs::canonicalize(d.join("k")).unwrap();
        let dtb = std::fs::canonicalize(d.join("part.dtb")).unwrap();
        assert_eq!(
            s.domains,
            vec![DomainCfg {
                name: "a-1_b".into(),
                kernel: FileRef::Path(k),
                ramdisk: None,
                dtb: Some(FileRef::Path(dtb)),
                bootargs: "quiet".into(),
                memory_mb: 4,
                cpus: 3,
                vpl011: false,
                on_crash: OnCrash::Restart,
                pin: Some(vec![3, 0, 3]),
                passthrough: vec![],
            }]
        );
        assert_eq!(s.dir, d);
        assert_eq!(s.hv_bootargs(), "hv.console_timestamps=1 sched_slice_ms=5");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn defaults_and_size_spellings() {
        let s = parse(&format!("{MACHINE}{}", domain("x", ""))).unwrap();
        let d = &s.domains[0];
        assert_eq!(
            (d.vpl011, d.on_crash, &d.pin, d.bootargs.as_str(), &d.dtb),
            (true, OnCrash::Destroy, &None, "", &None)
        );
        assert_eq!(s.hv_bootargs(), "");
        let size = |s: &str| RawSize::Str(s.into()).bytes();
        assert_eq!(size("2G"), Some(2 << 30));
        assert_eq!(size("256m"), Some(256 * MIB));
        assert_eq!(size("4k"), Some(4096));
        assert_eq!(size("1048576"), Some(MIB));
        for bad in ["", "G", "1.5G", "-1M", "2GB", "2 G", "99999999999999G"] {
            assert_eq!(size(bad), None, "{bad}");
        }
        // Slice alone on the hypervisor's command line.
        let text = format!(
            "[machine]\ncpus = 1\nmemory = \"1G\"\nslice_ms = 10\n{}",
            domain("x", "")
        );
        assert_eq!(parse(&text).unwrap().hv_bootargs(), "sched_slice_ms=10");
    }

    #[test]
    fn parse_errors_are_reported_alone() {
        for (text, want) in [
            (
                format!("{MACHINE}colour = 1\n{}", domain("x", "")),
                "unknown field `colour`",
            ),
            (
                format!("{MACHINE}{}", domain("x", "colour = 1")),
                "unknown field `colour`",
            ),
            (
                format!("[machine]\ncpus = 4\n{}", domain("x", "")),
                "missing field `memory`",
            ),
            (domain("x", ""), "missing field `machine`"),
            (
                format!("{MACHINE}{}", domain("x", "vpl011 = \"yes\"")),
                "invalid type",
            ),
            (
                format!("{MACHINE}{}", domain("x", "cpus = 3")),
                "duplicate key",
            ),
            ("[machine\n".into(), "TOML parse error"),
        ] {
            one_error(&text, want);
        }
        one_error(
            "[machine]\ncpus = 4\nmemory = true\n",
            "a size such as \"256M\" or a number of bytes",
        );
    }

    /// Every validation error, one scenario each: each is found, alone,
    /// and names what it is about.
    #[test]
    fn every_validation_error() {
        let d = |extra: &str| domain("linux2", extra);
        let m = |extra: &str| format!("[machine]\ncpus = 4\nmemory = \"2G\"\n{extra}\n");
        let many = |n: usize| {
            (0..n)
                .map(|i| {
                    domain(&format!("d{i}"), "memory = \"4M\"").replace("memory = \"256M\"\n", "")
                })
                .collect::<String>()
        };
        let cases: Vec<(String, &str)> = vec![
            (m(""), "no [[domain]]: a scenario needs at least 1"),
            (format!("{}{}", m(""), many(17)), "17 domains: at most 16"),
            (
                format!("{}{}", m(""), domain("Linux", "")),
                "domain 'Linux': name: must be 1..=15",
            ),
            (
                format!("{}{}", m(""), domain("1x", "")),
                "domain '1x': name: must be",
            ),
            (
                format!("{}{}", m(""), domain("", "")),
                "domain '': name: must be",
            ),
            (
                format!("{}{}", m(""), domain("a23456789012345x", "")),
                "name: must be 1..=15",
            ),
            (
                format!("{}{}", m(""), domain("a.b", "")),
                "domain 'a.b': name: must be",
            ),
            (
                format!("{}{}", m(""), domain("bootargs", "")),
                "domain 'bootargs': name: reserved",
            ),
            (
                format!("{}{}{}", m(""), domain("x", ""), domain("x", "")),
                "domain 'x': name: used by domain 1 already (this is domain 2)",
            ),
            (
                format!(
                    "{}{}",
                    m(""),
                    d("memory = \"3M\"").replace("memory = \"256M\"\n", "")
                ),
                "domain 'linux2': memory 3M: must be 4M..=3G and a multiple of 2M",
            ),
            (
                format!(
                    "{}{}",
                    m(""),
                    d("memory = \"5M\"").replace("memory = \"256M\"\n", "")
                ),
                "domain 'linux2': memory 5M: must be 4M..=3G and a multiple of 2M",
            ),
            (
                format!(
                    "[machine]\ncpus = 4\nmemory = \"8G\"\n{}",
                    d("memory = \"3074M\"").replace("memory = \"256M\"\n", "")
                ),
                "memory 3074M: must be 4M..=3G",
            ),
            (
                format!(
                    "{}{}",
                    m(""),
                    d("memory = \"lots\"").replace("memory = \"256M\"\n", "")
                ),
                "domain 'linux2': memory \"lots\": not a size",
            ),
            (
                format!("{}{}", m(""), d("cpus = 0").replace("cpus = 2\n", "")),
                "domain 'linux2': cpus 0: must be 1..=8",
            ),
            (
                format!("{}{}", m(""), d("cpus = 9").replace("cpus = 2\n", "")),
                "domain 'linux2': cpus 9: must be 1..=8",
            ),
            (
                format!("{}{}", m(""), d("pin = [0]")),
                "domain 'linux2': pin has 1 entries: must have one per vCPU (2)",
            ),
            (
                format!("{}{}", m(""), d("pin = [0, 4]")),
                "domain 'linux2': pin: vCPU 1 on CPU 4: the machine's CPUs are 0..=3",
            ),
            (
                format!("{}{}", m(""), d("pin = [-1, 0]")),
                "pin: vCPU 0 on CPU -1",
            ),
            (
                format!("[machine]\ncpus = 0\nmemory = \"2G\"\n{}", d("")),
                "machine: cpus 0: must be 1..=8",
            ),
            (
                format!("[machine]\ncpus = 9\nmemory = \"2G\"\n{}", d("")),
                "machine: cpus 9: must be 1..=8",
            ),
            (
                format!(
                    "[machine]\ncpus = 4\nmemory = \"511M\"\n{}",
                    d("memory = \"4M\"").replace("memory = \"256M\"\n", "")
                ),
                "machine: memory 511M: must be 512M..=255G",
            ),
            (
                format!("[machine]\ncpus = 4\nmemory = \"256G\"\n{}", d("")),
                "machine: memory 256G: must be 512M..=255G",
            ),
            (
                format!("[machine]\ncpus = 4\nmemory = 1073741825\n{}", d("")),
                "machine: memory 1073741825: must be 512M..=255G and a whole number of MiB",
            ),
            (
                format!("[machine]\ncpus = 4\nmemory = \"1T\"\n{}", d("")),
                "machine: memory \"1T\": not a size",
            ),
            (
                format!(
                    "[machine]\ncpus = 4\nmemory = \"1G\"\n{}{}",
                    domain("a", ""),
                    domain("b", "memory = \"642M\"").replace("memory = \"256M\"\n", "")
                ),
                "the domains' memory (898 MiB) plus 128 MiB for the hypervisor, its modules and \
                 QEMU's device tree exceeds the machine's 1024 MiB",
            ),
            (
                format!(
                    "{}{}",
                    m(""),
                    d("").replace("\"debian\"", "\"no-such-kernel\"")
                ),
                "domain 'linux2': kernel /nonexistent-dir/no-such-kernel: No such file",
            ),
            (
                format!("{}{}", m(""), d("dtb = \"x.dtb\"")),
                "domain 'linux2': dtb /nonexistent-dir/x.dtb: No such file",
            ),
            (
                format!("{}{}", m(""), d("").replace("\"debian\"", "\"\"")),
                "domain 'linux2': kernel: empty file name",
            ),
            (
                format!("{}{}", m(""), d("").replace("\"debian\"", "\"busybox\"")),
                "domain 'linux2': kernel \"busybox\": the busybox initramfs can only be a ramdisk",
            ),
            (
                format!("{}{}", m(""), d("").replace("\"busybox\"", "\"debian\"")),
                "domain 'linux2': ramdisk \"debian\": the Debian kernel can only be a kernel",
            ),
            (
                format!("{}{}", m(""), d("on_crash = \"reboot\"")),
                "domain 'linux2': on_crash \"reboot\": must be \"destroy\" or \"restart\"",
            ),
            (
                format!("{}{}", m(""), d("passthrough = [\"/pl061@9030000\"]")),
                "domain 'linux2': passthrough [\"/pl061@9030000\"]: device passthrough needs the \
                 SMMU driver: not supported yet",
            ),
            (
                m("slice_ms = 0") + &d(""),
                "machine: slice_ms 0: must be 1..=1000",
            ),
            (
                m("slice_ms = 1001") + &d(""),
                "machine: slice_ms 1001: must be 1..=1000",
            ),
            (
                m("bootargs = \"a\\u0000b\"") + &d(""),
                "machine: bootargs: contains a NUL",
            ),
            (
                m("") + &d("bootargs = \"a\\u0000b\""),
                "domain 'linux2': bootargs: contains a NUL",
            ),
        ];
        for (text, want) in &cases {
            one_error(text, want);
        }
    }

    #[test]
    fn files_are_one_kind_and_at_most_32() {
        let dir = temp_dir();
        let mut text = String::from("[machine]\ncpus = 8\nmemory = \"4G\"\n");
        for i in 0..11 {
            for f in ["k", "r", "t"] {
                std::fs::write(dir.join(format!("{f}{i}")), b"x").unwrap();
            }
            text.push_str(&format!(
                "[[domain]]\nname = \"d{i}\"\nkernel = \"k{i}\"\nramdisk = \"r{i}\"\n\
                 dtb = \"t{i}\"\nmemory = \"4M\"\ncpus = 1\n"
            ));
        }
        let e = Scenario::from_toml(&text, &dir).unwrap_err();
        assert_eq!(
            e,
            ["33 distinct module files: the hypervisor takes at most 32"]
        );
        // 32 are fine; the same file twice counts once, whatever its spelling.
        let text = text.replace("dtb = \"t10\"", "dtb = \"./t0\"");
        let s = Scenario::from_toml(&text, &dir).unwrap();
        assert_eq!(s.module_files().len(), 32);
        // One file as two kinds.
        let text = format!(
            "{MACHINE}[[domain]]\nname = \"a\"\nkernel = \"k0\"\nmemory = \"4M\"\ncpus = 1\n\
             [[domain]]\nname = \"b\"\nkernel = \"k1\"\nramdisk = \"../{}/k0\"\nmemory = \"4M\"\ncpus = 1\n",
            dir.file_name().unwrap().to_str().unwrap()
        );
        let e = Scenario::from_toml(&text, &dir).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("domain 'b': ramdisk /")
                && e[0].ends_with(
                    "k0: domain 'a' uses this file as its kernel; a file is one kind of module"
                ),
            "{e:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn all_errors_are_collected() {
        let text = "[machine]\ncpus = 0\nmemory = \"100M\"\nslice_ms = 0\n\
                    [[domain]]\nname = \"Bad\"\nkernel = \"busybox\"\nmemory = \"1M\"\ncpus = 0\n\
                    on_crash = \"x\"\npassthrough = [\"/a\"]\n\
                    [[domain]]\nname = \"ok\"\nkernel = \"debian\"\nmemory = \"4M\"\ncpus = 1\npin = [0, 1]\n";
        let e = errors(text);
        assert_eq!(e.len(), 10, "{e:#?}");
        assert!(e.iter().filter(|m| m.starts_with("machine: ")).count() == 3);
        assert!(e.iter().filter(|m| m.starts_with("domain 'Bad': ")).count() == 6);
        assert!(
            e.iter()
                .any(|m| m.starts_with("domain 'ok': pin has 2 entries"))
        );
    }

    #[test]
    fn load_resolves_against_the_file_and_names_it() {
        let dir = temp_dir();
        std::fs::create_dir_all(dir.join("img")).unwrap();
        std::fs::write(dir.join("img/Image"), b"kernel").unwrap();
        let toml = dir.join("s.toml");
        std::fs::write(
            &toml,
            format!(
                "{MACHINE}{}",
                domain("x", "").replace("\"debian\"", "\"img/Image\"")
            ),
        )
        .unwrap();
        let s = Scenario::load(&toml).unwrap();
        assert_eq!(
            s.domains[0].kernel,
            FileRef::Path(std::fs::canonicalize(dir.join("img/Image")).unwrap())
        );
        assert_eq!(s.dir, dir);
        std::fs::write(
            &toml,
            format!(
                "{MACHINE}{}",
                domain("x", "cpus = 0").replace("cpus = 2\n", "")
            ),
        )
        .unwrap();
        assert_eq!(
            Scenario::load(&toml).unwrap_err(),
            [format!(
                "{}: domain 'x': cpus 0: must be 1..=8",
                toml.display()
            )]
        );
        let missing = dir.join("missing.toml");
        let e = Scenario::load(&missing).unwrap_err();
        assert!(
            e[0].starts_with(&format!("{}: ", missing.display())),
            "{e:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shipped_examples_parse() {
        let s = Scenario::load(&examples().join("two-linux.toml")).unwrap();
        assert_eq!((s.machine.cpus, s.machine.memory_mb), (4, 2048));
        assert_eq!(s.hv_bootargs(), "");
        let names: Vec<_> = s.domains.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["linux1", "linux2"]);
        for d in &s.domains {
            assert_eq!((d.cpus, d.memory_mb), (2, 256));
            assert_eq!(
                (&d.kernel, &d.ramdisk),
                (&FileRef::Debian, &Some(FileRef::Busybox))
            );
            assert_eq!(d.bootargs, "console=ttyAMA0 hvtest=shell");
        }
        let s = Scenario::load(&examples().join("four-on-two.toml")).unwrap();
        assert_eq!((s.machine.cpus, s.machine.memory_mb), (2, 2048));
        assert_eq!(s.hv_bootargs(), "sched_slice_ms=10");
        let names: Vec<_> = s.domains.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["d1", "d2", "d3", "d4"]);
        assert!(s.domains.iter().all(|d| d.cpus == 1 && d.memory_mb == 192));
        // The README's full example parses too (its files aside).
        let readme = std::fs::read_to_string(examples().join("README.md")).unwrap();
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let e = Scenario::from_toml(block, &examples()).unwrap_err();
        assert!(e.iter().all(|m| m.contains("No such file")), "{e:#?}");
    }

    fn sizes(k: u64, r: u64) -> impl Fn(&FileRef) -> Result<u64, String> {
        move |f| match f {
            FileRef::Debian => Ok(k),
            FileRef::Busybox => Ok(r),
            FileRef::Path(p) => Ok(std::fs::metadata(p).map_err(|e| e.to_string())?.len()),
        }
    }

    #[test]
    fn identical_files_are_one_module() {
        let s = Scenario::load(&examples().join("two-linux.toml")).unwrap();
        let asked = std::cell::RefCell::new(Vec::new());
        let size = |f: &FileRef| {
            asked.borrow_mut().push(f.clone());
            sizes(30 * MIB + 5, 3 * MIB)(f)
        };
        let p = s.place_modules(&size).unwrap();
        assert_eq!(*asked.borrow(), [FileRef::Debian, FileRef::Busybox]);
        assert_eq!(
            p,
            [
                Placed {
                    file: FileRef::Debian,
                    kind: ModuleKind::Kernel,
                    addr: 0x4100_0000,
                    size: 30 * MIB + 5
                },
                // 32 MiB later: the kernel rounded up to 2 MiB. Does not
                // fit below the DTB at 0x4800_0000, so goes above it.
                Placed {
                    file: FileRef::Busybox,
                    kind: ModuleKind::Ramdisk,
                    addr: 0x4300_0000,
                    size: 3 * MIB
                },
            ]
        );
        let dts = s.chosen_dts(&p);
        assert_eq!(dts.matches("module@41000000 {").count(), 2, "{dts}");
        assert_eq!(dts.matches("module@43000000 {").count(), 2, "{dts}");
    }

    #[test]
    fn placement_goes_around_the_dtb_and_fails_when_too_big() {
        let dir = temp_dir();
        let write = |name: &str| std::fs::write(dir.join(name), b"x").unwrap();
        for f in ["a", "b", "c"] {
            write(f);
        }
        let text = "[machine]\ncpus = 2\nmemory = \"1G\"\n\
             [[domain]]\nname = \"x\"\nkernel = \"debian\"\nramdisk = \"busybox\"\ndtb = \"a\"\nmemory = \"256M\"\ncpus = 1\n\
             [[domain]]\nname = \"y\"\nkernel = \"b\"\ndtb = \"c\"\nmemory = \"256M\"\ncpus = 1\n";
        let s = Scenario::from_toml(text, &dir).unwrap();
        let size = |kernel: u64, ramdisk: u64, b: u64| {
            let dir = dir.clone();
            move |f: &FileRef| match f {
                FileRef::Debian => Ok(kernel),
                FileRef::Busybox => Ok(ramdisk),
                FileRef::Path(p) if p.ends_with("b") => Ok(b),
                FileRef::Path(p) if p.starts_with(std::fs::canonicalize(&dir).unwrap()) => Ok(4096),
                FileRef::Path(p) => Err(format!("unexpected {}", p.display())),
            }
        };
        let addrs = |p: &[Placed]| p.iter().map(|p| p.addr).collect::<Vec<_>>();
        // 0x4100_0000..0x4800_0000 is the 112 MiB below QEMU's DTB. The
        // 100 MiB kernel goes there; the 20 MiB ramdisk does not fit the
        // 12 MiB left and goes above the DTB's 2 MiB; the 4 KiB dtb "a"
        // takes 2 MiB below it, the 8 MiB kernel "b" 8 more, and the dtb
        // "c" the last 2 MiB below the DTB.
        let p = s
            .place_modules(&size(100 * MIB, 20 * MIB, 8 * MIB))
            .unwrap();
        assert_eq!(
            addrs(&p),
            [
                0x4100_0000,
                0x4820_0000,
                0x4740_0000,
                0x4760_0000,
                0x47e0_0000
            ]
        );
        // "b" a byte larger than the 10 MiB left below the DTB: it goes
        // above, after the ramdisk, and "c" still takes the gap below.
        let p = s
            .place_modules(&size(100 * MIB, 20 * MIB, 10 * MIB + 1))
            .unwrap();
        assert_eq!(
            addrs(&p),
            [
                0x4100_0000,
                0x4820_0000,
                0x4740_0000,
                0x4960_0000,
                0x4760_0000
            ]
        );
        assert_eq!(
            p.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [
                ModuleKind::Kernel,
                ModuleKind::Ramdisk,
                ModuleKind::DeviceTree,
                ModuleKind::Kernel,
                ModuleKind::DeviceTree
            ]
        );
        // None overlaps the DTB's 2 MiB, the hypervisor or another.
        let dtb = dtb_address(1024);
        assert_eq!(dtb, 0x4800_0000);
        let mut spans: Vec<(u64, u64)> = p
            .iter()
            .map(|p| (p.addr, p.addr + p.size.next_multiple_of(MODULE_ALIGN)))
            .chain([(RAM_BASE, MODULES_BASE), (dtb, dtb + DTB_ROOM)])
            .collect();
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:x?}");
        assert!(p.iter().all(|p| p.addr % MODULE_ALIGN == 0));

        // A module larger than any gap.
        let e = s.place_modules(&size(1024 * MIB, 1, 1)).unwrap_err();
        assert!(
            e.starts_with(
                "kernel debian (1073741824 bytes) does not fit in the RAM left for modules \
                           (free: 0x41000000-0x48000000, 0x48200000-0x80000000;"
            ),
            "{e}"
        );
        // Modules that fit, each domain's in its memory, but leave too
        // little RAM for the domains' 512 MiB.
        let e = s
            .place_modules(&size(126 * MIB, 126 * MIB, 252 * MIB))
            .unwrap_err();
        assert_eq!(
            e,
            "the modules take 508 MiB: the 498 MiB of RAM left cannot hold the domains' 512 MiB"
        );
        // A domain too small for its modules and its device tree: "y" has
        // 256 MiB, its kernel "b" 254 MiB and its dtb "c" 4 KiB.
        let e = s.place_modules(&size(MIB, MIB, 254 * MIB)).unwrap_err();
        assert_eq!(
            e,
            "domain 'y': its modules (266342400 bytes) and 2 MiB for its device tree \
             do not fit in its 256 MiB of memory"
        );
        s.place_modules(&size(MIB, MIB, 254 * MIB - 4096)).unwrap();
        // Sizes that cannot be had, and empty files.
        let e = s.place_modules(&|_| Err("gone".into())).unwrap_err();
        assert_eq!(e, "kernel debian: gone");
        let e = s.place_modules(&size(0, 1, 1)).unwrap_err();
        assert_eq!(e, "kernel debian: the file is empty");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dts_strings_are_escaped() {
        assert_eq!(dts_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(dts_string("x\ny\u{7f}é"), r#""x\ny\x7f\xc3\xa9""#);
    }

    /// The fragment for two domains, exactly; it compiles with dtc (when
    /// installed) inside a tree, alone and merged over a `/chosen` that
    /// has properties already.
    #[test]
    fn dts_for_two_domains() {
        let dir = temp_dir();
        std::fs::write(dir.join("extra.dtb"), b"x").unwrap();
        let text = r#"[machine]
cpus = 4
memory = "4G"
bootargs = "hv.console_timestamps=1 x=\"q\\"
"#
        .to_string()
            + "slice_ms = 10\n\
                    [[domain]]\nname = \"linux1\"\nkernel = \"debian\"\nramdisk = \"busybox\"\n\
                    bootargs = \"console=ttyAMA0 hvtest=shell\"\nmemory = \"256M\"\ncpus = 2\n\
                    on_crash = \"restart\"\npin = [0, 1]\n\
                    [[domain]]\nname = \"linux2\"\nkernel = \"debian\"\ndtb = \"extra.dtb\"\n\
                    memory = \"3G\"\ncpus = 1\nvpl011 = false\n";
        let s = Scenario::from_toml(&text, &dir).unwrap();
        let p = s
            .place_modules(&|f: &FileRef| match f {
                FileRef::Debian => Ok(0x1a2_b3c4),
                FileRef::Busybox => Ok(0x12_3456),
                FileRef::Path(_) => Ok(0x800),
            })
            .unwrap();
        let dts = s.chosen_dts(&p);
        let want = r#"/ {
	chosen {
		xen,xen-bootargs = "hv.console_timestamps=1 x=\"q\\ sched_slice_ms=10";

		linux1 {
			compatible = "xen,domain";
			#address-cells = <2>;
			#size-cells = <2>;
			memory = <0 262144>;
			cpus = <2>;
			vpl011;
			hv,on-crash = "restart";

			module@41000000 {
				compatible = "multiboot,kernel", "multiboot,module";
				reg = <0x0 0x41000000 0x0 0x1a2b3c4>;
				bootargs = "console=ttyAMA0 hvtest=shell";
			};

			module@42c00000 {
				compatible = "multiboot,ramdisk", "multiboot,module";
				reg = <0x0 0x42c00000 0x0 0x123456>;
			};

			vcpu0 {
				compatible = "xen,vcpu";
				id = <0>;
				hard-affinity = <0>;
			};

			vcpu1 {
				compatible = "xen,vcpu";
				id = <1>;
				hard-affinity = <1>;
			};
		};

		linux2 {
			compatible = "xen,domain";
			#address-cells = <2>;
			#size-cells = <2>;
			memory = <0 3145728>;
			cpus = <1>;
			hv,on-crash = "destroy";

			module@41000000 {
				compatible = "multiboot,kernel", "multiboot,module";
				reg = <0x0 0x41000000 0x0 0x1a2b3c4>;
			};

			module@42e00000 {
				compatible = "multiboot,device-tree", "multiboot,module";
				reg = <0x0 0x42e00000 0x0 0x800>;
			};
		};
	};
};
"#;
        assert_eq!(dts, want);

        if crate::host::have("dtc") {
            for (name, head) in [
                ("alone.dts", "/dts-v1/;\n/ { };\n"),
                (
                    "merged.dts",
                    "/dts-v1/;\n/ {\n\t#address-cells = <2>;\n\t#size-cells = <2>;\n\
                     \tchosen {\n\t\tbootargs = \"x\";\n\t\tstdout-path = \"/pl011@9000000\";\n\t};\n};\n",
                ),
            ] {
                let src = dir.join(name);
                std::fs::write(&src, format!("{head}{dts}")).unwrap();
                let out = std::process::Command::new("dtc")
                    .args(["-I", "dts", "-O", "dtb", "-o"])
                    .arg(dir.join("out.dtb"))
                    .arg(&src)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "dtc refused {name}: {stderr}\n{dts}");
                assert!(stderr.trim().is_empty(), "dtc warned on {name}: {stderr}");
                // And back: the escaped string arrives intact.
                let back = std::process::Command::new("dtc")
                    .args(["-I", "dtb", "-O", "dts"])
                    .arg(dir.join("out.dtb"))
                    .output()
                    .unwrap();
                let back = String::from_utf8_lossy(&back.stdout);
                assert!(back.contains(r#"x=\"q\\ sched_slice_ms=10""#), "{back}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
