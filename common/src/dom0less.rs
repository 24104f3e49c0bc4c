//! Domains described in the boot device tree: Xen's dom0less binding.
//!
//! Owns the reading of `/chosen` into a typed [`Boot`]: the hypervisor's
//! command line, the top-level (dom0) modules, and one [`DomainSpec`] per
//! `compatible = "xen,domain"` child, with every module of every domain in
//! one shared, bounded [`Modules`] table. It never touches the memory the
//! modules describe and builds nothing. Everything in the tree is treated as
//! hostile: no panic, no unchecked arithmetic, every loop bounded by the
//! tree or by a fixed table. A bad domain is refused alone: its modules are
//! rolled back, one [`DomainError`] names its node, and the next domain is
//! read as if it had not been there.
//!
//! # The binding (Xen's `docs/misc/arm/device-tree/booting.txt`)
//!
//! `/chosen` may hold `xen,xen-bootargs` (the hypervisor's command line),
//! top-level multiboot modules (dom0, as [`Modules::from_fdt`] reads them),
//! and domain nodes. A domain node has:
//! - `memory`: KiB, one cell or two (ImageBuilder writes `<0 N>`); required,
//!   [`MIN_MEMORY`] to [`MAX_MEMORY`], rounded up to 2 MiB;
//! - `cpus`: vCPUs, one cell, 1 to [`MAX_VCPUS`]; required;
//! - `vpl011`: empty; present = the domain gets a virtual PL011;
//! - `#address-cells`, `#size-cells`: for its children's `reg`; when absent,
//!   `/chosen`'s, then the root's, then 2 and 1;
//! - `capabilities`: one cell, [`CAP_CONTROL`] | [`CAP_HARDWARE`] |
//!   [`CAP_XENSTORE`]; other bits are refused, and so is a second hardware
//!   domain (a top-level dom0 is the hardware domain);
//! - `direct-map`: refused (it needs `xen,static-mem`, not supported);
//! - `passthrough`: `"enabled"` is refused until the SMMU driver exists,
//!   `"disabled"` accepted, anything else refused;
//! - `xen,enhanced`: `"enabled"` (also an empty value), `"legacy"` or
//!   `"no-xenstore"`; anything else refused;
//! - children with `compatible` `"multiboot,kernel"`, `"multiboot,ramdisk"`
//!   or `"multiboot,device-tree"` (normally also `"multiboot,module"`), with
//!   `reg` and, on the kernel, `bootargs`; a plain `"multiboot,module"` is
//!   the kernel if none was seen yet, else the ramdisk. At most one of each
//!   kind; a kernel is required.
//!
//! # Our additions
//!
//! - `hv,on-crash = "destroy" | "restart"` on a domain node: what happens
//!   when the domain crashes (default `"destroy"`, like xl's `on_crash`).
//! - vCPU pinning: a child `compatible = "xen,vcpu"; id = <N>;
//!   hard-affinity = <cpu ...>;` pins vCPU `N` (below `cpus`) to the listed
//!   physical CPUs (each below 64), kept as a mask per vCPU. One node per
//!   vCPU; the list may not be empty.
//! - Children with compatible `"xen,evtchn-v1"` or
//!   `"xen,domain-shared-memory-v1"` are accepted and only counted for now.
//!   Children without `compatible` are ignored; any other compatible refuses
//!   the domain (a domain that asks for something we do not give is not
//!   built half-way).
//!
//! # Checks on a domain's modules
//!
//! Each module's `reg` is read with the domain's cells, must be non-empty,
//! must not wrap, must lie wholly inside one of the RAM ranges given to
//! [`parse`], and the modules together (in tree order) must leave
//! [`GUEST_DTB_ROOM`] of the domain's memory free for the device tree the
//! builder writes. They then enter the shared table, where they may not
//! overlap any other module; an identical module (kind, start, size) of
//! another domain or of dom0 is shared, as Xen lets several domains boot one
//! kernel image. The table holds [`crate::modules::MAX_MODULES`]; a module
//! that finds it full refuses its domain.
//!
//! Owners in the table: 0 for the top-level set, `n` for `Boot::domains[n - 1]`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use core::fmt;

use arrayvec::ArrayVec;

use crate::fdt::{Fdt, Node};
use crate::memory::PhysRange;
use crate::modules::{
    self, BootModule, MAX_MODULES, ModuleError, ModuleKind, Modules, be32, owner_bit,
};

/// Most domains built from `/chosen` (dom0 not counted).
pub const MAX_DOMAINS: usize = 16;
/// Most vCPUs per domain.
pub const MAX_VCPUS: u32 = 8;
/// Least memory a domain may have, in bytes.
pub const MIN_MEMORY: u64 = 4 << 20;
/// Most memory a domain may have, in bytes: the guest RAM window.
pub const MAX_MEMORY: u64 = 3 << 30;
/// Granule a domain's memory is rounded up to.
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// Memory a domain's modules must leave free for its device tree.
pub const GUEST_DTB_ROOM: u64 = 2 << 20;
/// Physical CPUs a `hard-affinity` can name (the mask is a `u64`).
pub const MAX_PCPUS: u32 = 64;
/// `capabilities` bit: the control domain (may affect other domains).
pub const CAP_CONTROL: u32 = 1;
/// `capabilities` bit: the hardware domain (owns the physical devices).
pub const CAP_HARDWARE: u32 = 2;
/// `capabilities` bit: the domain runs xenstore.
pub const CAP_XENSTORE: u32 = 4;
const CAP_ALL: u32 = CAP_CONTROL | CAP_HARDWARE | CAP_XENSTORE;

/// What happens when a domain crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCrash {
    /// The domain is torn down (the default).
    Destroy,
    /// The domain is torn down and built again from its modules.
    Restart,
}

/// The domain's `passthrough` property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    /// Absent.
    Unset,
    /// `"enabled"` (refused for now, so never in an accepted domain).
    Enabled,
    /// `"disabled"`.
    Disabled,
}

/// One domain to build, as `/chosen` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSpec<'a> {
    /// The node's name, used as the domain's name.
    pub node: &'a str,
    /// Memory in bytes (`memory` KiB times 1024), rounded up to 2 MiB.
    pub memory: u64,
    /// Number of vCPUs, 1 to [`MAX_VCPUS`].
    pub cpus: u32,
    /// Whether the domain gets a virtual PL011.
    pub vpl011: bool,
    /// [`CAP_CONTROL`], [`CAP_HARDWARE`], [`CAP_XENSTORE`].
    pub capabilities: u32,
    /// `direct-map` (refused for now, so always false).
    pub direct_map: bool,
    /// `passthrough` (never `Enabled` for now).
    pub passthrough: Passthrough,
    /// `xen,enhanced`: `"enabled"`, `"legacy"` or `"no-xenstore"`.
    pub enhanced: Option<&'a str>,
    /// `hv,on-crash`.
    pub on_crash: OnCrash,
    /// The kernel (its `owner` is this domain; the table may share it).
    pub kernel: BootModule<'a>,
    /// The ramdisk.
    pub ramdisk: Option<BootModule<'a>>,
    /// The partial device tree.
    pub device_tree: Option<BootModule<'a>>,
    /// The kernel module's `bootargs` (a shared table entry keeps only the
    /// first owner's, so read them here).
    pub bootargs: Option<&'a str>,
    /// Per vCPU, the physical CPUs it may run on (bit n = CPU n); 0 = not
    /// pinned. Entries at and above `cpus` are 0.
    pub affinity: [u64; MAX_VCPUS as usize],
    /// Number of `xen,evtchn-v1` children.
    pub static_evtchns: u8,
    /// Number of `xen,domain-shared-memory-v1` children.
    pub shared_mems: u8,
}

