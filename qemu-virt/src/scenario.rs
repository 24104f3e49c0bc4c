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
//! xen = "no-xenstore"    # optional: xen,enhanced: "enabled",
//!                        # "no-xenstore" or "disabled" (absent: none)
//! peers = ["linux2"]     # optional: hv,xen-peers, domains of this file
//! static_evtchn = [{ port = 10, peer = "linux2", peer_port = 11 }]
//!                        # optional: static event channels, ports
//!                        # 1..=4095; written in either domain or both
//! shared_mem = [{ id = "ring", host = 0x7000_0000, guest = 0x2300_0000,
//!                 size = "64K", owner = true }]
//!                        # optional: static shared memory; owner
//!                        # optional (role "owner"/"borrower")
//! tmem = { weight = 2, ephemeral = "1M", persistent = "256K",
//!          compress = true, shared = ["5a7d0f1e-0000-4000-8000-000000000001"] }
//!                        # optional, every key optional: the domain's
//!                        # transcendent-memory settings (hv,tmem-*):
//!                        # weight 1..=10000, ephemeral cap and
//!                        # persistent quota (multiples of 4K), the
//!                        # shared-pool UUIDs it may join (at most 16)
//! ```
//!
//! Sizes are a string with a `K`, `M` or `G` suffix (binary units, either
//! case) or a plain number of bytes (integer or string). Unknown keys are
//! errors. A file named `debian`, `busybox` or `testguest` is written
//! `./debian`; `kernel = "testguest"` is the bare-metal test guest
//! (`tests/guests/testguest`), which the runner builds.
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
//! command line; `xen` one of its three values; `peers` naming other
//! domains of the file, each once, at most [`MAX_PEERS`]; `tmem` only
//! with Xen interfaces, its values in range, UUIDs well formed and
//! distinct.
//!
//! Static event channels: each end's port is 1..=[`MAX_STATIC_PORT`] and
//! the peer another domain of the file. A channel is written once, in
//! either domain: the runner writes both ends (`label: evtchn-PORT` nodes
//! whose `xen,evtchn = <PORT &peer-label>`, so dtc gives each end a
//! phandle). Writing the mirror entry in the peer too is allowed and is
//! the same channel; any other entry is another channel, so a port taken
//! twice in one domain (written there or by a peer) is an error, as are
//! more than [`MAX_STATIC_EVTCHNS`] channels in a domain and a channel end
//! in a domain without `xen = "no-xenstore"` or `"enabled"`.
//!
//! Static shared memory: the id is 1..=[`SHM_ID_MAX`] characters of A-Z
//! a-z 0-9 _ - (it names the `shm-ID` node), host, guest and size 4 KiB
//! aligned, size non-zero, no range wrapping, at most [`MAX_SHARED_MEMS`]
//! regions and each id once per domain, guest ranges of a domain apart;
//! the host range lies in the machine's RAM above the hypervisor's image
//! and clear of QEMU's device tree; across domains one id is one host
//! range and size, different ids do not overlap, one owner per id. The
//! regions count against the memory budget, and the modules are placed
//! around them. Whether a guest range is free in the guest's map (outside
//! its RAM, the grant table, the GIC and vPL011 frames) is the
//! hypervisor's check: it refuses the domain when it builds it.
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
/// Highest static event-channel port (`common::dom0less::MAX_STATIC_PORT`).
pub const MAX_STATIC_PORT: i64 = 4095;
/// Most static event channels a domain takes part in.
pub const MAX_STATIC_EVTCHNS: usize = 16;
/// Most static shared-memory regions per domain.
pub const MAX_SHARED_MEMS: usize = 8;
/// Most names in `peers`.
pub const MAX_PEERS: usize = 16;
/// Longest shared-memory id (Xen's 16 with the NUL).
pub const SHM_ID_MAX: usize = 15;
/// Alignment of a shared region's addresses and size.
pub const SHM_ALIGN: u64 = 4096;

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
    /// `"testguest"`: the bare-metal test guest the runner builds.
    TestGuest,
    /// Any other file: resolved against the scenario's directory (and
    /// canonical when it exists), so one file is one `FileRef`.
    Path(PathBuf),
}

impl fmt::Display for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileRef::Debian => f.write_str("debian"),
            FileRef::Busybox => f.write_str("busybox"),
            FileRef::TestGuest => f.write_str("testguest"),
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
    /// `xen,enhanced`: the Xen interfaces it gets (`None`: none).
    pub xen: Option<XenMode>,
    /// `hv,xen-peers`: the domains it may open event channels with and
    /// exchange grants with (besides those it shares a channel or a
    /// region with).
    pub peers: Vec<String>,
    /// The static event channels written in this domain (a channel may be
    /// written in either domain, or in both; see [`Scenario::channels`]).
    pub static_evtchn: Vec<EvtchnCfg>,
    /// The static shared-memory regions it maps.
    pub shared_mem: Vec<ShmCfg>,
    /// Its tmem settings (`None`: the hypervisor's defaults).
    pub tmem: Option<TmemCfg>,
}

/// A domain's `tmem` table: its `hv,tmem-*` properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TmemCfg {
    /// `hv,tmem-weight`.
    pub weight: Option<u32>,
    /// `hv,tmem-ephemeral`, bytes.
    pub ephemeral: Option<u64>,
    /// `hv,tmem-persistent`, bytes.
    pub persistent: Option<u64>,
    /// `hv,tmem-compress`.
    pub compress: bool,
    /// `hv,tmem-shared`.
    pub shared: Vec<String>,
}

/// A domain's `xen`: the `xen,enhanced` value of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenMode {
    /// `"enabled"`: the Xen interfaces and xenstore.
    Enabled,
    /// `"no-xenstore"`: the Xen interfaces without xenstore.
    NoXenstore,
    /// `"disabled"`: none (as when `xen` is absent).
    Disabled,
}

impl XenMode {
    /// The value as written in the file and in the device tree.
    pub fn as_str(self) -> &'static str {
        match self {
            XenMode::Enabled => "enabled",
            XenMode::NoXenstore => "no-xenstore",
            XenMode::Disabled => "disabled",
        }
    }

    /// Whether the domain gets event channels (and grants).
    pub fn interfaces(self) -> bool {
        self != XenMode::Disabled
    }
}

/// One static event channel as a domain's `static_evtchn` writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvtchnCfg {
    /// This domain's port, 1..=4095.
    pub port: u32,
    /// The other domain (its name).
    pub peer: String,
    /// The other domain's port, 1..=4095.
    pub peer_port: u32,
}