/// Why a domain node was refused; each names the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainError<'a> {
    /// A module was refused (bad `reg`, empty, wrapping, overlapping, a
    /// second of its kind, or the table full), with the domain's name.
    Module(&'a str, ModuleError<'a>),
    /// The domain (named) has no kernel module.
    MissingKernel(&'a str),
    /// A child (second) of the domain (first) with a compatible we do not
    /// know.
    UnknownCompatible(&'a str, &'a str),
    /// A module (second) of the domain (first) outside every RAM range.
    OutsideRam(&'a str, &'a str),
    /// The domain's (first) modules up to this one (second) leave less than
    /// [`GUEST_DTB_ROOM`] of its memory.
    Oversized(&'a str, &'a str),
    /// A property of the domain (first) is missing, malformed or refused:
    /// the property, and why.
    BadProperty(&'a str, &'static str, &'static str),
    /// More than [`MAX_DOMAINS`] domains: this one is left out.
    TooManyDomains(&'a str),
}

impl fmt::Display for DomainError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DomainError::Module(d, e) => match e {
                ModuleError::Malformed(why) => {
                    write!(f, "/chosen/{d}: device tree malformed: {why}")
                }
                ModuleError::BadReg(n) => write!(f, "/chosen/{d}/{n}: bad or missing reg"),
                ModuleError::Empty(n) => write!(f, "/chosen/{d}/{n}: module is empty"),
                ModuleError::Overflow(n) => {
                    write!(f, "/chosen/{d}/{n}: module runs past the address space")
                }
                ModuleError::Overlap(other, n) => write!(
                    f,
                    "/chosen/{d}/{n}: overlaps boot module {other} (of this domain, another or dom0)"
                ),
                ModuleError::TooMany(n) => {
                    write!(
                        f,
                        "/chosen/{d}/{n}: more than {MAX_MODULES} boot modules in all"
                    )
                }
                ModuleError::Duplicate(n) => {
                    write!(f, "/chosen/{d}/{n}: a second module of the same kind")
                }
            },
            DomainError::MissingKernel(d) => write!(f, "/chosen/{d}: no kernel module"),
            DomainError::UnknownCompatible(d, c) => {
                write!(f, "/chosen/{d}/{c}: unknown compatible")
            }
            DomainError::OutsideRam(d, m) => write!(f, "/chosen/{d}/{m}: module lies outside RAM"),
            DomainError::Oversized(d, m) => write!(
                f,
                "/chosen/{d}/{m}: modules leave less than {} MiB of the domain's memory for its device tree",
                GUEST_DTB_ROOM >> 20
            ),
            DomainError::BadProperty(d, p, why) => write!(f, "/chosen/{d}: {p}: {why}"),
            DomainError::TooManyDomains(d) => {
                write!(f, "/chosen/{d}: more than {MAX_DOMAINS} domains")
            }
        }?;
        f.write_str("; domain not built")
    }
}

/// Everything `/chosen` asks the hypervisor to boot.
#[derive(Clone, Debug, Default)]
pub struct Boot<'a> {
    /// `/chosen/xen,xen-bootargs`, when it is one string.
    pub xen_bootargs: Option<&'a str>,
    /// Every accepted module of every owner (dom0 is owner 0, `domains[i]`
    /// owner `i + 1`), at most [`MAX_MODULES`].
    pub modules: Modules<'a>,
    /// The top-level kernel and ramdisk, when there is a top-level kernel.
    /// Read as [`Modules::from_fdt`] reads them: not checked against the
    /// RAM ranges (the caller checks them against its boot map).
    pub dom0: Option<(BootModule<'a>, Option<BootModule<'a>>)>,
    /// Why the top-level modules were refused (none of them is then in
    /// `modules`).
    pub dom0_error: Option<ModuleError<'a>>,
    /// The accepted domains, in tree order.
    pub domains: ArrayVec<DomainSpec<'a>, MAX_DOMAINS>,
    /// One error per refused domain, in tree order.
    pub errors: ArrayVec<DomainError<'a>, MAX_DOMAINS>,
    /// Refused domains whose error did not fit in `errors`.
    pub errors_dropped: u32,
}

impl<'a> Boot<'a> {
    fn refuse(&mut self, e: DomainError<'a>) {
        if self.errors.try_push(e).is_err() {
            self.errors_dropped = self.errors_dropped.saturating_add(1);
        }
    }
}

/// Reads `/chosen` of `dtb`; module checks use `ram`, the host's RAM ranges.
/// Errs only when the tree itself is malformed; a refused domain or dom0
/// module set is reported inside the [`Boot`].
pub fn parse<'a>(dtb: &'a [u8], ram: &[PhysRange]) -> Result<Boot<'a>, ModuleError<'a>> {
    let fdt = Fdt::new(dtb).map_err(ModuleError::Malformed)?;
    let root = fdt.root();
    let mut boot = Boot::default();
    let Some(chosen) = modules::chosen(&root) else {
        return Ok(boot);
    };
    boot.xen_bootargs = chosen
        .property("xen,xen-bootargs")
        .and_then(modules::string);
    let (acells, scells) = modules::cells(&[chosen, root]);
    match boot.modules.push_top_level(&chosen, acells, scells) {
        Ok(()) => {
            boot.dom0 = boot.modules.first(ModuleKind::Kernel).map(|k| {
                let ramdisk = boot.modules.first(ModuleKind::Ramdisk).copied();
                (*k, ramdisk)
            });
        }
        Err(e) => {
            boot.modules.remove_owner(0);
            boot.dom0_error = Some(e);
        }
    }
    let mut hardware_taken = boot.dom0.is_some();
    for node in chosen.children() {
        if !modules::compatible(&node, "xen,domain") {
            continue;
        }
        // Owner n is domains[n - 1]; a full list leaves no owner to give.
        let owner = match u8::try_from(boot.domains.len()) {
            Ok(n) if !boot.domains.is_full() => n.saturating_add(1),
            _ => {
                boot.refuse(DomainError::TooManyDomains(node.name()));
                continue;
            }
        };
        let parents = [node, chosen, root];
        match domain(&parents, owner, ram, hardware_taken, &mut boot.modules) {
            Ok(spec) => {
                hardware_taken |= spec.capabilities & CAP_HARDWARE != 0;
                if let Err(e) = boot.domains.try_push(spec) {
                    // Not reached: fullness was checked above.
                    boot.modules.remove_owner(owner);
                    boot.refuse(DomainError::TooManyDomains(e.element().node));
                }
            }
            Err(e) => {
                boot.modules.remove_owner(owner);
                boot.refuse(e);
            }
        }
    }
    Ok(boot)
}

/// Reads the domain `chain[0]` (its parents follow, for the cells) and adds
/// its modules to `table` as `owner`. On an error some of them may be in
/// the table: the caller rolls them back.
fn domain<'a>(
    chain: &[Node<'a>; 3],
    owner: u8,
    ram: &[PhysRange],
    hardware_taken: bool,
    table: &mut Modules<'a>,
) -> Result<DomainSpec<'a>, DomainError<'a>> {
    let [node, ..] = chain;
    let dom = node.name();
    let bad = |p: &'static str, why: &'static str| DomainError::BadProperty(dom, p, why);
    let memory = memory(node).map_err(|why| bad("memory", why))?;
    let cpus = match node.property("cpus").map(be32) {
        None => return Err(bad("cpus", "missing")),
        Some(None) => return Err(bad("cpus", "not one cell")),
        Some(Some(n)) if n == 0 || n > MAX_VCPUS => return Err(bad("cpus", "not 1 to 8")),
        Some(Some(n)) => n,
    };
    let capabilities = match node.property("capabilities").map(be32) {
        None => 0,
        Some(None) => return Err(bad("capabilities", "not one cell")),
        Some(Some(c)) if c & !CAP_ALL != 0 => {
            return Err(bad(
                "capabilities",
                "unknown bits (1 control, 2 hardware, 4 xenstore)",
            ));
        }
        Some(Some(c)) if c & CAP_HARDWARE != 0 && hardware_taken => {
            return Err(bad("capabilities", "a second hardware domain"));
        }
        Some(Some(c)) => c,
    };
    if node.property("direct-map").is_some() {
        return Err(bad("direct-map", "needs xen,static-mem, not supported"));
    }
    let passthrough = match node.property("passthrough").map(modules::string) {
        None => Passthrough::Unset,
        Some(Some("disabled")) => Passthrough::Disabled,
        Some(Some("enabled")) => {
            return Err(bad(
                "passthrough",
                "device passthrough needs the SMMU driver, not yet",
            ));
        }
        Some(_) => return Err(bad("passthrough", "neither \"enabled\" nor \"disabled\"")),
    };
    let enhanced = match node.property("xen,enhanced") {
        None => None,
        Some([]) => Some("enabled"),
        Some(v) => match modules::string(v) {
            Some(s @ ("enabled" | "legacy" | "no-xenstore")) => Some(s),
            _ => {
                return Err(bad(
                    "xen,enhanced",
                    "not \"enabled\", \"legacy\" or \"no-xenstore\"",
                ));
            }
        },
    };
    let on_crash = match node.property("hv,on-crash").map(modules::string) {
        None => OnCrash::Destroy,
        Some(Some("destroy")) => OnCrash::Destroy,
        Some(Some("restart")) => OnCrash::Restart,
        Some(_) => return Err(bad("hv,on-crash", "neither \"destroy\" nor \"restart\"")),
    };
    let (acells, scells) = modules::cells(chain);

    let mut kernel = None;
    let mut ramdisk = None;
    let mut device_tree = None;
    // The modules in tree order, so a full table names the right node.
    let mut order: ArrayVec<BootModule<'a>, 3> = ArrayVec::new();
    let mut used = GUEST_DTB_ROOM;
    let mut affinity = [0u64; MAX_VCPUS as usize];
    let mut static_evtchns = 0u8;
    let mut shared_mems = 0u8;
    for child in node.children() {
        let name = child.name();
        if child.property("compatible").is_none() {
            continue;
        }
        if let Some(specific) = modules::module_kind(&child) {
            let kind = match specific {
                Some(k) => k,
                None if kernel.is_none() => ModuleKind::Kernel,
                None => ModuleKind::Ramdisk,
            };
            let m = modules::read_module(&child, kind, acells, scells, owner)
                .map_err(|e| DomainError::Module(dom, e))?;
            let slot = match kind {
                ModuleKind::Kernel => &mut kernel,
                ModuleKind::Ramdisk => &mut ramdisk,
                ModuleKind::DeviceTree => &mut device_tree,
            };
            if slot.is_some() {
                return Err(DomainError::Module(dom, ModuleError::Duplicate(name)));
            }
            if !ram.iter().any(|r| r.contains(&m.range)) {
                return Err(DomainError::OutsideRam(dom, name));
            }
            used = used
                .checked_add(m.range.size())
                .filter(|&u| u <= memory)
                .ok_or(DomainError::Oversized(dom, name))?;
            *slot = Some(m);
            // At most one per kind, three kinds: never full.
            order
                .try_push(m)
                .map_err(|_| DomainError::Module(dom, ModuleError::Duplicate(name)))?;
        } else if modules::compatible(&child, "xen,vcpu") {
            vcpu(&child, cpus, &mut affinity).map_err(|(p, why)| bad(p, why))?;
        } else if modules::compatible(&child, "xen,evtchn-v1") {
            static_evtchns = static_evtchns
                .checked_add(1)
                .ok_or(bad("xen,evtchn-v1", "more than 255 nodes"))?;
        } else if modules::compatible(&child, "xen,domain-shared-memory-v1") {
            shared_mems = shared_mems
                .checked_add(1)
                .ok_or(bad("xen,domain-shared-memory-v1", "more than 255 nodes"))?;
        } else {
            return Err(DomainError::UnknownCompatible(dom, name));
        }
    }
    let kernel = kernel.ok_or(DomainError::MissingKernel(dom))?;
    for m in order {
        table.push(m).map_err(|e| DomainError::Module(dom, e))?;
    }
    // What a domain is handed carries only its own bit.
    let own = |m: BootModule<'a>| BootModule {
        owners: owner_bit(owner).unwrap_or(0),
        ..m
    };
    Ok(DomainSpec {
        node: dom,
        memory,
        cpus,
        vpl011: node.property("vpl011").is_some(),
        capabilities,
        direct_map: false,
        passthrough,
        enhanced,
        on_crash,
        kernel: own(kernel),
        ramdisk: ramdisk.map(own),
        device_tree: device_tree.map(own),
        bootargs: kernel.bootargs,
        affinity,
        static_evtchns,
        shared_mems,
    })
}