/// A static event channel between two domains: (domain index in
/// [`Scenario::domains`], port) of each end, `a` the end written first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    /// One end.
    pub a: (usize, u32),
    /// The other end.
    pub b: (usize, u32),
}

/// A static shared-memory region as a domain maps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmCfg {
    /// `xen,shm-id`: 1..=15 characters of A-Z a-z 0-9 _ -.
    pub id: String,
    /// Host physical address (4 KiB aligned, in the machine's RAM).
    pub host: u64,
    /// Guest physical address in this domain (4 KiB aligned).
    pub guest: u64,
    /// Bytes, 4 KiB aligned, non-zero.
    pub size: u64,
    /// `role`: `Some(true)` "owner", `Some(false)` "borrower", `None`
    /// not written (Xen's default: a borrower, nobody owns it).
    pub owner: Option<bool>,
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

    /// The static event channels, each once (a channel written in both
    /// domains is one), in the order first written.
    pub fn channels(&self) -> Vec<Channel> {
        let index: HashMap<&str, usize> = self
            .domains
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), i))
            .collect();
        channels_of(&self.domains, &index)
    }

    /// The distinct static shared-memory regions as (id, host address,
    /// size), in order of first use: host RAM the modules keep clear of.
    pub fn shm_regions(&self) -> Vec<(&str, u64, u64)> {
        shm_regions(&self.domains)
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
        // Less the shared-memory regions (validated inside RAM, clear of
        // the hypervisor and QEMU's device tree).
        let shm = self.shm_regions();
        for &(_, host, size) in &shm {
            let end = host + size;
            gaps = gaps
                .into_iter()
                .flat_map(|(s, e)| {
                    // Modules start 2 MiB aligned.
                    [
                        (s, e.min(host)),
                        (s.max(end).next_multiple_of(MODULE_ALIGN), e),
                    ]
                })
                .filter(|(s, e)| s < e)
                .collect();
        }
        let shm_total: u64 = shm.iter().map(|r| r.2).sum();
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
        let left = (ram_end - RAM_BASE)
            .saturating_sub((MODULES_BASE - RAM_BASE) + DTB_ROOM + taken + shm_total);
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
    /// `xen,enhanced` and `hv,xen-peers` when given, `module@ADDR` children
    /// (the shared address of a shared file), the kernel's `bootargs`, a
    /// `vcpuN` node per vCPU when pinned, an `hv_evtchn_D_PORT:
    /// evtchn-PORT` node per channel end in the domain (D its index), and
    /// an `shm-ID` node per shared region.
    ///
    /// Panics if a module file of the scenario is missing from `placed`
    /// (give it what [`Scenario::place_modules`] returned).
    pub fn chosen_dts(&self, placed: &[Placed]) -> String {
        let mut s = String::from("/ {\n\tchosen {\n");
        let hv = self.hv_bootargs();
        if !hv.is_empty() {
            let _ = writeln!(s, "\t\txen,xen-bootargs = {};", dts_string(&hv));
        }
        let channels = self.channels();
        for (i, d) in self.domains.iter().enumerate() {
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
            if let Some(x) = d.xen {
                let _ = writeln!(s, "\t\t\txen,enhanced = \"{}\";", x.as_str());
            }
            if !d.peers.is_empty() {
                let list: Vec<String> = d.peers.iter().map(|p| dts_string(p)).collect();
                let _ = writeln!(s, "\t\t\thv,xen-peers = {};", list.join(", "));
            }
            if let Some(t) = &d.tmem {
                if let Some(w) = t.weight {
                    let _ = writeln!(s, "\t\t\thv,tmem-weight = <{w}>;");
                }
                for (name, bytes) in [
                    ("hv,tmem-ephemeral", t.ephemeral),
                    ("hv,tmem-persistent", t.persistent),
                ] {
                    if let Some(b) = bytes {
                        let _ = writeln!(s, "\t\t\t{name} = <{}>;", b >> 10);
                    }
                }
                if t.compress {
                    s.push_str("\t\t\thv,tmem-compress;\n");
                }
                if !t.shared.is_empty() {
                    let list: Vec<String> = t.shared.iter().map(|u| dts_string(u)).collect();
                    let _ = writeln!(s, "\t\t\thv,tmem-shared = {};", list.join(", "));
                }
            }
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
            for c in channels.iter() {
                let (me, peer) = match (c.a, c.b) {
                    (a, b) if a.0 == i => (a, b),
                    (a, b) if b.0 == i => (b, a),
                    _ => continue,
                };
                let _ = writeln!(s, "\n\t\t\t{}: evtchn-{} {{", evtchn_label(me), me.1);
                s.push_str("\t\t\t\tcompatible = \"xen,evtchn-v1\";\n");
                let _ = writeln!(
                    s,
                    "\t\t\t\txen,evtchn = <{} &{}>;",
                    me.1,
                    evtchn_label(peer)
                );
                s.push_str("\t\t\t};\n");
            }
            for m in &d.shared_mem {
                let _ = writeln!(s, "\n\t\t\tshm-{} {{", m.id);
                s.push_str("\t\t\t\tcompatible = \"xen,domain-shared-memory-v1\";\n");
                let _ = writeln!(s, "\t\t\t\txen,shm-id = {};", dts_string(&m.id));
                let cells = |x: u64| format!("{:#x} {:#x}", x >> 32, x & 0xffff_ffff);
                let _ = writeln!(
                    s,
                    "\t\t\t\txen,shared-mem = <{} {} {}>;",
                    cells(m.host),
                    cells(m.guest),
                    cells(m.size)
                );
                match m.owner {
                    Some(true) => s.push_str("\t\t\t\trole = \"owner\";\n"),
                    Some(false) => s.push_str("\t\t\t\trole = \"borrower\";\n"),
                    None => {}
                }
                s.push_str("\t\t\t};\n");
            }
            s.push_str("\t\t};\n");
        }
        s.push_str("\t};\n};\n");
        s
    }
}