/// The domain's memory in bytes, checked and rounded up to 2 MiB.
fn memory(node: &Node<'_>) -> Result<u64, &'static str> {
    let v = node.property("memory").ok_or("missing")?;
    let kib = match *v {
        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => return Err("not 1 or 2 cells"),
    };
    let bytes = kib.checked_mul(1024).ok_or("more than 3 GiB")?;
    if bytes < MIN_MEMORY {
        return Err("less than 4 MiB");
    }
    if bytes > MAX_MEMORY {
        return Err("more than 3 GiB");
    }
    // At most 3 GiB: the rounding cannot overflow.
    bytes
        .checked_next_multiple_of(MEMORY_ALIGN)
        .ok_or("more than 3 GiB")
}

/// Reads one `xen,vcpu` child into `affinity`; errs with the property and
/// why.
fn vcpu(
    node: &Node<'_>,
    cpus: u32,
    affinity: &mut [u64; MAX_VCPUS as usize],
) -> Result<(), (&'static str, &'static str)> {
    let id = node
        .property("id")
        .and_then(be32)
        .ok_or(("xen,vcpu id", "missing or not one cell"))?;
    if id >= cpus {
        return Err(("xen,vcpu id", "not below the domain's cpus"));
    }
    let slot = usize::try_from(id)
        .ok()
        .and_then(|i| affinity.get_mut(i))
        .ok_or(("xen,vcpu id", "not below the domain's cpus"))?;
    if *slot != 0 {
        return Err(("xen,vcpu id", "a second node for one vCPU"));
    }
    let list = node
        .property("hard-affinity")
        .filter(|l| !l.is_empty() && l.len() % 4 == 0)
        .ok_or((
            "xen,vcpu hard-affinity",
            "missing, empty or not whole cells",
        ))?;
    let mut mask = 0u64;
    for cell in list.chunks_exact(4) {
        let cpu = be32(cell).unwrap_or(u32::MAX);
        let bit = 1u64
            .checked_shl(cpu)
            .filter(|_| cpu < MAX_PCPUS)
            .ok_or(("xen,vcpu hard-affinity", "a CPU number of 64 or more"))?;
        mask |= bit;
    }
    *slot = mask;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::{String, ToString};
    use std::vec::Vec;
    use std::{format, vec};
    use vm_fdt::FdtWriter;

    /// A property value for the test trees.
    #[derive(Clone)]
    enum V {
        Cells(Vec<u32>),
        Str(&'static str),
        Strs(&'static [&'static str]),
        Bytes(Vec<u8>),
    }

    /// A node of a test tree: properties first, then children.
    #[derive(Clone)]
    struct N {
        name: String,
        props: Vec<(&'static str, V)>,
        kids: Vec<N>,
    }

    impl N {
        fn new(name: &str) -> Self {
            N {
                name: name.to_string(),
                props: Vec::new(),
                kids: Vec::new(),
            }
        }
        /// Sets (or replaces) a property.
        fn p(mut self, name: &'static str, v: V) -> Self {
            self.props.retain(|(n, _)| *n != name);
            self.props.push((name, v));
            self
        }
        fn cells(self, name: &'static str, c: &[u32]) -> Self {
            self.p(name, V::Cells(c.to_vec()))
        }
        fn s(self, name: &'static str, s: &'static str) -> Self {
            self.p(name, V::Str(s))
        }
        fn empty(self, name: &'static str) -> Self {
            self.p(name, V::Bytes(Vec::new()))
        }
        fn without(mut self, name: &str) -> Self {
            self.props.retain(|(n, _)| *n != name);
            self
        }
        fn kid(mut self, k: N) -> Self {
            self.kids.push(k);
            self
        }
        fn write(&self, w: &mut FdtWriter) {
            let n = w.begin_node(&self.name).unwrap();
            for (name, v) in &self.props {
                match v {
                    V::Cells(c) => w.property_array_u32(name, c).unwrap(),
                    V::Str(s) => w.property_string(name, s).unwrap(),
                    V::Strs(l) => w
                        .property_string_list(name, l.iter().map(|s| s.to_string()).collect())
                        .unwrap(),
                    V::Bytes(b) => w.property(name, b).unwrap(),
                }
            }
            for k in &self.kids {
                k.write(w);
            }
            w.end_node(n).unwrap();
        }
    }

    /// A root like QEMU virt's (2/2 cells) around `chosen`.
    fn dtb(chosen: N) -> Vec<u8> {
        dtb_with_root(
            N::new("")
                .cells("#address-cells", &[2])
                .cells("#size-cells", &[2]),
            chosen,
        )
    }

    fn dtb_with_root(root: N, chosen: N) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        root.kid(chosen).write(&mut w);
        w.finish().unwrap()
    }

    fn chosen() -> N {
        N::new("chosen")
    }

    const K: &[&str] = &["multiboot,kernel", "multiboot,module"];
    const R: &[&str] = &["multiboot,ramdisk", "multiboot,module"];
    const D: &[&str] = &["multiboot,device-tree", "multiboot,module"];
    const PLAIN: &[&str] = &["multiboot,module"];

    /// A module node with a 2+2-cell `reg`.
    fn module(name: &str, compat: &'static [&'static str], base: u64, size: u64) -> N {
        N::new(name).p("compatible", V::Strs(compat)).cells(
            "reg",
            &[
                (base >> 32) as u32,
                base as u32,
                (size >> 32) as u32,
                size as u32,
            ],
        )
    }

    /// A domain of `mib` MiB and one vCPU, 2/2 cells for its modules.
    fn dom(name: &str, mib: u32) -> N {
        N::new(name)
            .p("compatible", V::Strs(&["xen,domain"]))
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2])
            .cells("memory", &[0, mib * 1024])
            .cells("cpus", &[1])
    }

    /// A 64 MiB domain with a kernel at `base`.
    fn simple(name: &str, base: u64) -> N {
        dom(name, 64).kid(module("kernel", K, base, 0x10_0000))
    }

    const MIB: u64 = 1 << 20;
    const RAM: [PhysRange; 2] = [
        PhysRange {
            start: 0x4000_0000,
            end: 0xc000_0000,
        },
        PhysRange {
            start: 0x1_0000_0000,
            end: 0x1_4000_0000,
        },
    ];

    /// Checks what every parse result must satisfy.
    fn invariants(boot: &Boot<'_>) {
        let all: Vec<_> = boot.modules.iter().collect();
        assert!(all.len() <= MAX_MODULES);
        for (i, m) in all.iter().enumerate() {
            assert!(!m.range.is_empty());
            assert_ne!(m.owners, 0);
            assert!(m.owners & owner_bit(m.owner).unwrap() != 0);
            for o in &all[..i] {
                assert!(!m.range.overlaps(&o.range), "{m:?} overlaps {o:?}");
            }
        }
        for (i, d) in boot.domains.iter().enumerate() {
            let bit = 1u32 << (i + 1);
            let mods = [Some(d.kernel), d.ramdisk, d.device_tree];
            let mut used = GUEST_DTB_ROOM;
            for m in mods.into_iter().flatten() {
                assert!(RAM.iter().any(|r| r.contains(&m.range)));
                assert!(
                    all.iter()
                        .any(|t| t.owners & bit != 0 && t.range == m.range && t.kind == m.kind),
                    "{m:?} of {} not in the table",
                    d.node
                );
                used += m.range.size();
            }
            assert!(used <= d.memory);
            assert_eq!(d.memory % MEMORY_ALIGN, 0);
            assert!((MIN_MEMORY..=MAX_MEMORY).contains(&d.memory));
            assert!((1..=MAX_VCPUS).contains(&d.cpus));
            assert!(d.affinity[d.cpus as usize..].iter().all(|&a| a == 0));
        }
        for e in &boot.errors {
            let s = e.to_string();
            assert!(s.starts_with("/chosen/") && s.ends_with("; domain not built"));
        }
    }

    fn parse_ok(dtb: &[u8]) -> Boot<'_> {
        let boot = parse(dtb, &RAM).unwrap();
        check(dtb, &boot);
        boot
    }

    /// Every domain node is either built or refused, and [`invariants`].
    fn check(dtb: &[u8], boot: &Boot<'_>) {
        let fdt = Fdt::new(dtb).unwrap();
        let nodes = modules::chosen(&fdt.root()).map_or(0, |c| {
            c.children()
                .filter(|n| modules::compatible(n, "xen,domain"))
                .count()
        });
        let n = boot.domains.len() + boot.errors.len() + boot.errors_dropped as usize;
        assert_eq!(n, nodes);
        invariants(boot);
    }

    /// `bad` is refused with `want` and rolled back; a good domain after it
    /// is still built, as owner 1, its modules alone in the table.
    #[track_caller]
    fn refused(bad: N, want: DomainError<'_>) {
        let tree = dtb(chosen().kid(bad).kid(simple("good", 0xa000_0000)));
        let boot = parse_ok(&tree);
        assert_eq!(boot.errors.as_slice(), &[want]);
        assert_eq!(boot.errors_dropped, 0);
        assert_eq!(boot.domains.len(), 1);
        assert_eq!(boot.domains[0].node, "good");
        assert_eq!(boot.modules.len(), 1);
        assert!(
            boot.modules
                .iter()
                .all(|m| m.owners == 0b10 && m.owner == 1)
        );
    }

    #[test]
    fn a_domain_field_by_field() {
        let d = dom("DomU1", 256)
            .cells("cpus", &[2])
            .empty("vpl011")
            .cells("capabilities", &[CAP_XENSTORE | CAP_CONTROL])
            .s("passthrough", "disabled")
            .s("xen,enhanced", "no-xenstore")
            .s("hv,on-crash", "restart")
            .kid(module("module@60000000", K, 0x6000_0000, 0x80_0000).s("bootargs", "console=hvc0"))
            .kid(module("module@61000000", R, 0x6100_0000, 0x1000))
            .kid(module("module@62000000", D, 0x6200_0000, 0x800))
            .kid(
                N::new("vcpu0")
                    .p("compatible", V::Strs(&["xen,vcpu"]))
                    .cells("id", &[0])
                    .cells("hard-affinity", &[2, 3]),
            )
            .kid(N::new("evtchn").p("compatible", V::Strs(&["xen,evtchn-v1"])))
            .kid(N::new("shm0").p("compatible", V::Strs(&["xen,domain-shared-memory-v1"])))
            .kid(N::new("shm1").p("compatible", V::Strs(&["xen,domain-shared-memory-v1"])))
            .kid(N::new("note").s("label", "no compatible: ignored"));
        let tree = dtb(chosen().kid(d));
        let boot = parse_ok(&tree);
        assert!(boot.errors.is_empty() && boot.dom0.is_none() && boot.dom0_error.is_none());
        let d = &boot.domains[0];
        let own = |kind, start, size, node, bootargs| BootModule {
            kind,
            range: PhysRange::from_base_size(start, size),
            bootargs,
            node,
            owner: 1,
            owners: 0b10,
        };
        let want = DomainSpec {
            node: "DomU1",
            memory: 256 * MIB,
            cpus: 2,
            vpl011: true,
            capabilities: CAP_XENSTORE | CAP_CONTROL,
            direct_map: false,
            passthrough: Passthrough::Disabled,
            enhanced: Some("no-xenstore"),
            on_crash: OnCrash::Restart,
            kernel: own(
                ModuleKind::Kernel,
                0x6000_0000,
                0x80_0000,
                "module@60000000",
                Some("console=hvc0"),
            ),
            ramdisk: Some(own(
                ModuleKind::Ramdisk,
                0x6100_0000,
                0x1000,
                "module@61000000",
                None,
            )),
            device_tree: Some(own(
                ModuleKind::DeviceTree,
                0x6200_0000,
                0x800,
                "module@62000000",
                None,
            )),
            bootargs: Some("console=hvc0"),
            affinity: [0b1100, 0, 0, 0, 0, 0, 0, 0],
            static_evtchns: 1,
            shared_mems: 2,
        };
        assert_eq!(*d, want);
        assert_eq!(boot.modules.len(), 3);
        assert_eq!(
            boot.modules.iter().copied().collect::<Vec<_>>(),
            [
                want.kernel,
                want.ramdisk.unwrap(),
                want.device_tree.unwrap()
            ]
        );
    }

    #[test]
    fn defaults_of_a_minimal_domain() {
        let tree = dtb(chosen().kid(simple("d", 0x6000_0000)));
        let boot = parse_ok(&tree);
        let d = &boot.domains[0];
        assert_eq!((d.memory, d.cpus), (64 * MIB, 1));
        assert!(!d.vpl011 && !d.direct_map);
        assert_eq!((d.capabilities, d.passthrough), (0, Passthrough::Unset));
        assert_eq!((d.enhanced, d.on_crash), (None, OnCrash::Destroy));
        assert_eq!((d.ramdisk, d.device_tree, d.bootargs), (None, None, None));
        assert_eq!(d.affinity, [0; MAX_VCPUS as usize]);
        assert_eq!((d.static_evtchns, d.shared_mems), (0, 0));
        // An empty xen,enhanced means "enabled", as in Xen.
        let tree = dtb(chosen().kid(simple("d", 0x6000_0000).empty("xen,enhanced")));
        assert_eq!(parse_ok(&tree).domains[0].enhanced, Some("enabled"));
        let tree = dtb(chosen().kid(simple("d", 0x6000_0000).s("xen,enhanced", "legacy")));
        assert_eq!(parse_ok(&tree).domains[0].enhanced, Some("legacy"));
    }

    #[test]
    fn on_crash() {
        for (v, want) in [("destroy", OnCrash::Destroy), ("restart", OnCrash::Restart)] {
            let tree = dtb(chosen().kid(simple("d", 0x6000_0000).s("hv,on-crash", v)));
            assert_eq!(parse_ok(&tree).domains[0].on_crash, want);
        }
        refused(
            simple("d", 0x6000_0000).s("hv,on-crash", "reboot"),
            DomainError::BadProperty("d", "hv,on-crash", "neither \"destroy\" nor \"restart\""),
        );
        refused(
            simple("d", 0x6000_0000).empty("hv,on-crash"),
            DomainError::BadProperty("d", "hv,on-crash", "neither \"destroy\" nor \"restart\""),
        );
    }

    #[test]
    fn memory_in_one_or_two_cells_rounded_up_to_2_mib() {
        let cases: &[(&[u32], u64)] = &[
            (&[0x1_0000], 64 * MIB),
            (&[0, 0x1_0000], 64 * MIB),
            (&[4096], 4 * MIB),
            (&[4097], 6 * MIB),
            (&[0, 5000], 6 * MIB),
            (&[0, 3 << 20], MAX_MEMORY),
            (&[(3 << 20) - 1], MAX_MEMORY),
        ];
        for &(cells, want) in cases {
            let tree = dtb(chosen().kid(dom("d", 0).cells("memory", cells).kid(module(
                "k",
                K,
                0x6000_0000,
                0x1000,
            ))));
            let boot = parse_ok(&tree);
            assert_eq!(boot.domains[0].memory, want, "memory = {cells:?}");
        }
    }

    #[test]
    fn bad_properties() {
        let d = || simple("d", 0x6000_0000);
        let bad = |p, why| DomainError::BadProperty("d", p, why);
        let cases: Vec<(N, DomainError<'_>)> = vec![
            (d().without("memory"), bad("memory", "missing")),
            (
                d().cells("memory", &[0, 0, 0x1_0000]),
                bad("memory", "not 1 or 2 cells"),
            ),
            (d().empty("memory"), bad("memory", "not 1 or 2 cells")),
            (
                d().cells("memory", &[4095]),
                bad("memory", "less than 4 MiB"),
            ),
            (
                d().cells("memory", &[0, 0]),
                bad("memory", "less than 4 MiB"),
            ),
            (
                d().cells("memory", &[0, (3 << 20) + 1]),
                bad("memory", "more than 3 GiB"),
            ),
            (
                d().cells("memory", &[u32::MAX, u32::MAX]),
                bad("memory", "more than 3 GiB"),
            ),
            (
                d().cells("memory", &[1, 0]),
                bad("memory", "more than 3 GiB"),
            ),
            (d().without("cpus"), bad("cpus", "missing")),
            (d().cells("cpus", &[0, 1]), bad("cpus", "not one cell")),
            (d().cells("cpus", &[0]), bad("cpus", "not 1 to 8")),
            (
                d().cells("cpus", &[MAX_VCPUS + 1]),
                bad("cpus", "not 1 to 8"),
            ),
            (
                d().cells("capabilities", &[0, 1]),
                bad("capabilities", "not one cell"),
            ),
            (
                d().cells("capabilities", &[8]),
                bad(
                    "capabilities",
                    "unknown bits (1 control, 2 hardware, 4 xenstore)",
                ),
            ),
            (
                d().empty("direct-map"),
                bad("direct-map", "needs xen,static-mem, not supported"),
            ),
            (
                d().s("passthrough", "enabled"),
                bad(
                    "passthrough",
                    "device passthrough needs the SMMU driver, not yet",
                ),
            ),
            (
                d().s("passthrough", "on"),
                bad("passthrough", "neither \"enabled\" nor \"disabled\""),
            ),
            (
                d().s("xen,enhanced", "yes"),
                bad(
                    "xen,enhanced",
                    "not \"enabled\", \"legacy\" or \"no-xenstore\"",
                ),
            ),
            (
                d().p("xen,enhanced", V::Bytes(b"enabled".to_vec())),
                bad(
                    "xen,enhanced",
                    "not \"enabled\", \"legacy\" or \"no-xenstore\"",
                ),
            ),
        ];
        for (node, want) in cases {
            refused(node, want);
        }
    }

    #[test]
    fn one_hardware_domain() {
        let hw = |n: &str, base| simple(n, base).cells("capabilities", &[CAP_HARDWARE]);
        // Two domains ask for the hardware: the second is refused.
        let tree = dtb(chosen().kid(hw("a", 0x6000_0000)).kid(hw("b", 0x7000_0000)));
        let boot = parse_ok(&tree);
        assert_eq!(boot.domains.len(), 1);
        assert_eq!(boot.domains[0].capabilities, CAP_HARDWARE);
        assert_eq!(
            boot.errors.as_slice(),
            [DomainError::BadProperty(
                "b",
                "capabilities",
                "a second hardware domain"
            )]
        );
        // A top-level dom0 is the hardware domain.
        let tree = dtb(chosen()
            .kid(module("k0", K, 0x4100_0000, 0x1000))
            .kid(hw("a", 0x6000_0000)));
        let boot = parse_ok(&tree);
        assert!(boot.dom0.is_some() && boot.domains.is_empty());
        assert_eq!(
            boot.errors.as_slice(),
            [DomainError::BadProperty(
                "a",
                "capabilities",
                "a second hardware domain"
            )]
        );
    }

    #[test]
    fn vcpu_pinning() {
        let vcpu = |name: &str, id: &[u32], cpus: &[u32]| {
            N::new(name)
                .p("compatible", V::Strs(&["xen,vcpu"]))
                .cells("id", id)
                .cells("hard-affinity", cpus)
        };
        let d = simple("d", 0x6000_0000)
            .cells("cpus", &[4])
            .kid(vcpu("v3", &[3], &[63]))
            .kid(vcpu("v0", &[0], &[0, 1, 1, 5]));
        let tree = dtb(chosen().kid(d));
        let boot = parse_ok(&tree);
        assert_eq!(
            boot.domains[0].affinity,
            [0b10_0011, 0, 0, 1 << 63, 0, 0, 0, 0]
        );

        let d = || simple("d", 0x6000_0000).cells("cpus", &[2]);
        let id = |why| DomainError::BadProperty("d", "xen,vcpu id", why);
        let aff = |why| DomainError::BadProperty("d", "xen,vcpu hard-affinity", why);
        let cases: Vec<(N, DomainError<'_>)> = vec![
            (
                d().kid(vcpu("v", &[2], &[0])),
                id("not below the domain's cpus"),
            ),
            (
                d().kid(vcpu("v", &[u32::MAX], &[0])),
                id("not below the domain's cpus"),
            ),
            (
                d().kid(vcpu("v", &[1], &[0])).kid(vcpu("w", &[1], &[1])),
                id("a second node for one vCPU"),
            ),
            (d().kid(vcpu("v", &[], &[0])), id("missing or not one cell")),
            (
                d().kid(vcpu("v", &[0, 0], &[0])),
                id("missing or not one cell"),
            ),
            (
                d().kid(vcpu("v", &[0], &[1, 64])),
                aff("a CPU number of 64 or more"),
            ),
            (
                d().kid(vcpu("v", &[0], &[u32::MAX])),
                aff("a CPU number of 64 or more"),
            ),
            (
                d().kid(vcpu("v", &[0], &[])),
                aff("missing, empty or not whole cells"),
            ),
            (
                d().kid(vcpu("v", &[0], &[1]).p("hard-affinity", V::Bytes(vec![0, 0, 1]))),
                aff("missing, empty or not whole cells"),
            ),
            (
                d().kid(vcpu("v", &[0], &[1]).without("hard-affinity")),
                aff("missing, empty or not whole cells"),
            ),
        ];
        for (node, want) in cases {
            refused(node, want);
        }
    }

    #[test]
    fn counted_children_are_bounded() {
        let mut d = simple("d", 0x6000_0000);
        for i in 0..256 {
            d = d.kid(N::new(&format!("ev{i}")).p("compatible", V::Strs(&["xen,evtchn-v1"])));
        }
        refused(
            d,
            DomainError::BadProperty("d", "xen,evtchn-v1", "more than 255 nodes"),
        );
        let mut d = simple("d", 0x6000_0000);
        for i in 0..255 {
            d = d.kid(N::new(&format!("ev{i}")).p("compatible", V::Strs(&["xen,evtchn-v1"])));
        }
        let tree = dtb(chosen().kid(d));
        assert_eq!(parse_ok(&tree).domains[0].static_evtchns, 255);
    }

    #[test]
    fn module_errors_name_the_module() {
        let d = || dom("d", 64);
        let m = |e| DomainError::Module("d", e);
        let cases: Vec<(N, DomainError<'_>)> = vec![
            (
                d().kid(module("k", K, 0x6000_0000, 0x1000).cells("reg", &[0, 0x6000_0000, 0])),
                m(ModuleError::BadReg("k")),
            ),
            (
                d().kid(module("k", K, 0x6000_0000, 0x1000).without("reg")),
                m(ModuleError::BadReg("k")),
            ),
            (
                d().kid(module("k", K, 0x6000_0000, 0)),
                m(ModuleError::Empty("k")),
            ),
            (
                d().kid(module("k", K, 0xffff_ffff_ffff_f000, 0x2000)),
                m(ModuleError::Overflow("k")),
            ),
            (
                d().kid(module("k", K, 0x6000_0000, 0x2000)).kid(module(
                    "r",
                    R,
                    0x6000_1000,
                    0x2000,
                )),
                m(ModuleError::Overlap("k", "r")),
            ),
            (
                d().kid(module("k", K, 0x6000_0000, 0x2000)).kid(module(
                    "k2",
                    K,
                    0x6100_0000,
                    0x2000,
                )),
                m(ModuleError::Duplicate("k2")),
            ),
            (
                // Plain modules: kernel, ramdisk, then a third is one too many.
                d().kid(module("a", PLAIN, 0x6000_0000, 0x10))
                    .kid(module("b", PLAIN, 0x6100_0000, 0x10))
                    .kid(module("c", PLAIN, 0x6200_0000, 0x10)),
                m(ModuleError::Duplicate("c")),
            ),
            (
                d().kid(module("k", K, 0x6000_0000, 0x2000))
                    .kid(module("dt", D, 0x6100_0000, 0x10))
                    .kid(module("dt2", D, 0x6200_0000, 0x10)),
                m(ModuleError::Duplicate("dt2")),
            ),
        ];
        for (node, want) in cases {
            refused(node, want);
        }
    }

    #[test]
    fn plain_modules_are_kernel_then_ramdisk() {
        let d = dom("d", 64)
            .kid(module("a", PLAIN, 0x6000_0000, 0x10))
            .kid(module("b", PLAIN, 0x6100_0000, 0x10));
        let tree = dtb(chosen().kid(d));
        let boot = parse_ok(&tree);
        let d = &boot.domains[0];
        assert_eq!((d.kernel.node, d.ramdisk.unwrap().node), ("a", "b"));
        assert_eq!(d.ramdisk.unwrap().kind, ModuleKind::Ramdisk);
    }

    #[test]
    fn overlap_with_dom0_or_another_domain() {
        let tree = dtb(chosen()
            .kid(module("k0", K, 0x4100_0000, 0x10_0000))
            .kid(simple("a", 0x6000_0000))
            .kid(dom("b", 64).kid(module("kb", K, 0x4100_8000, 0x1000)))
            .kid(dom("c", 64).kid(module("kc", K, 0x6000_0000, 0x1000)))
            .kid(
                dom("e", 64)
                    .kid(module("ke", K, 0x7000_0000, 0x1000))
                    .kid(module("re", R, 0x6000_0000, 0x10_0000)),
            ));
        let boot = parse_ok(&tree);
        assert_eq!(boot.domains.len(), 1);
        assert_eq!(
            boot.errors.as_slice(),
            [
                DomainError::Module("b", ModuleError::Overlap("k0", "kb")),
                DomainError::Module("c", ModuleError::Overlap("kernel", "kc")),
                // Identical bytes but another kind: not shared.
                DomainError::Module("e", ModuleError::Overlap("kernel", "re")),
            ]
        );
        assert_eq!(boot.modules.len(), 2);
    }

    #[test]
    fn outside_ram() {
        for base in [
            0x1000,
            0x3fff_f000,
            0xbfff_f000,
            0x1_3fff_ffff,
            0x2_0000_0000,
        ] {
            refused(
                dom("d", 64).kid(module("k", K, base, 0x2000)),
                DomainError::OutsideRam("d", "k"),
            );
        }
        // Ending exactly where a RAM range ends is inside it.
        let tree = dtb(chosen().kid(dom("d", 64).kid(module("k", K, 0xbfff_f000, 0x1000))));
        assert_eq!(parse_ok(&tree).domains.len(), 1);
    }

    #[test]
    fn oversized() {
        // Alone bigger than the domain.
        refused(
            dom("d", 4).kid(module("k", K, 0x6000_0000, 5 * MIB)),
            DomainError::Oversized("d", "k"),
        );
        // Fits alone, but not with the 2 MiB the guest DTB needs.
        refused(
            dom("d", 4).kid(module("k", K, 0x6000_0000, 2 * MIB + 1)),
            DomainError::Oversized("d", "k"),
        );
        // Together: the module that tips it over is named.
        refused(
            dom("d", 8)
                .kid(module("k", K, 0x6000_0000, 3 * MIB))
                .kid(module("r", R, 0x6100_0000, 3 * MIB))
                .kid(module("t", D, 0x6200_0000, 1)),
            DomainError::Oversized("d", "t"),
        );
        let tree = dtb(chosen().kid(
            dom("d", 8)
                .kid(module("k", K, 0x6000_0000, 3 * MIB))
                .kid(module("r", R, 0x6100_0000, 3 * MIB)),
        ));
        assert_eq!(parse_ok(&tree).domains.len(), 1);
    }

    #[test]
    fn unknown_compatible_and_missing_kernel() {
        refused(
            simple("d", 0x6000_0000).kid(N::new("gpu").p("compatible", V::Strs(&["vendor,gpu"]))),
            DomainError::UnknownCompatible("d", "gpu"),
        );
        refused(dom("d", 64), DomainError::MissingKernel("d"));
        refused(
            dom("d", 64).kid(module("r", R, 0x6000_0000, 0x1000)),
            DomainError::MissingKernel("d"),
        );
    }

    #[test]
    fn valid_domains_survive_refused_ones() {
        let tree = dtb(chosen()
            .kid(simple("a", 0x6000_0000))
            .kid(
                dom("bad", 64)
                    .kid(module("kb", K, 0x7000_0000, 0x1000))
                    .kid(module("rb", R, 0x7100_0000, 0x1000))
                    .kid(module("x", R, 0x7200_0000, 0x1000)),
            )
            .kid(simple("c", 0x7000_0000)));
        let boot = parse_ok(&tree);
        let names: Vec<_> = boot.domains.iter().map(|d| d.node).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(
            boot.errors.as_slice(),
            [DomainError::Module("bad", ModuleError::Duplicate("x"))]
        );
        // "c" took the bytes "bad" gave back, and is owner 2.
        let owners: Vec<_> = boot
            .modules
            .iter()
            .map(|m| (m.node, m.owner, m.owners))
            .collect();
        assert_eq!(owners, [("kernel", 1, 0b10), ("kernel", 2, 0b100)]);
        assert_eq!(boot.domains[1].kernel.owner, 2);
    }

    #[test]
    fn two_domains_share_one_kernel() {
        let k = |args| module("kernel", K, 0x6000_0000, 0x10_0000).s("bootargs", args);
        let tree = dtb(chosen()
            .kid(
                dom("a", 64)
                    .kid(k("root=/dev/ram0 a"))
                    .kid(module("ra", R, 0x6100_0000, 0x1000)),
            )
            .kid(dom("b", 64).kid(k("root=/dev/ram0 b")).kid(module(
                "rb",
                R,
                0x6200_0000,
                0x1000,
            ))));
        let boot = parse_ok(&tree);
        assert!(boot.errors.is_empty());
        assert_eq!(boot.modules.len(), 3);
        let shared = boot.modules.first(ModuleKind::Kernel).unwrap();
        assert_eq!((shared.owner, shared.owners), (1, 0b110));
        let (a, b) = (&boot.domains[0], &boot.domains[1]);
        assert_eq!(a.kernel.range, b.kernel.range);
        assert_eq!((a.kernel.owner, b.kernel.owner), (1, 2));
        assert_eq!((a.kernel.owners, b.kernel.owners), (0b10, 0b100));
        assert_eq!(a.bootargs, Some("root=/dev/ram0 a"));
        assert_eq!(b.bootargs, Some("root=/dev/ram0 b"));
        // The same ramdisk twice in one domain is not sharing.
        refused(
            dom("d", 64)
                .kid(module("k", K, 0x6000_0000, 0x1000))
                .kid(module("r", R, 0x6100_0000, 0x1000))
                .kid(module("r2", PLAIN, 0x6100_0000, 0x1000)),
            DomainError::Module("d", ModuleError::Duplicate("r2")),
        );
    }

    #[test]
    fn the_33rd_module_refuses_its_domain() {
        let mut c = chosen();
        for i in 0..12u64 {
            let base = 0x4000_0000 + i * 0x400_0000;
            let mut d = dom(&format!("d{i}"), 64).kid(module("k", K, base, 0x1000));
            if i < 11 {
                d = d.kid(module("r", R, base + 0x10_0000, 0x1000)).kid(module(
                    "t",
                    D,
                    base + 0x20_0000,
                    0x1000,
                ));
            }
            c = c.kid(d);
        }
        let tree = dtb(c);
        let boot = parse_ok(&tree);
        assert_eq!(
            boot.errors.as_slice(),
            [DomainError::Module("d10", ModuleError::TooMany("t"))]
        );
        // d10's kernel and ramdisk were rolled back; d11's kernel fits.
        assert_eq!(boot.domains.len(), 11);
        assert_eq!(boot.domains[10].node, "d11");
        assert_eq!(boot.modules.len(), 31);
        assert!(boot.modules.iter().all(|m| m.owners.count_ones() == 1));
    }

    #[test]
    fn more_than_max_domains() {
        let mut c = chosen();
        let n = 2 * MAX_DOMAINS as u64 + 3;
        for i in 0..n {
            c = c.kid(simple(&format!("d{i}"), 0x4000_0000 + i * 0x20_0000));
        }
        let tree = dtb(c);
        let boot = parse_ok(&tree);
        assert_eq!(boot.domains.len(), MAX_DOMAINS);
        assert_eq!(boot.modules.len(), MAX_DOMAINS);
        assert_eq!(boot.errors.len(), MAX_DOMAINS);
        assert_eq!(boot.errors[0], DomainError::TooManyDomains("d16"));
        assert_eq!(boot.errors[15], DomainError::TooManyDomains("d31"));
        assert_eq!(boot.errors_dropped, 3);
    }

    #[test]
    fn cells_domain_then_chosen_then_root_then_2_1() {
        let one = |n: N| n.cells("#address-cells", &[1]).cells("#size-cells", &[1]);
        let k1 = || module("k", K, 0, 0).cells("reg", &[0x6000_0000, 0x1000]);
        let k22 = || module("k", K, 0x6000_0000, 0x1000);
        let k21 = || module("k", K, 0, 0).cells("reg", &[0, 0x6000_0000, 0x1000]);
        let bare = |name| {
            dom(name, 64)
                .without("#address-cells")
                .without("#size-cells")
        };
        let want = PhysRange::from_base_size(0x6000_0000, 0x1000);
        let root22 = || {
            N::new("")
                .cells("#address-cells", &[2])
                .cells("#size-cells", &[2])
        };
        let trees = [
            // The domain's own 1/1 win over everything.
            dtb(one(chosen()).kid(one(bare("d")).kid(k1()))),
            dtb(chosen().kid(one(bare("d")).kid(k1()))),
            // The domain's own 2/2 win over /chosen's 1/1.
            dtb(one(chosen()).kid(dom("d", 64).kid(k22()))),
            // No cells on the domain: /chosen's, then the root's.
            dtb(one(chosen()).kid(bare("d").kid(k1()))),
            dtb_with_root(root22(), chosen().kid(bare("d").kid(k22()))),
            dtb_with_root(one(N::new("")), chosen().kid(bare("d").kid(k1()))),
            // None anywhere: 2 and 1.
            dtb_with_root(N::new(""), chosen().kid(bare("d").kid(k21()))),
            // Each property falls back on its own.
            dtb_with_root(
                root22(),
                chosen().kid(bare("d").cells("#size-cells", &[1]).kid(k21())),
            ),
        ];
        for (i, t) in trees.iter().enumerate() {
            let boot = parse_ok(t);
            assert!(boot.errors.is_empty(), "tree {i}: {:?}", boot.errors);
            assert_eq!(boot.domains[0].kernel.range, want, "tree {i}");
        }
        // Cells the reader does not take: the module's reg is bad.
        refused(
            dom("d", 64).cells("#address-cells", &[3]).kid(k22()),
            DomainError::Module("d", ModuleError::BadReg("k")),
        );
        refused(
            one(bare("d")).kid(k22()),
            DomainError::Module("d", ModuleError::BadReg("k")),
        );
    }

    #[test]
    fn xen_bootargs() {
        let tree = dtb(chosen().s("xen,xen-bootargs", "console=dtuart sched=null"));
        let boot = parse_ok(&tree);
        assert_eq!(boot.xen_bootargs, Some("console=dtuart sched=null"));
        assert!(boot.domains.is_empty() && boot.modules.is_empty() && boot.dom0.is_none());
        for bad in [&b"no nul"[..], b"a\0b\0", b"\xff\0"] {
            let tree = dtb(chosen().p("xen,xen-bootargs", V::Bytes(bad.to_vec())));
            assert_eq!(parse_ok(&tree).xen_bootargs, None);
        }
    }

    #[test]
    fn dom0_modules_and_domains_together() {
        let tree = dtb(chosen()
            .s("bootargs", "dom0_mem=512M")
            .kid(module("module@41000000", K, 0x4100_0000, 0x10_0000).s("bootargs", "quiet"))
            .kid(simple("domU1", 0x6000_0000))
            .kid(module("module@49000000", R, 0x4900_0000, 0x1000))
            .kid(simple("domU2", 0x6100_0000)));
        let boot = parse_ok(&tree);
        assert!(boot.errors.is_empty() && boot.dom0_error.is_none());
        let (k, r) = boot.dom0.unwrap();
        assert_eq!(
            (k.node, k.bootargs, k.owner, k.owners),
            ("module@41000000", Some("quiet"), 0, 1)
        );
        assert_eq!(r.unwrap().node, "module@49000000");
        assert_eq!(boot.domains.len(), 2);
        let owners: Vec<_> = boot.modules.iter().map(|m| m.owners).collect();
        assert_eq!(owners, [1, 1, 0b10, 0b100]);
        // The dom0 reader alone still sees only the top-level set.
        let mods = Modules::from_fdt(&tree).unwrap();
        assert_eq!(
            mods.iter().map(|m| m.node).collect::<Vec<_>>(),
            [k.node, r.unwrap().node]
        );
    }

    #[test]
    fn refused_dom0_modules_leave_the_domains() {
        let tree = dtb(chosen()
            .kid(module("k0", K, 0x4100_0000, 0x1000))
            .kid(module("k1", K, 0x4200_0000, 0x1000))
            .kid(simple("d", 0x4200_0000)));
        let boot = parse_ok(&tree);
        assert_eq!(boot.dom0_error, Some(ModuleError::Duplicate("k1")));
        assert_eq!(
            Modules::from_fdt(&tree).unwrap_err(),
            ModuleError::Duplicate("k1")
        );
        assert!(boot.dom0.is_none());
        // k0 and k1 were rolled back: d may use k1's bytes.
        assert_eq!(boot.domains.len(), 1);
        assert_eq!(
            boot.modules.iter().map(|m| m.owners).collect::<Vec<_>>(),
            [0b10]
        );
        // A top-level ramdisk alone is kept, but there is no dom0.
        let tree = dtb(chosen().kid(module("r0", R, 0x4100_0000, 0x1000)));
        let boot = parse_ok(&tree);
        assert!(boot.dom0.is_none() && boot.dom0_error.is_none());
        assert_eq!(boot.modules.len(), 1);
    }

    #[test]
    fn no_chosen_and_malformed_trees() {
        let tree = dtb_with_root(N::new(""), N::new("memory@40000000"));
        let boot = parse_ok(&tree);
        assert!(boot.modules.is_empty() && boot.domains.is_empty() && boot.xen_bootargs.is_none());
        assert_eq!(
            parse(&[0u8; 8], &RAM).unwrap_err(),
            ModuleError::Malformed("truncated header")
        );
        // Domains are found in /chosen only.
        let tree = dtb_with_root(N::new("").kid(simple("stray", 0x6000_0000)), chosen());
        assert!(parse_ok(&tree).domains.is_empty());
    }

    #[test]
    fn messages() {
        let cases: Vec<(DomainError<'_>, &str)> = vec![
            (
                DomainError::Module("d1", ModuleError::BadReg("k")),
                "/chosen/d1/k: bad or missing reg; domain not built",
            ),
            (
                DomainError::Module("d1", ModuleError::Empty("k")),
                "/chosen/d1/k: module is empty; domain not built",
            ),
            (
                DomainError::Module("d1", ModuleError::Overflow("k")),
                "/chosen/d1/k: module runs past the address space; domain not built",
            ),
            (
                DomainError::Module("d1", ModuleError::Overlap("k0", "r")),
                "/chosen/d1/r: overlaps boot module k0 (of this domain, another or dom0); domain not built",
            ),
            (
                DomainError::Module("d1", ModuleError::TooMany("t")),
                "/chosen/d1/t: more than 32 boot modules in all; domain not built",
            ),
            (
                DomainError::Module("d1", ModuleError::Duplicate("k2")),
                "/chosen/d1/k2: a second module of the same kind; domain not built",
            ),
            (
                DomainError::Module("d1", ModuleError::Malformed("x")),
                "/chosen/d1: device tree malformed: x; domain not built",
            ),
            (
                DomainError::MissingKernel("d1"),
                "/chosen/d1: no kernel module; domain not built",
            ),
            (
                DomainError::UnknownCompatible("d1", "gpu"),
                "/chosen/d1/gpu: unknown compatible; domain not built",
            ),
            (
                DomainError::OutsideRam("d1", "k"),
                "/chosen/d1/k: module lies outside RAM; domain not built",
            ),
            (
                DomainError::Oversized("d1", "r"),
                "/chosen/d1/r: modules leave less than 2 MiB of the domain's memory for its device tree; domain not built",
            ),
            (
                DomainError::BadProperty("d1", "memory", "less than 4 MiB"),
                "/chosen/d1: memory: less than 4 MiB; domain not built",
            ),
            (
                DomainError::TooManyDomains("d17"),
                "/chosen/d17: more than 16 domains; domain not built",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    /// A tree with dom0 modules, three domains and every child kind.
    fn rich() -> Vec<u8> {
        dtb(chosen()
            .s("xen,xen-bootargs", "sched=null")
            .kid(module("k0", K, 0x4100_0000, 0x1000))
            .kid(module("r0", R, 0x4200_0000, 0x1000))
            .kid(
                dom("a", 16)
                    .cells("cpus", &[2])
                    .s("hv,on-crash", "restart")
                    .kid(module("k", K, 0x6000_0000, 0x1000).s("bootargs", "x"))
                    .kid(module("r", R, 0x6100_0000, 0x1000))
                    .kid(
                        N::new("v")
                            .p("compatible", V::Strs(&["xen,vcpu"]))
                            .cells("id", &[1])
                            .cells("hard-affinity", &[1]),
                    )
                    .kid(N::new("e").p("compatible", V::Strs(&["xen,evtchn-v1"]))),
            )
            .kid(simple("b", 0x6800_0000).cells("memory", &[4096 * 2]))
            .kid(simple("c", 0x7000_0000).s("xen,enhanced", "enabled")))
    }

    #[test]
    fn every_truncation_and_bit_flip_parses_or_errs_cleanly() {
        let d = rich();
        let boot = parse_ok(&d);
        assert_eq!((boot.domains.len(), boot.errors.len()), (3, 0));
        for len in 0..d.len() {
            assert!(parse(&d[..len], &RAM).is_err());
        }
        for i in 0..d.len() {
            for bit in 0..8 {
                let mut c = d.clone();
                c[i] ^= 1 << bit;
                if let Ok(boot) = parse(&c, &RAM) {
                    check(&c, &boot);
                }
            }
        }
    }
}