/// The DTS label of a static event channel's end (domain index, port):
/// dtc gives the labelled node a phandle for `&label` to name.
fn evtchn_label((domain, port): (usize, u32)) -> String {
    format!("hv_evtchn_{domain}_{port}")
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
    xen: Option<String>,
    peers: Option<Vec<String>>,
    static_evtchn: Option<Vec<RawEvtchn>>,
    shared_mem: Option<Vec<RawShm>>,
    tmem: Option<RawTmem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTmem {
    weight: Option<i64>,
    ephemeral: Option<RawSize>,
    persistent: Option<RawSize>,
    compress: Option<bool>,
    shared: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvtchn {
    port: i64,
    peer: String,
    peer_port: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShm {
    id: String,
    host: RawSize,
    guest: RawSize,
    size: RawSize,
    owner: Option<bool>,
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
        "testguest" => {
            if kind != ModuleKind::Kernel {
                err(format!(
                    "{noun} \"testguest\": the test guest can only be a kernel (write ./testguest for a file)"
                ));
            }
            FileRef::TestGuest
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

/// Checks a domain's `tmem` table (the rules of `common::dom0less`).
fn tmem_cfg(t: &RawTmem, xen: Option<XenMode>, err: &mut impl FnMut(String)) -> TmemCfg {
    use common::dom0less::{MAX_TMEM_WEIGHT, parse_uuid};
    if !xen.is_some_and(XenMode::interfaces) {
        err("tmem: needs xen = \"no-xenstore\" or \"enabled\" (tmem is a Xen hypercall)".into());
    }
    let weight = t.weight.and_then(|w| match u32::try_from(w) {
        Ok(v @ 1..=MAX_TMEM_WEIGHT) => Some(v),
        _ => {
            err(format!("tmem weight {w}: must be 1..={MAX_TMEM_WEIGHT}"));
            None
        }
    });
    let mut size = |what: &str, v: &Option<RawSize>| {
        let v = v.as_ref()?;
        match v.bytes() {
            Some(b) if b % 4096 == 0 && b >> 10 <= u64::from(u32::MAX) => Some(b),
            _ => {
                err(format!(
                    "tmem {what} {:?}: must be a size, a multiple of 4K, below 4T",
                    v.to_string()
                ));
                None
            }
        }
    };
    let ephemeral = size("ephemeral", &t.ephemeral);
    let persistent = size("persistent", &t.persistent);
    let shared = t.shared.clone().unwrap_or_default();
    if shared.len() > common::tmem::MAX_SHARED_POOLS {
        err(format!(
            "tmem shared: {} UUIDs, at most {}",
            shared.len(),
            common::tmem::MAX_SHARED_POOLS
        ));
    }
    let mut seen = Vec::new();
    for u in &shared {
        match parse_uuid(u.as_bytes()) {
            None => err(format!("tmem shared {u:?}: not a UUID (8-4-4-4-12 hex)")),
            Some(v) if seen.contains(&v) => err(format!("tmem shared {u:?}: twice")),
            Some(v) => seen.push(v),
        }
    }
    TmemCfg {
        weight,
        ephemeral,
        persistent,
        compress: t.compress.unwrap_or(false),
        shared,
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
        let xen = match d.xen.as_deref() {
            None => None,
            Some("enabled") => Some(XenMode::Enabled),
            Some("no-xenstore") => Some(XenMode::NoXenstore),
            Some("disabled") => Some(XenMode::Disabled),
            Some(other) => {
                derr(format!(
                    "xen {other:?}: must be \"enabled\", \"no-xenstore\" or \"disabled\""
                ));
                None
            }
        };
        let peers = d.peers.clone().unwrap_or_default();
        if peers.len() > MAX_PEERS {
            derr(format!("peers: {} names, at most {MAX_PEERS}", peers.len()));
        }
        for (k, p) in peers.iter().enumerate() {
            if *p == d.name {
                derr("peers: names the domain itself".into());
            } else if peers[..k].contains(p) {
                derr(format!("peers: {p:?} twice"));
            }
        }
        let mut static_evtchn = Vec::new();
        for e in d.static_evtchn.iter().flatten() {
            let ports = 1..=MAX_STATIC_PORT;
            let mut ok = true;
            if !ports.contains(&e.port) {
                derr(format!(
                    "static_evtchn port {} (to '{}'): must be 1..={MAX_STATIC_PORT}",
                    e.port, e.peer
                ));
                ok = false;
            }
            if !ports.contains(&e.peer_port) {
                derr(format!(
                    "static_evtchn port {} (to '{}'): peer_port {} must be 1..={MAX_STATIC_PORT}",
                    e.port, e.peer, e.peer_port
                ));
                ok = false;
            }
            if e.peer == d.name {
                derr(format!(
                    "static_evtchn port {}: the peer is the domain itself",
                    e.port
                ));
                ok = false;
            }
            if ok {
                static_evtchn.push(EvtchnCfg {
                    port: e.port as u32,
                    peer: e.peer.clone(),
                    peer_port: e.peer_port as u32,
                });
            }
        }
        let raw_shm = d.shared_mem.as_deref().unwrap_or_default();
        if raw_shm.len() > MAX_SHARED_MEMS {
            derr(format!(
                "shared_mem: {} regions, at most {MAX_SHARED_MEMS}",
                raw_shm.len()
            ));
        }
        let mut shared_mem: Vec<ShmCfg> = Vec::new();
        for r in raw_shm {
            if let Some(shm) = shm_cfg(r, machine_mb, &shared_mem, &mut derr) {
                shared_mem.push(shm);
            }
        }
        let tmem = d.tmem.as_ref().map(|t| tmem_cfg(t, xen, &mut derr));
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
            xen,
            peers,
            static_evtchn,
            shared_mem,
            tmem,
        });
    }
    cross_domain(&domains, &first_use, &mut errors);

    // The memory budget (only when every size is known).
    let shm_mb: u64 = shm_regions(&domains)
        .iter()
        .map(|r| r.2.div_ceil(1 << 20))
        .sum();
    if let (Some(total), Some(machine)) = (memory_sum, machine_mb)
        && total + shm_mb + u64::from(RESERVED_MB) > u64::from(machine)
    {
        let shm = if shm_mb > 0 {
            format!(" and shared memory ({shm_mb} MiB)")
        } else {
            String::new()
        };
        errors.push(format!(
            "the domains' memory ({total} MiB){shm} plus {RESERVED_MB} MiB for the hypervisor, \
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

/// A shared-memory id: 1..=15 characters of A-Z a-z 0-9 _ - (it names a
/// node too).
fn valid_shm_id(id: &str) -> bool {
    (1..=SHM_ID_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks one `shared_mem` entry alone and against the domain's earlier
/// ones (`earlier`); the host range against the machine's RAM when its
/// size is known. `None` when something is wrong (reported).
fn shm_cfg(
    r: &RawShm,
    machine_mb: Option<u32>,
    earlier: &[ShmCfg],
    err: &mut impl FnMut(String),
) -> Option<ShmCfg> {
    let label = format!("shared_mem {:?}", r.id);
    let mut ok = true;
    if !valid_shm_id(&r.id) {
        err(format!(
            "{label}: the id must be 1..={SHM_ID_MAX} characters of A-Z, a-z, 0-9, _ and -"
        ));
        ok = false;
    }
    let mut num = |what: &str, v: &RawSize| {
        let n = v.bytes();
        if n.is_none() {
            err(format!(
                "{label}: {what} {:?}: not a number (bytes, or with a K, M or G suffix)",
                v.to_string()
            ));
        }
        n
    };
    let (host, guest, size) = (
        num("host", &r.host),
        num("guest", &r.guest),
        num("size", &r.size),
    );
    let (Some(host), Some(guest), Some(size)) = (host, guest, size) else {
        return None;
    };
    if size == 0 {
        err(format!("{label}: size 0: must not be empty"));
        return None;
    }
    if [host, guest, size].iter().any(|x| x % SHM_ALIGN != 0) {
        err(format!(
            "{label}: host {host:#x}, guest {guest:#x} and size {size:#x} must be 4 KiB aligned"
        ));
        return None;
    }
    let (Some(host_end), Some(guest_end)) = (host.checked_add(size), guest.checked_add(size))
    else {
        err(format!("{label}: a range runs past the address space"));
        return None;
    };
    if let Some(mb) = machine_mb {
        let ram_end = RAM_BASE + (u64::from(mb) << 20);
        let dtb = dtb_address(mb);
        if host < MODULES_BASE || host_end > ram_end {
            err(format!(
                "{label}: host range {host:#x}-{host_end:#x} must lie in the machine's RAM \
                 above the hypervisor's image ({MODULES_BASE:#x}-{ram_end:#x})"
            ));
            ok = false;
        } else if host < dtb + DTB_ROOM && dtb < host_end {
            err(format!(
                "{label}: host range {host:#x}-{host_end:#x} overlaps the {} MiB kept for \
                 QEMU's device tree at {dtb:#x}",
                DTB_ROOM >> 20
            ));
            ok = false;
        }
    }
    for e in earlier {
        if e.id == r.id {
            err(format!("{label}: the id is used twice in this domain"));
            ok = false;
        } else if guest < e.guest + e.size && e.guest < guest_end {
            err(format!(
                "{label}: guest range overlaps shared_mem {:?} of this domain",
                e.id
            ));
            ok = false;
        }
    }
    ok.then(|| ShmCfg {
        id: r.id.clone(),
        host,
        guest,
        size,
        owner: r.owner,
    })
}

/// The distinct shared regions (id, host, size), in order of first use.
fn shm_regions(domains: &[DomainCfg]) -> Vec<(&str, u64, u64)> {
    let mut out: Vec<(&str, u64, u64)> = Vec::new();
    for m in domains.iter().flat_map(|d| &d.shared_mem) {
        if !out.iter().any(|r| r.0 == m.id) {
            out.push((&m.id, m.host, m.size));
        }
    }
    out
}

/// The static event channels of `domains` (whose names map to their
/// index in `index`), each once: a channel written in both domains (the
/// mirror entries) is one. Entries naming no domain are left out.
fn channels_of(domains: &[DomainCfg], index: &HashMap<&str, usize>) -> Vec<Channel> {
    let mut out: Vec<Channel> = Vec::new();
    for (i, d) in domains.iter().enumerate() {
        for e in &d.static_evtchn {
            let Some(&j) = index.get(e.peer.as_str()) else {
                continue;
            };
            let (a, b) = ((i, e.port), (j, e.peer_port));
            if !out
                .iter()
                .any(|c| (c.a, c.b) == (a, b) || (c.a, c.b) == (b, a))
            {
                out.push(Channel { a, b });
            }
        }
    }
    out
}

/// The checks across domains: peers and channel peers exist, a port is one
/// channel's in its domain, channels need Xen interfaces on both ends, at
/// most 16 channels per domain; one shared id is one region, regions of
/// different ids apart, one owner per id.
fn cross_domain(domains: &[DomainCfg], index: &HashMap<&str, usize>, errors: &mut Vec<String>) {
    for d in domains {
        for p in &d.peers {
            if *p != d.name && !index.contains_key(p.as_str()) {
                errors.push(format!(
                    "domain '{}': peers: {p:?} is not a domain of this scenario",
                    d.name
                ));
            }
        }
        for e in &d.static_evtchn {
            if !index.contains_key(e.peer.as_str()) {
                errors.push(format!(
                    "domain '{}': static_evtchn port {}: peer {:?} is not a domain of this scenario",
                    d.name, e.port, e.peer
                ));
            }
        }
    }
    let channels = channels_of(domains, index);
    let name = |i: usize| domains.get(i).map_or("?", |d| d.name.as_str());
    for (i, d) in domains.iter().enumerate() {
        // Every channel with an end here, as (local port, peer, peer port).
        let ends: Vec<(u32, usize, u32)> = channels
            .iter()
            .filter_map(|c| {
                if c.a.0 == i {
                    Some((c.a.1, c.b.0, c.b.1))
                } else if c.b.0 == i {
                    Some((c.b.1, c.a.0, c.a.1))
                } else {
                    None
                }
            })
            .collect();
        for (k, &(port, j, pp)) in ends.iter().enumerate() {
            if let Some(&(_, j2, pp2)) = ends[..k].iter().find(|e| e.0 == port) {
                errors.push(format!(
                    "domain '{}': static_evtchn port {port} is used by two channels (to '{}' \
                     port {pp2} and to '{}' port {pp}), written here or in the peer",
                    d.name,
                    name(j2),
                    name(j)
                ));
            }
        }
        if ends.len() > MAX_STATIC_EVTCHNS {
            errors.push(format!(
                "domain '{}': static_evtchn: {} channels, written here or in the peers, at most \
                 {MAX_STATIC_EVTCHNS}",
                d.name,
                ends.len()
            ));
        }
        if !ends.is_empty() && !d.xen.is_some_and(XenMode::interfaces) {
            errors.push(format!(
                "domain '{}': static_evtchn: needs xen = \"no-xenstore\" or \"enabled\" \
                 (event channels are Xen interfaces; its channel with '{}' is written here \
                 or there)",
                d.name,
                name(ends[0].1)
            ));
        }
    }
    // Shared regions, each against the first domain that named each id.
    let mut seen: Vec<(&str, &ShmCfg)> = Vec::new();
    for d in domains {
        for m in &d.shared_mem {
            let label = format!("domain '{}': shared_mem {:?}", d.name, m.id);
            for (e, n) in &seen {
                if n.id == m.id {
                    if (n.host, n.size) != (m.host, m.size) {
                        errors.push(format!(
                            "{label}: host {:#x} and size {:#x} differ from domain '{e}''s \
                             ({:#x}, {:#x}): one id is one region",
                            m.host, m.size, n.host, n.size
                        ));
                    } else if m.owner == Some(true) && n.owner == Some(true) {
                        errors.push(format!("{label}: a second owner (domain '{e}' owns it)"));
                    }
                } else if m.host < n.host + n.size && n.host < m.host + m.size {
                    errors.push(format!(
                        "{label}: host range overlaps shared_mem {:?} of domain '{e}'",
                        n.id
                    ));
                }
            }
            let owns = m.owner == Some(true);
            if let Some(first) = seen.iter_mut().find(|(_, n)| n.id == m.id) {
                // Remember the owner, so a third domain meets it.
                if owns && first.1.owner != Some(true) {
                    *first = (&d.name, m);
                }
            } else {
                seen.push((&d.name, m));
            }
        }
    }
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
                xen: None,
                peers: vec![],
                static_evtchn: vec![],
                shared_mem: vec![],
                tmem: None,
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
            FileRef::Debian | FileRef::TestGuest => Ok(k),
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
                FileRef::Debian | FileRef::TestGuest => Ok(kernel),
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
                FileRef::Debian | FileRef::TestGuest => Ok(0x1a2_b3c4),
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

    /// Two Xen-aware domains (and a third) with a channel written once,
    /// one written on both sides, a shared region and peers.
    fn xen_text() -> String {
        format!(
            "{MACHINE}{}{}{}",
            domain(
                "linux1",
                "xen = \"no-xenstore\"\npeers = [\"linux3\"]\n\
                 static_evtchn = [{ port = 10, peer = \"linux2\", peer_port = 11 },\n\
                 { port = 12, peer = \"linux2\", peer_port = 13 }]\n\
                 shared_mem = [{ id = \"ring\", host = 0x7000_0000, guest = 0x1_0000_0000, \
                 size = \"64K\", owner = true }]"
            ),
            domain(
                "linux2",
                "xen = \"enabled\"\n\
                 static_evtchn = [{ port = 13, peer = \"linux1\", peer_port = 12 }]\n\
                 shared_mem = [{ id = \"ring\", host = 0x7000_0000, guest = 0x2300_0000, \
                 size = 65536, owner = false }, { id = \"log\", host = \"1800M\", \
                 guest = 0x2400_0000, size = \"4K\" }]"
            ),
            domain("linux3", "xen = \"disabled\"")
        )
    }

    #[test]
    fn xen_fields_read_back() {
        let s = parse(&xen_text()).unwrap();
        let [a, b, c] = [0, 1, 2].map(|i| &s.domains[i]);
        assert_eq!(
            (a.xen, b.xen, c.xen),
            (
                Some(XenMode::NoXenstore),
                Some(XenMode::Enabled),
                Some(XenMode::Disabled)
            )
        );
        assert_eq!(a.peers, ["linux3"]);
        assert_eq!(
            a.static_evtchn,
            [
                EvtchnCfg {
                    port: 10,
                    peer: "linux2".into(),
                    peer_port: 11
                },
                EvtchnCfg {
                    port: 12,
                    peer: "linux2".into(),
                    peer_port: 13
                }
            ]
        );
        assert_eq!(
            b.shared_mem,
            [
                ShmCfg {
                    id: "ring".into(),
                    host: 0x7000_0000,
                    guest: 0x2300_0000,
                    size: 0x1_0000,
                    owner: Some(false)
                },
                ShmCfg {
                    id: "log".into(),
                    host: 1800 << 20,
                    guest: 0x2400_0000,
                    size: 0x1000,
                    owner: None
                }
            ]
        );
        // The mirror entry is the same channel: two channels in all.
        assert_eq!(
            s.channels(),
            [
                Channel {
                    a: (0, 10),
                    b: (1, 11)
                },
                Channel {
                    a: (0, 12),
                    b: (1, 13)
                }
            ]
        );
        assert_eq!(
            s.shm_regions(),
            [("ring", 0x7000_0000, 0x1_0000), ("log", 1800 << 20, 0x1000)]
        );
        // Without any of it: no Xen interfaces, no channels, no regions.
        let s = parse(&format!("{MACHINE}{}", domain("x", ""))).unwrap();
        let d = &s.domains[0];
        assert!(d.xen.is_none() && d.peers.is_empty());
        assert!(d.static_evtchn.is_empty() && d.shared_mem.is_empty());
        assert!(s.channels().is_empty() && s.shm_regions().is_empty());
    }

    #[test]
    fn xen_validation_errors() {
        let x = |name: &str, extra: &str| domain(name, &format!("xen = \"no-xenstore\"\n{extra}"));
        let two = |a: &str, b: &str| format!("{MACHINE}{}{}", x("a", a), x("b", b));
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{MACHINE}{}", domain("a", "xen = \"on\"")),
                "domain 'a': xen \"on\": must be \"enabled\", \"no-xenstore\" or \"disabled\"",
            ),
            (
                two("peers = [\"c\"]", ""),
                "domain 'a': peers: \"c\" is not a domain of this scenario",
            ),
            (
                two("peers = [\"b\", \"b\"]", ""),
                "domain 'a': peers: \"b\" twice",
            ),
            (
                two("peers = [\"a\"]", ""),
                "domain 'a': peers: names the domain itself",
            ),
            (
                two(
                    "static_evtchn = [{ port = 0, peer = \"b\", peer_port = 1 }]",
                    "",
                ),
                "domain 'a': static_evtchn port 0 (to 'b'): must be 1..=4095",
            ),
            (
                two(
                    "static_evtchn = [{ port = 1, peer = \"b\", peer_port = 4096 }]",
                    "",
                ),
                "domain 'a': static_evtchn port 1 (to 'b'): peer_port 4096 must be 1..=4095",
            ),
            (
                two(
                    "static_evtchn = [{ port = 1, peer = \"a\", peer_port = 2 }]",
                    "",
                ),
                "domain 'a': static_evtchn port 1: the peer is the domain itself",
            ),
            (
                two(
                    "static_evtchn = [{ port = 1, peer = \"c\", peer_port = 2 }]",
                    "",
                ),
                "domain 'a': static_evtchn port 1: peer \"c\" is not a domain of this scenario",
            ),
            // Port 5 of b in two channels: one written in a, one in b.
            (
                two(
                    "static_evtchn = [{ port = 1, peer = \"b\", peer_port = 5 }]",
                    "static_evtchn = [{ port = 5, peer = \"a\", peer_port = 2 }]",
                ),
                "domain 'b': static_evtchn port 5 is used by two channels (to 'a' port 1 and \
                 to 'a' port 2), written here or in the peer",
            ),
            (
                two(
                    "static_evtchn = [{ port = 1, peer = \"b\", peer_port = 5 }, \
                     { port = 1, peer = \"b\", peer_port = 6 }]",
                    "",
                ),
                "domain 'a': static_evtchn port 1 is used by two channels (to 'b' port 5 and \
                 to 'b' port 6)",
            ),
            (
                format!(
                    "{MACHINE}{}{}",
                    x(
                        "a",
                        "static_evtchn = [{ port = 1, peer = \"b\", peer_port = 1 }]"
                    ),
                    domain("b", "")
                ),
                "domain 'b': static_evtchn: needs xen = \"no-xenstore\" or \"enabled\" (event \
                 channels are Xen interfaces; its channel with 'a' is written here or there)",
            ),
            (
                format!(
                    "{MACHINE}{}{}",
                    domain(
                        "a",
                        "xen = \"disabled\"\n\
                             static_evtchn = [{ port = 1, peer = \"b\", peer_port = 1 }]"
                    ),
                    x("b", "")
                ),
                "domain 'a': static_evtchn: needs xen",
            ),
            (
                two(
                    &format!(
                        "static_evtchn = [{}]",
                        (1..=17)
                            .map(|p| format!("{{ port = {p}, peer = \"b\", peer_port = {p} }}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "",
                ),
                "static_evtchn: 17 channels, written here or in the peers, at most 16",
            ),
        ];
        for (text, want) in &cases {
            let e = errors(text);
            assert!(
                e.iter().any(|m| m.contains(want)),
                "want an error containing {want:?}, got {e:#?}\n{text}"
            );
            // Each problem is reported once per domain it concerns.
            assert!(e.len() <= 2, "{e:#?}");
        }
        // 17 names are too many (and here name no domain besides).
        let names: Vec<String> = (0..17).map(|i| format!("\"p{i}\"")).collect();
        let e = errors(&two(&format!("peers = [{}]", names.join(", ")), ""));
        assert_eq!(e[0], "domain 'a': peers: 17 names, at most 16");
        assert_eq!(e.len(), 18, "{e:#?}");
    }

    #[test]
    fn tmem_tables_read_back_as_device_tree_properties_and_are_checked() {
        let a = domain(
            "a",
            "xen = \"no-xenstore\"\n\
             tmem = { weight = 3, ephemeral = \"1M\", persistent = \"256K\", \
             compress = true, shared = [\"00112233-4455-6677-8899-aabbccddeeff\"] }",
        );
        let b = domain("b", "xen = \"enabled\"\ntmem = {}");
        let text = format!("{MACHINE}{a}{b}").replace(
            "kernel = \"debian\"\nramdisk = \"busybox\"",
            "kernel = \"testguest\"",
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.domains[0].kernel, FileRef::TestGuest);
        assert_eq!(
            s.domains[0].tmem,
            Some(TmemCfg {
                weight: Some(3),
                ephemeral: Some(1 << 20),
                persistent: Some(256 << 10),
                compress: true,
                shared: vec!["00112233-4455-6677-8899-aabbccddeeff".into()],
            })
        );
        assert_eq!(s.domains[1].tmem, Some(TmemCfg::default()));
        let p = s.place_modules(&sizes(0x10_0000, 0)).unwrap();
        let dts = s.chosen_dts(&p);
        let want = "\t\t\txen,enhanced = \"no-xenstore\";\n\
                    \t\t\thv,tmem-weight = <3>;\n\
                    \t\t\thv,tmem-ephemeral = <1024>;\n\
                    \t\t\thv,tmem-persistent = <256>;\n\
                    \t\t\thv,tmem-compress;\n\
                    \t\t\thv,tmem-shared = \"00112233-4455-6677-8899-aabbccddeeff\";\n";
        assert!(dts.contains(want), "{dts}");
        assert_eq!(dts.matches("hv,tmem").count(), 5, "b writes none: {dts}");

        let x = |extra: &str| {
            format!(
                "{MACHINE}{}",
                domain("a", &format!("xen = \"no-xenstore\"\ntmem = {{ {extra} }}"))
            )
        };
        let uuid = |n: usize| format!("\"00000000-0000-0000-0000-{n:012x}\"");
        let many: Vec<String> = (0..17).map(uuid).collect();
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{MACHINE}{}", domain("a", "tmem = { weight = 2 }")),
                "domain 'a': tmem: needs xen = \"no-xenstore\" or \"enabled\"",
            ),
            (
                x("weight = 0"),
                "domain 'a': tmem weight 0: must be 1..=10000",
            ),
            (x("weight = 10001"), "tmem weight 10001: must be 1..=10000"),
            (
                x("ephemeral = \"6K\""),
                "tmem ephemeral \"6K\": must be a size, a multiple of 4K",
            ),
            (
                x("persistent = \"lots\""),
                "tmem persistent \"lots\": must be a size",
            ),
            (
                x("shared = [\"00112233-4455-6677-8899-aabbccddeef\"]"),
                "tmem shared \"00112233-4455-6677-8899-aabbccddeef\": not a UUID",
            ),
            (
                x(&format!("shared = [{}, {}]", uuid(1), uuid(1))),
                "tmem shared \"00000000-0000-0000-0000-000000000001\": twice",
            ),
            (
                x(&format!("shared = [{}]", many.join(", "))),
                "tmem shared: 17 UUIDs, at most 16",
            ),
            (x("colour = 1"), "unknown field `colour`"),
            (
                format!(
                    "{MACHINE}{}",
                    domain("a", "").replace("busybox", "testguest")
                ),
                "ramdisk \"testguest\": the test guest can only be a kernel",
            ),
        ];
        for (text, want) in &cases {
            let e = errors(text);
            assert!(
                e.iter().any(|m| m.contains(want)),
                "want an error containing {want:?}, got {e:#?}\n{text}"
            );
        }
    }

    #[test]
    fn shared_memory_validation_errors() {
        let shm = |name: &str, list: &str| domain(name, &format!("shared_mem = [{list}]"));
        let one = |list: &str| format!("{MACHINE}{}", shm("a", list));
        let r = |id: &str, host: &str, guest: &str, size: &str| {
            format!("{{ id = \"{id}\", host = {host}, guest = {guest}, size = {size} }}")
        };
        let ok = |id: &str| r(id, "0x7000_0000", "0x2300_0000", "0x1000");
        let cases: Vec<(String, &str)> = vec![
            (
                one(&r("", "0x7000_0000", "0", "4096")),
                "domain 'a': shared_mem \"\": the id must be 1..=15 characters",
            ),
            (
                one(&r("a.b", "0x7000_0000", "0", "4096")),
                "shared_mem \"a.b\": the id must be",
            ),
            (
                one(&r("0123456789abcdef", "0x7000_0000", "0", "4096")),
                "the id must be 1..=15",
            ),
            (
                one(&r("s", "\"far\"", "0", "4096")),
                "domain 'a': shared_mem \"s\": host \"far\": not a number",
            ),
            (
                one(&r("s", "0x7000_0000", "0", "0")),
                "shared_mem \"s\": size 0",
            ),
            (
                one(&r("s", "0x7000_0800", "0", "4096")),
                "shared_mem \"s\": host 0x70000800, guest 0x0 and size 0x1000 must be 4 KiB aligned",
            ),
            (
                one(&r("s", "0x7000_0000", "0x10", "4096")),
                "must be 4 KiB aligned",
            ),
            (
                one(&r("s", "0x7000_0000", "0", "100")),
                "must be 4 KiB aligned",
            ),
            (
                one(&r("s", "0x7000_0000", "\"18446744073709547520\"", "0x2000")),
                "shared_mem \"s\": a range runs past the address space",
            ),
            (
                one(&r("s", "0x4000_0000", "0", "4096")),
                "shared_mem \"s\": host range 0x40000000-0x40001000 must lie in the machine's RAM \
                 above the hypervisor's image (0x41000000-0xc0000000)",
            ),
            (
                one(&r("s", "0xbfff_f000", "0", "0x2000")),
                "host range 0xbffff000-0xc0001000 must lie in the machine's RAM",
            ),
            (
                one(&r("s", "0x4810_0000", "0", "0x1000")),
                "shared_mem \"s\": host range 0x48100000-0x48101000 overlaps the 2 MiB kept for \
                 QEMU's device tree at 0x48000000",
            ),
            (
                one(&format!(
                    "{}, {}",
                    ok("s"),
                    r("s", "0x7100_0000", "0", "4096")
                )),
                "shared_mem \"s\": the id is used twice in this domain",
            ),
            (
                one(&format!(
                    "{}, {}",
                    ok("s"),
                    r("t", "0x7100_0000", "0x2300_0000", "4096")
                )),
                "shared_mem \"t\": guest range overlaps shared_mem \"s\" of this domain",
            ),
            (
                one(&(0..9)
                    .map(|i| {
                        r(
                            &format!("s{i}"),
                            &format!("{}", 0x7000_0000u64 + (i << 12)),
                            &format!("{}", i << 12),
                            "4096",
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")),
                "domain 'a': shared_mem: 9 regions, at most 8",
            ),
            // Across domains.
            (
                format!(
                    "{MACHINE}{}{}",
                    shm("a", &ok("s")),
                    shm("b", &r("s", "0x7000_0000", "0", "0x2000"))
                ),
                "domain 'b': shared_mem \"s\": host 0x70000000 and size 0x2000 differ from domain \
                 'a''s (0x70000000, 0x1000): one id is one region",
            ),
            (
                format!(
                    "{MACHINE}{}{}",
                    shm("a", &ok("s")),
                    shm("b", &r("t", "0x7000_0000", "0", "0x1000"))
                ),
                "domain 'b': shared_mem \"t\": host range overlaps shared_mem \"s\" of domain 'a'",
            ),
            (
                format!(
                    "{MACHINE}{}{}{}",
                    shm("a", &ok("s")),
                    shm("b", &ok("s").replace(" }", ", owner = true }")),
                    shm("c", &ok("s").replace(" }", ", owner = true }"))
                ),
                "domain 'c': shared_mem \"s\": a second owner (domain 'b' owns it)",
            ),
            (
                format!(
                    "[machine]\ncpus = 4\nmemory = \"1G\"\n{}{}",
                    domain("a", "memory = \"400M\"").replace("memory = \"256M\"\n", ""),
                    shm("b", &r("s", "0x6000_0000", "0", "\"256M\""))
                ),
                "the domains' memory (656 MiB) and shared memory (256 MiB) plus 128 MiB for the \
                 hypervisor",
            ),
        ];
        for (text, want) in &cases {
            let e = errors(text);
            assert!(
                e.len() == 1 && e[0].contains(want),
                "want one error containing {want:?}, got {e:#?}\n{text}"
            );
        }
    }

    #[test]
    fn modules_go_around_shared_memory() {
        // Regions where the modules would go: 1 MiB at the first module's
        // address and 64 MiB up to QEMU's device tree (0x4800_0000).
        let text = format!(
            "{MACHINE}{}",
            domain(
                "a",
                "shared_mem = [{ id = \"s\", host = 0x4100_0000, guest = 0x2300_0000, size = \"1M\" },\n\
                 { id = \"t\", host = 0x4400_0000, guest = 0x2400_0000, size = \"64M\" }]"
            )
        );
        let s = parse(&text).unwrap();
        // The 30 MiB kernel starts on the next 2 MiB boundary after "s";
        // the 20 MiB ramdisk does not fit the 16 MiB left below "t" and
        // goes above QEMU's device tree.
        let p = s.place_modules(&sizes(30 * MIB, 20 * MIB)).unwrap();
        let addrs: Vec<u64> = p.iter().map(|p| p.addr).collect();
        assert_eq!(addrs, [0x4120_0000, 0x4820_0000]);
        // The RAM left for the domains counts the shared memory out: a
        // 2 GiB machine less 16 + 2 MiB, 100 + 20 of modules and 65 of
        // regions leaves 1845 MiB, short of 1854 (which the budget at
        // validation, 1854 + 65 + 128 MiB, lets through).
        let big = text.replace("memory = \"256M\"", "memory = \"1854M\"");
        let s = parse(&big).unwrap();
        let e = s.place_modules(&sizes(100 * MIB, 20 * MIB)).unwrap_err();
        assert_eq!(
            e,
            "the modules take 120 MiB: the 1845 MiB of RAM left cannot hold the domains' 1854 MiB"
        );
        // The budget at validation counts it too.
        let tight = format!(
            "[machine]\ncpus = 4\nmemory = \"512M\"\n{}",
            domain(
                "a",
                "memory = \"300M\"\nshared_mem = [{ id = \"s\", host = 0x5000_0000, guest = 0, size = \"150M\" }]"
            )
            .replace("memory = \"256M\"\n", "")
        );
        let e = errors(&tight);
        assert_eq!(
            e,
            [
                "the domains' memory (300 MiB) and shared memory (150 MiB) plus 128 MiB for the \
              hypervisor, its modules and QEMU's device tree exceeds the machine's 512 MiB"
            ]
        );
    }

    /// The Xen nodes: labels and references for channels (each end once,
    /// a mirror entry not repeated), shared memory, xen,enhanced, peers;
    /// dtc turns the labels into phandles.
    #[test]
    fn dts_for_xen_domains() {
        let dir = temp_dir();
        let s = parse(&xen_text()).unwrap();
        let p = s.place_modules(&sizes(0x1a2_b3c4, 0x12_3456)).unwrap();
        let dts = s.chosen_dts(&p);
        let linux1 = r#"		linux1 {
			compatible = "xen,domain";
			#address-cells = <2>;
			#size-cells = <2>;
			memory = <0 262144>;
			cpus = <2>;
			vpl011;
			hv,on-crash = "destroy";
			xen,enhanced = "no-xenstore";
			hv,xen-peers = "linux3";

			module@41000000 {
				compatible = "multiboot,kernel", "multiboot,module";
				reg = <0x0 0x41000000 0x0 0x1a2b3c4>;
			};

			module@42c00000 {
				compatible = "multiboot,ramdisk", "multiboot,module";
				reg = <0x0 0x42c00000 0x0 0x123456>;
			};

			hv_evtchn_0_10: evtchn-10 {
				compatible = "xen,evtchn-v1";
				xen,evtchn = <10 &hv_evtchn_1_11>;
			};

			hv_evtchn_0_12: evtchn-12 {
				compatible = "xen,evtchn-v1";
				xen,evtchn = <12 &hv_evtchn_1_13>;
			};

			shm-ring {
				compatible = "xen,domain-shared-memory-v1";
				xen,shm-id = "ring";
				xen,shared-mem = <0x0 0x70000000 0x1 0x0 0x0 0x10000>;
				role = "owner";
			};
		};
"#;
        assert!(dts.contains(linux1), "{dts}");
        let linux2_tail = r#"			hv_evtchn_1_11: evtchn-11 {
				compatible = "xen,evtchn-v1";
				xen,evtchn = <11 &hv_evtchn_0_10>;
			};

			hv_evtchn_1_13: evtchn-13 {
				compatible = "xen,evtchn-v1";
				xen,evtchn = <13 &hv_evtchn_0_12>;
			};

			shm-ring {
				compatible = "xen,domain-shared-memory-v1";
				xen,shm-id = "ring";
				xen,shared-mem = <0x0 0x70000000 0x0 0x23000000 0x0 0x10000>;
				role = "borrower";
			};

			shm-log {
				compatible = "xen,domain-shared-memory-v1";
				xen,shm-id = "log";
				xen,shared-mem = <0x0 0x70800000 0x0 0x24000000 0x0 0x1000>;
			};
		};
"#;
        assert!(dts.contains(linux2_tail), "{dts}");
        assert!(dts.contains("\t\t\txen,enhanced = \"enabled\";\n"));
        assert!(dts.contains("\t\t\txen,enhanced = \"disabled\";\n"));
        assert_eq!(dts.matches(": evtchn-").count(), 4);

        if crate::host::have("dtc") {
            let head = "/dts-v1/;\n/ {\n\t#address-cells = <2>;\n\t#size-cells = <2>;\n\
                        \tintc: intc { phandle = <1>; };\n\
                        \tchosen {\n\t\tbootargs = \"x\";\n\t};\n};\n";
            let src = dir.join("xen.dts");
            std::fs::write(&src, format!("{head}{dts}")).unwrap();
            let out = std::process::Command::new("dtc")
                .args(["-I", "dts", "-O", "dtb", "-o"])
                .arg(dir.join("xen.dtb"))
                .arg(&src)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "dtc refused: {stderr}\n{dts}");
            assert!(stderr.trim().is_empty(), "dtc warned: {stderr}");
            let back = std::process::Command::new("dtc")
                .args(["-I", "dtb", "-O", "dts"])
                .arg(dir.join("xen.dtb"))
                .output()
                .unwrap();
            let back = String::from_utf8_lossy(&back.stdout);
            // Each end got a phandle (none taken twice, 1 is QEMU's
            // interrupt controller's here) and names its peer's.
            let mut ph = std::collections::HashMap::new();
            let mut refs = Vec::new();
            let mut node = String::new();
            for line in back.lines().map(str::trim) {
                if line.ends_with('{') {
                    node = line.trim_end_matches(" {").to_string();
                } else if let Some(v) = line.strip_prefix("phandle = <") {
                    let v =
                        u32::from_str_radix(v.trim_end_matches(">;").trim_start_matches("0x"), 16)
                            .unwrap();
                    assert!(ph.insert(v, node.clone()).is_none(), "{back}");
                } else if let Some(v) = line.strip_prefix("xen,evtchn = <") {
                    let cells: Vec<u32> = v
                        .trim_end_matches(">;")
                        .split(' ')
                        .map(|c| u32::from_str_radix(c.trim_start_matches("0x"), 16).unwrap())
                        .collect();
                    refs.push((node.clone(), cells[0], cells[1]));
                }
            }
            assert_eq!(refs.len(), 4, "{back}");
            assert_eq!(ph.get(&1).map(String::as_str), Some("intc"));
            let port_of = |n: &str| refs.iter().find(|r| r.0 == n).unwrap().1;
            for (n, port, target) in &refs {
                let peer = &ph[target];
                assert_ne!(peer, n);
                // The peer points back.
                let back_ref = refs.iter().find(|r| r.0 == *peer).unwrap();
                assert_eq!(ph[&back_ref.2], *n, "{back}");
                assert_eq!(*port, port_of(n));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
