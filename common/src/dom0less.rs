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
//! - `xen,enhanced`: `"enabled"` (also an empty value), `"no-xenstore"` or
//!   `"disabled"` (Xen 4.17's three), or `"legacy"` (added by later Xen,
//!   `"enabled"` for older kernels); anything else is refused. Absent or
//!   `"disabled"`, the domain gets no Xen interfaces and its device tree no
//!   `/hypervisor` node, as in Xen ([`DomainSpec::xen_interfaces`]);
//! - children with `compatible` `"multiboot,kernel"`, `"multiboot,ramdisk"`
//!   or `"multiboot,device-tree"` (normally also `"multiboot,module"`), with
//!   `reg` and, on the kernel, `bootargs`; a plain `"multiboot,module"` is
//!   the kernel if none was seen yet, else the ramdisk. At most one of each
//!   kind; a kernel is required;
//! - static event channels ("Static Event Channel"): a child
//!   `compatible = "xen,evtchn-v1"; xen,evtchn = <local-port &peer>;` whose
//!   phandle names a `xen,evtchn-v1` child of another domain node that
//!   names this node back (so this node needs a `phandle`, which dtc gives
//!   any node a `&label` names). Ports are 1 to [`MAX_STATIC_PORT`] on
//!   both ends, a port once per domain, at most [`MAX_STATIC_EVTCHNS`]
//!   per domain. The phandle is looked up among the children of `/chosen`
//!   and of its domain nodes and must name exactly one of them. Xen also
//!   lets a domain bind to dom0's nodes directly under `/chosen`; there is
//!   no Xen dom0 here, so such a peer is refused. Read into
//!   [`DomainSpec::static_evtchns`] with the peer's domain node name;
//! - static shared memory ("Static Shared Memory", Xen 4.17): a child
//!   `compatible = "xen,domain-shared-memory-v1"; xen,shm-id = "id";
//!   xen,shared-mem = <host guest size>;` and optionally
//!   `role = "owner" | "borrower"` (default borrower: then, as in Xen, no
//!   domain owns the memory). The cells are the domain node's
//!   `#address-cells` for `host` and `guest` and `#size-cells` for `size`
//!   (each 1 or 2). The id is 1 to [`MAX_SHM_ID`] bytes (Xen's
//!   `MAX_SHM_ID_LENGTH`, 16 with the NUL); host, guest and size are 4 KiB
//!   aligned ([`SHM_ALIGN`]), the size non-zero, neither range wraps; the
//!   host range lies in the RAM given to [`parse`]; at most
//!   [`MAX_SHARED_MEMS`] per domain, an id once per domain, and the guest
//!   ranges of one domain do not overlap. Across domains (checked against
//!   the domains accepted before, so the later one is refused): one id is
//!   one host range and size everywhere, the ranges of different ids do
//!   not overlap, an id has at most one owner, and no range overlaps a
//!   boot module of anyone (dom0 included). Whether a guest range is free
//!   in the guest's address map (outside its RAM, the grant-table window,
//!   the device frames and the extended regions) is the hypervisor's
//!   check, which knows that map (`armvm::layout`). Read into
//!   [`DomainSpec::shared_mems`]; [`Boot::shm_regions`] lists each region
//!   once, for the hypervisor to keep out of its heap.
//!
//! # Our additions
//!
//! - `hv,on-crash = "destroy" | "restart"` on a domain node: what happens
//!   when the domain crashes (default `"destroy"`, like xl's `on_crash`).
//! - vCPU pinning: a child `compatible = "xen,vcpu"; id = <N>;
//!   hard-affinity = <cpu ...>;` pins vCPU `N` (below `cpus`) to the listed
//!   physical CPUs (each below 64), kept as a mask per vCPU. One node per
//!   vCPU; the list may not be empty.
//! - The communication policy: `hv,xen-peers = "name", ...;` on a domain
//!   node lists the domain nodes (by name) it may open event channels with
//!   and exchange grants with, at most [`MAX_PEERS`] names of 1 to
//!   [`MAX_PEER_NAME`] bytes, none twice, not its own. Two domains may talk
//!   when either names the other, or they share a static event channel or
//!   a static shared-memory id ([`DomainSpec::may_talk`]); a domain may
//!   always talk to itself. A name that matches no domain is not an error
//!   (that domain may have been refused, and one bad domain must not take
//!   others down): it simply matches nothing, and [`Boot::unknown_peers`] lists such
//!   names for the hypervisor to log. The dom0-style top-level domain has
//!   no node and is outside this policy.
//! - Transcendent memory (tmem, `crate::tmem`), per domain:
//!   `hv,tmem-weight = <N>` (1 to [`MAX_TMEM_WEIGHT`], default 1: its
//!   share of ephemeral room against other domains),
//!   `hv,tmem-ephemeral = <KiB>` (most ephemeral memory it may hold;
//!   absent or 0: no cap besides the budget and fairness),
//!   `hv,tmem-persistent = <KiB>` (most persistent memory; absent: 0,
//!   none, as a domain may only park persistent pages it is granted),
//!   `hv,tmem-compress` (empty: its pages are stored compressed when that
//!   pays), and `hv,tmem-shared = "uuid", ...` (the shared pools it may
//!   join, at most [`crate::tmem::MAX_SHARED_POOLS`] UUIDs in the
//!   8-4-4-4-12 hex form; the builder authorizes them, acting for the
//!   control domain). KiB values are one or two cells, taken in whole
//!   4 KiB pages (rounded down). Read into [`DomainSpec::tmem`].
//! - Children without `compatible` are ignored; any other compatible than
//!   the ones above refuses the domain (a domain that asks for something we
//!   do not give is not built half-way).
//!
//! # What the hypervisor does with channels and regions
//!
//! Both ends of a static event channel are checked here, each from its own
//! domain, so when both domains are accepted each lists the other's end.
//! When the peer domain was refused (here, or later when it could not be
//! built) the channel names a domain the hypervisor does not find: the
//! hypervisor skips that channel with a log line, and the domain is built
//! without it. A shared region is host memory mapped into every built
//! domain that names its id; when its owner is refused the borrowers still
//! map it, and the hypervisor holds the memory (as Xen's `DOMID_IO` does
//! when no domain is the owner).
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
/// Highest port a static event channel may use: the hypervisor's bound on
/// a domain's ports. Every guest starts on the 2-level event-channel ABI,
/// which has 4096 ports on a 64-bit guest (`EVTCHN_2L_NR_CHANNELS`), and
/// port 0 is never a channel, so static ports are 1 to 4095 (Xen allows
/// more only once a guest has switched to the FIFO ABI, too late for a
/// channel bound before the domain starts).
pub const MAX_STATIC_PORT: u32 = 4095;
/// Most static event channels (`xen,evtchn-v1` children) per domain.
pub const MAX_STATIC_EVTCHNS: usize = 16;
/// Most static shared-memory regions (`xen,domain-shared-memory-v1`
/// children) per domain.
pub const MAX_SHARED_MEMS: usize = 8;
/// Longest `xen,shm-id`, in bytes without the NUL (Xen's
/// `MAX_SHM_ID_LENGTH` is 16 with it).
pub const MAX_SHM_ID: usize = 15;
/// Alignment of a shared region's host address, guest address and size.
pub const SHM_ALIGN: u64 = 4096;
/// Most names in a domain's `hv,xen-peers`.
pub const MAX_PEERS: usize = 16;
/// Longest name in `hv,xen-peers`, in bytes.
pub const MAX_PEER_NAME: usize = 64;

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

/// One end of a static event channel, as its domain sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticEvtchn<'a> {
    /// This domain's port, 1 to [`MAX_STATIC_PORT`].
    pub local_port: u32,
    /// The node name of the peer's `xen,domain` node (its domain's name).
    pub peer_domain: &'a str,
    /// The peer's port, 1 to [`MAX_STATIC_PORT`].
    pub peer_port: u32,
}

/// One static shared-memory region, as a domain maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedMem<'a> {
    /// `xen,shm-id`: 1 to [`MAX_SHM_ID`] bytes, one region per id.
    pub id: &'a str,
    /// Host physical address ([`SHM_ALIGN`] aligned, in the usable RAM).
    pub host: u64,
    /// Guest physical address in this domain ([`SHM_ALIGN`] aligned).
    pub guest: u64,
    /// Bytes, non-zero, [`SHM_ALIGN`] aligned; neither range wraps.
    pub size: u64,
    /// `role = "owner"` (else a borrower).
    pub owner: bool,
}

impl SharedMem<'_> {
    /// The host range.
    pub fn host_range(&self) -> PhysRange {
        PhysRange {
            start: self.host,
            end: self.host.saturating_add(self.size),
        }
    }

    /// The guest range.
    pub fn guest_range(&self) -> PhysRange {
        PhysRange {
            start: self.guest,
            end: self.guest.saturating_add(self.size),
        }
    }
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
    /// `xen,enhanced`: `"enabled"` (also for an empty value),
    /// `"no-xenstore"`, `"disabled"` or `"legacy"`; `None` when absent.
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
    /// The static event channels, in tree order: local ports distinct,
    /// each peer's end checked to point back.
    pub static_evtchns: ArrayVec<StaticEvtchn<'a>, MAX_STATIC_EVTCHNS>,
    /// The static shared-memory regions, in tree order: ids distinct,
    /// guest ranges disjoint.
    pub shared_mems: ArrayVec<SharedMem<'a>, MAX_SHARED_MEMS>,
    /// `hv,xen-peers`: the domains (node names) it may talk to, besides
    /// those it shares a channel or a region with.
    pub peers: ArrayVec<&'a str, MAX_PEERS>,
    /// `hv,tmem-*`: its tmem settings and the shared pools it may join.
    pub tmem: TmemSpec,
}

/// Highest `hv,tmem-weight`.
pub const MAX_TMEM_WEIGHT: u32 = 10_000;

/// A domain's `hv,tmem-*` properties.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TmemSpec {
    /// Weight, ephemeral cap and persistent quota (pages), compression.
    pub client: crate::tmem::ClientConfig,
    /// UUIDs of the shared pools it may join, as the tmem ABI reads a
    /// UUID's 16 bytes: two little-endian words.
    pub shared: ArrayVec<crate::tmem::Uuid, { crate::tmem::MAX_SHARED_POOLS }>,
}

impl DomainSpec<'_> {
    /// Whether the domain gets Xen's interfaces (hypercalls, grant table,
    /// event channels, the `/hypervisor` node): `xen,enhanced` present and
    /// not `"disabled"`.
    pub fn xen_interfaces(&self) -> bool {
        self.enhanced.is_some_and(|e| e != "disabled")
    }

    /// Whether the domain asked for xenstore too (`"enabled"` or
    /// `"legacy"`).
    pub fn xenstore(&self) -> bool {
        matches!(self.enhanced, Some("enabled" | "legacy"))
    }

    /// The communication policy: whether this domain and `other` may open
    /// event channels with each other and exchange grants. True for the
    /// domain itself, when either names the other in `hv,xen-peers`, or
    /// when they share a static event channel or a shared-memory id.
    /// Symmetric. Bounded: at most 16 names, 16 channels and 8 x 8 ids.
    pub fn may_talk(&self, other: &DomainSpec<'_>) -> bool {
        let (a, b) = (self.node, other.node);
        a == b
            || self.peers.contains(&b)
            || other.peers.contains(&a)
            || self.static_evtchns.iter().any(|e| e.peer_domain == b)
            || other.static_evtchns.iter().any(|e| e.peer_domain == a)
            || self
                .shared_mems
                .iter()
                .any(|s| other.shared_mems.iter().any(|t| t.id == s.id))
    }
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
    /// A static event channel (second) of the domain (first) is refused:
    /// why.
    Evtchn(&'a str, &'a str, &'static str),
    /// A static shared-memory node (second) of the domain (first) is
    /// refused: why.
    SharedMem(&'a str, &'a str, &'static str),
    /// A static shared-memory node (second) of the domain (first)
    /// conflicts with a region of an earlier domain (third): why, phrased
    /// to end with that domain.
    ShmConflict(&'a str, &'a str, &'a str, &'static str),
    /// A static shared-memory node (second) of the domain (first) overlaps
    /// a boot module (third).
    ShmOverModule(&'a str, &'a str, &'a str),
    /// A module (second) of the domain (first) overlaps a shared region of
    /// an earlier domain (third).
    ModuleOverShm(&'a str, &'a str, &'a str),
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
            DomainError::Evtchn(d, c, why) => {
                write!(f, "/chosen/{d}/{c}: static event channel: {why}")
            }
            DomainError::SharedMem(d, c, why) => {
                write!(f, "/chosen/{d}/{c}: static shared memory: {why}")
            }
            DomainError::ShmConflict(d, c, o, why) => {
                write!(
                    f,
                    "/chosen/{d}/{c}: static shared memory: {why} /chosen/{o}"
                )
            }
            DomainError::ShmOverModule(d, c, m) => write!(
                f,
                "/chosen/{d}/{c}: static shared memory overlaps boot module {m}"
            ),
            DomainError::ModuleOverShm(d, m, o) => write!(
                f,
                "/chosen/{d}/{m}: module overlaps static shared memory of /chosen/{o}"
            ),
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

    /// Each static shared-memory region of the accepted domains once, as
    /// (id, host range), in the order first named: the memory the
    /// hypervisor keeps out of its heap and maps into each domain that
    /// names the id. Regions never overlap each other or a module.
    pub fn shm_regions(&self) -> impl Iterator<Item = (&'a str, PhysRange)> + '_ {
        self.domains.iter().enumerate().flat_map(move |(i, d)| {
            let earlier = self.domains.get(..i).unwrap_or(&[]);
            d.shared_mems
                .iter()
                .filter(move |s| {
                    !earlier
                        .iter()
                        .any(|e| e.shared_mems.iter().any(|t| t.id == s.id))
                })
                .map(|s| (s.id, s.host_range()))
        })
    }

    /// The `hv,xen-peers` names of accepted domains that name no accepted
    /// domain, as (domain, name): not errors (the named domain may have
    /// been refused), for the hypervisor to log.
    pub fn unknown_peers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.domains.iter().flat_map(move |d| {
            d.peers
                .iter()
                .filter(move |p| !self.domains.iter().any(|e| e.node == **p))
                .map(move |p| (d.node, *p))
        })
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
    for (index, node) in chosen.children().enumerate() {
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
        let ctx = Ctx {
            chain: [node, chosen, root],
            index,
            owner,
            ram,
            hardware_taken,
            accepted: &boot.domains,
        };
        match domain(&ctx, &mut boot.modules) {
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

/// What reading one domain needs besides the module table.
struct Ctx<'a, 'b> {
    /// The domain node, `/chosen`, the root (for the cells).
    chain: [Node<'a>; 3],
    /// The domain node's index among `/chosen`'s children (its identity
    /// when a static event channel's peer is looked up).
    index: usize,
    /// Its owner number in the module table.
    owner: u8,
    /// The RAM modules and shared memory must lie in.
    ram: &'b [PhysRange],
    /// Whether a hardware domain was accepted already.
    hardware_taken: bool,
    /// The domains accepted before this one.
    accepted: &'b [DomainSpec<'a>],
}

/// Reads the domain `ctx.chain[0]` and adds its modules to `table` as
/// `ctx.owner`. On an error some of them may be in the table: the caller
/// rolls them back.
fn domain<'a>(
    ctx: &Ctx<'a, '_>,
    table: &mut Modules<'a>,
) -> Result<DomainSpec<'a>, DomainError<'a>> {
    let Ctx {
        chain,
        owner,
        ram,
        hardware_taken,
        ..
    } = *ctx;
    let [node, chosen, _] = chain;
    let node = &node;
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
            Some(s @ ("enabled" | "no-xenstore" | "disabled" | "legacy")) => Some(s),
            _ => {
                return Err(bad(
                    "xen,enhanced",
                    "not \"enabled\", \"no-xenstore\", \"disabled\" or \"legacy\"",
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
    let peers = peers(node).map_err(|why| bad("hv,xen-peers", why))?;
    let tmem = tmem_spec(node).map_err(|(p, why)| bad(p, why))?;
    let (acells, scells) = modules::cells(&chain);

    let mut kernel = None;
    let mut ramdisk = None;
    let mut device_tree = None;
    // The modules in tree order, so a full table names the right node.
    let mut order: ArrayVec<BootModule<'a>, 3> = ArrayVec::new();
    let mut used = GUEST_DTB_ROOM;
    let mut affinity = [0u64; MAX_VCPUS as usize];
    // The static event channels as read; their peers are found after.
    let mut channels: ArrayVec<Channel<'a>, MAX_STATIC_EVTCHNS> = ArrayVec::new();
    let mut shared_mems: ArrayVec<SharedMem<'a>, MAX_SHARED_MEMS> = ArrayVec::new();
    // The shared-memory nodes' names, for the checks after the loop.
    let mut shm_nodes: ArrayVec<&'a str, MAX_SHARED_MEMS> = ArrayVec::new();
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
            let why = |why| DomainError::Evtchn(dom, name, why);
            let e = evtchn_node(&child).map_err(why)?;
            if channels.iter().any(|o| o.port == e.port) {
                return Err(why("local port used by another channel of this domain"));
            }
            channels
                .try_push(e)
                .map_err(|_| why("more than 16 static event channels in one domain"))?;
        } else if modules::compatible(&child, "xen,domain-shared-memory-v1") {
            let why = |why| DomainError::SharedMem(dom, name, why);
            let m = shared_mem(&child, acells, scells).map_err(why)?;
            if !ram.iter().any(|r| r.contains(&m.host_range())) {
                return Err(why("host range outside the usable RAM"));
            }
            for o in &shared_mems {
                if o.id == m.id {
                    return Err(why("xen,shm-id used twice in this domain"));
                }
                if o.host_range().overlaps(&m.host_range()) {
                    return Err(why("host range overlaps another region of this domain"));
                }
                if o.guest_range().overlaps(&m.guest_range()) {
                    return Err(why("guest range overlaps another region of this domain"));
                }
            }
            shared_mems
                .try_push(m)
                .map_err(|_| why("more than 8 shared-memory regions in one domain"))?;
            // As many names as regions: never full.
            shm_nodes.try_push(name).map_err(|_| why("more than 8"))?;
        } else {
            return Err(DomainError::UnknownCompatible(dom, name));
        }
    }
    let static_evtchns = peers_of(&chosen, ctx.index, &channels)
        .map_err(|(n, why)| DomainError::Evtchn(dom, n, why))?;
    let kernel = kernel.ok_or(DomainError::MissingKernel(dom))?;
    for &m in &order {
        table.push(m).map_err(|e| DomainError::Module(dom, e))?;
    }
    // The table now holds this domain's modules too.
    for (m, &name) in shared_mems.iter().zip(&shm_nodes) {
        if let Some(t) = table.iter().find(|t| t.range.overlaps(&m.host_range())) {
            return Err(DomainError::ShmOverModule(dom, name, t.node));
        }
        shm_conflict(m, ctx.accepted).map_or(Ok(()), |(o, why)| {
            Err(DomainError::ShmConflict(dom, name, o, why))
        })?;
    }
    for m in &order {
        if let Some(o) = ctx.accepted.iter().find(|o| {
            o.shared_mems
                .iter()
                .any(|t| t.host_range().overlaps(&m.range))
        }) {
            return Err(DomainError::ModuleOverShm(dom, m.node, o.node));
        }
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
        peers,
        tmem,
    })
}

/// The `hv,tmem-*` properties; errs with the property and why.
fn tmem_spec(node: &Node<'_>) -> Result<TmemSpec, (&'static str, &'static str)> {
    let mut spec = TmemSpec::default();
    let c = &mut spec.client;
    if let Some(v) = node.property("hv,tmem-weight") {
        c.weight = match be32(v) {
            Some(w @ 1..=MAX_TMEM_WEIGHT) => w,
            _ => return Err(("hv,tmem-weight", "not one cell of 1 to 10000")),
        };
    }
    let pages = |p: &'static str| -> Result<u64, (&'static str, &'static str)> {
        let kib = match node.property(p) {
            None => return Ok(0),
            Some(&[a, b, c, d]) => u64::from(u32::from_be_bytes([a, b, c, d])),
            Some(&[a, b, c, d, e, f, g, h]) => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
            Some(_) => return Err((p, "not 1 or 2 cells of KiB")),
        };
        Ok(kib / 4)
    };
    c.eph_cap = pages("hv,tmem-ephemeral")?;
    c.pers_quota = pages("hv,tmem-persistent")?;
    c.compress = match node.property("hv,tmem-compress") {
        None => false,
        Some([]) => true,
        Some(_) => return Err(("hv,tmem-compress", "not empty")),
    };
    let list = match node.property("hv,tmem-shared") {
        None | Some([]) => return Ok(spec),
        Some(v) => v
            .strip_suffix(&[0])
            .ok_or(("hv,tmem-shared", "not a list of strings"))?,
    };
    for text in list.split(|&b| b == 0) {
        let uuid = parse_uuid(text).ok_or(("hv,tmem-shared", "not a UUID (8-4-4-4-12 hex)"))?;
        if spec.shared.contains(&uuid) {
            return Err(("hv,tmem-shared", "a UUID twice"));
        }
        spec.shared
            .try_push(uuid)
            .map_err(|_| ("hv,tmem-shared", "more than 16 UUIDs"))?;
    }
    Ok(spec)
}

/// A UUID in its 8-4-4-4-12 hex form, as two little-endian words of its
/// 16 bytes in written order (how a guest's `uuid[2]` reads them).
pub fn parse_uuid(text: &[u8]) -> Option<crate::tmem::Uuid> {
    if text.len() != 36 {
        return None;
    }
    // The 32 digits' values, the dashes checked and skipped.
    let mut digits = [0u8; 32];
    let mut slots = digits.iter_mut();
    for (i, &c) in text.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        *slots.next()? = u8::try_from(char::from(c).to_digit(16)?).ok()?;
    }
    let mut bytes = [0u8; 16];
    for (b, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        if let [hi, lo] = *pair {
            *b = (hi << 4) | lo;
        }
    }
    let (a, b) = bytes.split_at(8);
    Some([
        u64::from_le_bytes(a.try_into().ok()?),
        u64::from_le_bytes(b.try_into().ok()?),
    ])
}

/// `hv,xen-peers`: a list of 1 to [`MAX_PEERS`] distinct names, or absent
/// or empty (no peers).
fn peers<'a>(node: &Node<'a>) -> Result<ArrayVec<&'a str, MAX_PEERS>, &'static str> {
    let mut out = ArrayVec::new();
    let v = match node.property("hv,xen-peers") {
        None | Some([]) => return Ok(out),
        Some(v) => v.strip_suffix(&[0]).ok_or("not a list of strings")?,
    };
    for name in v.split(|&b| b == 0) {
        let name = core::str::from_utf8(name).map_err(|_| "a name not UTF-8")?;
        if name.is_empty() || name.len() > MAX_PEER_NAME {
            return Err("a name empty or longer than 64 bytes");
        }
        if name == node.name() {
            return Err("names the domain itself");
        }
        if out.contains(&name) {
            return Err("a name twice");
        }
        out.try_push(name).map_err(|_| "more than 16 names")?;
    }
    Ok(out)
}

/// A node's phandle (`phandle`, else `linux,phandle`), when it has a valid
/// one (neither 0 nor all ones). One pass over its properties.
fn phandle(node: &Node<'_>) -> Option<u32> {
    let mut linux = None;
    for p in node.properties() {
        match p.name {
            "phandle" => return be32(p.value).filter(|&p| p != 0 && p != u32::MAX),
            "linux,phandle" => linux = Some(p.value),
            _ => {}
        }
    }
    linux.and_then(be32).filter(|&p| p != 0 && p != u32::MAX)
}

/// `xen,evtchn = <port phandle>`.
fn evtchn_cells(node: &Node<'_>) -> Option<(u32, u32)> {
    match *node.property("xen,evtchn")? {
        [a, b, c, d, e, f, g, h] => Some((
            u32::from_be_bytes([a, b, c, d]),
            u32::from_be_bytes([e, f, g, h]),
        )),
        _ => None,
    }
}

/// A static event channel as its node says, its peer not looked up yet.
#[derive(Clone, Copy)]
struct Channel<'a> {
    /// The node's name.
    node: &'a str,
    /// Its local port, 1 to [`MAX_STATIC_PORT`].
    port: u32,
    /// The phandle it names.
    target: u32,
    /// Its own phandle.
    own: u32,
}

/// Reads a static event channel node alone.
fn evtchn_node<'a>(node: &Node<'a>) -> Result<Channel<'a>, &'static str> {
    let (port, target) = evtchn_cells(node).ok_or("xen,evtchn is not <local-port &peer>")?;
    if !(1..=MAX_STATIC_PORT).contains(&port) {
        return Err("local port not 1 to 4095");
    }
    let own = phandle(node).ok_or("the node has no phandle, so no peer can point back at it")?;
    Ok(Channel {
        node: node.name(),
        port,
        target,
        own,
    })
}

/// Where a phandle of a static event channel led.
#[derive(Clone, Copy)]
enum Found<'a> {
    /// A child of `/chosen` itself (dom0's channels, in Xen).
    TopLevel(Node<'a>),
    /// A child (`node`) of a domain node (`domain`, child `index` of
    /// `/chosen`).
    InDomain {
        index: usize,
        domain: Node<'a>,
        node: Node<'a>,
    },
}

/// One channel's lookup: what its phandle named, how many nodes did, and
/// how many carry its own phandle.
#[derive(Clone, Copy)]
struct Lookup<'a> {
    channel: Channel<'a>,
    found: Option<Found<'a>>,
    targets: u8,
    owners: u8,
}

/// Finds and checks the peer of each channel of the domain that is child
/// `me` of `chosen`, in one pass over the children of `/chosen` and of its
/// domain nodes (each node's properties read once, compared with at most
/// [`MAX_STATIC_EVTCHNS`] phandles). A phandle must name exactly one of
/// those nodes, and a channel's own phandle be on one only (its peer looks
/// it up the same way). Errs with the first channel, in tree order, that
/// fails, and why.
fn peers_of<'a>(
    chosen: &Node<'a>,
    me: usize,
    channels: &[Channel<'a>],
) -> Result<ArrayVec<StaticEvtchn<'a>, MAX_STATIC_EVTCHNS>, (&'a str, &'static str)> {
    let mut out = ArrayVec::new();
    if channels.is_empty() {
        return Ok(out);
    }
    let mut lookups: ArrayVec<Lookup<'a>, MAX_STATIC_EVTCHNS> = channels
        .iter()
        .map(|&channel| Lookup {
            channel,
            found: None,
            targets: 0,
            owners: 0,
        })
        .collect();
    let mut visit = |node: &Node<'a>, hit: Found<'a>| {
        let Some(ph) = phandle(node) else { return };
        for l in &mut lookups {
            if ph == l.channel.own {
                l.owners = l.owners.saturating_add(1);
            }
            if ph == l.channel.target {
                l.targets = l.targets.saturating_add(1);
                l.found = Some(hit);
            }
        }
    };
    for (index, c) in chosen.children().enumerate() {
        visit(&c, Found::TopLevel(c));
        if !modules::compatible(&c, "xen,domain") {
            continue;
        }
        for node in c.children() {
            let hit = Found::InDomain {
                index,
                domain: c,
                node,
            };
            visit(&node, hit);
        }
    }
    for l in &lookups {
        let e = check_peer(l, me).map_err(|why| (l.channel.node, why))?;
        // As many as channels: never full.
        out.try_push(e).map_err(|_| {
            (
                l.channel.node,
                "more than 16 static event channels in one domain",
            )
        })?;
    }
    Ok(out)
}

/// Checks what a channel's phandle led to.
fn check_peer<'a>(l: &Lookup<'a>, me: usize) -> Result<StaticEvtchn<'a>, &'static str> {
    if l.owners > 1 {
        return Err("its own phandle is on more than one node in /chosen");
    }
    if l.targets > 1 {
        return Err("the phandle names more than one node in /chosen");
    }
    let (index, domain, peer) = match l.found {
        None => return Err("the phandle names no node of a domain in /chosen"),
        Some(Found::TopLevel(n)) if modules::compatible(&n, "xen,evtchn-v1") => {
            return Err("the peer is a dom0 channel directly under /chosen: there is no dom0 here");
        }
        Some(Found::TopLevel(_)) => {
            return Err("the phandle names a node that is not xen,evtchn-v1");
        }
        Some(Found::InDomain {
            index,
            domain,
            node,
        }) => (index, domain, node),
    };
    if !modules::compatible(&peer, "xen,evtchn-v1") {
        return Err("the phandle names a node that is not xen,evtchn-v1");
    }
    if index == me {
        return Err("the peer is in the same domain");
    }
    let (peer_port, back) =
        evtchn_cells(&peer).ok_or("the peer's xen,evtchn is not <port &node>")?;
    if back != l.channel.own {
        return Err("the peer does not point back at this node");
    }
    if !(1..=MAX_STATIC_PORT).contains(&peer_port) {
        return Err("the peer's port not 1 to 4095");
    }
    Ok(StaticEvtchn {
        local_port: l.channel.port,
        peer_domain: domain.name(),
        peer_port,
    })
}

/// One number of 1 or 2 cells.
fn number(v: &[u8]) -> Option<u64> {
    match *v {
        [a, b, c, d] => Some(u64::from(u32::from_be_bytes([a, b, c, d]))),
        [a, b, c, d, e, f, g, h] => Some(u64::from_be_bytes([a, b, c, d, e, f, g, h])),
        _ => None,
    }
}

/// Reads a static shared-memory node with the domain's cells and checks
/// what it says alone.
fn shared_mem<'a>(
    node: &Node<'a>,
    acells: u32,
    scells: u32,
) -> Result<SharedMem<'a>, &'static str> {
    let id = node
        .property("xen,shm-id")
        .and_then(modules::string)
        .ok_or("xen,shm-id missing or not one string")?;
    if id.is_empty() || id.len() > MAX_SHM_ID {
        return Err("xen,shm-id empty or longer than 15 bytes");
    }
    let owner = match node.property("role").map(modules::string) {
        None | Some(Some("borrower")) => false,
        Some(Some("owner")) => true,
        Some(_) => return Err("role neither \"owner\" nor \"borrower\""),
    };
    let bytes = |cells| match cells {
        1 => Some(4usize),
        2 => Some(8),
        _ => None,
    };
    let (Some(a), Some(s)) = (bytes(acells), bytes(scells)) else {
        return Err("the domain's #address-cells and #size-cells must be 1 or 2");
    };
    let v = node
        .property("xen,shared-mem")
        .ok_or("xen,shared-mem missing")?;
    let (host, rest) = v.split_at_checked(a).ok_or(SHARED_MEM_CELLS)?;
    let (guest, size) = rest.split_at_checked(a).ok_or(SHARED_MEM_CELLS)?;
    if size.len() != s {
        return Err(SHARED_MEM_CELLS);
    }
    let (Some(host), Some(guest), Some(size)) = (number(host), number(guest), number(size)) else {
        return Err(SHARED_MEM_CELLS);
    };
    if size == 0 {
        return Err("size 0");
    }
    if ![host, guest, size]
        .iter()
        .all(|x| x.is_multiple_of(SHM_ALIGN))
    {
        return Err("host, guest or size not 4 KiB aligned");
    }
    if host.checked_add(size).is_none() || guest.checked_add(size).is_none() {
        return Err("a range runs past the address space");
    }
    Ok(SharedMem {
        id,
        host,
        guest,
        size,
        owner,
    })
}

const SHARED_MEM_CELLS: &str = "xen,shared-mem is not <host guest size> in the domain's cells";

/// How region `m` of a new domain conflicts with the regions of the
/// domains accepted before, if it does: (that domain, why).
fn shm_conflict<'a>(
    m: &SharedMem<'_>,
    accepted: &[DomainSpec<'a>],
) -> Option<(&'a str, &'static str)> {
    for o in accepted {
        for t in &o.shared_mems {
            if t.id == m.id {
                if (t.host, t.size) != (m.host, m.size) {
                    return Some((
                        o.node,
                        "same xen,shm-id, another host range or size than in",
                    ));
                }
                if t.owner && m.owner {
                    return Some((o.node, "a second owner of its xen,shm-id; the owner is"));
                }
            } else if t.host_range().overlaps(&m.host_range()) {
                return Some((
                    o.node,
                    "host range overlaps the region of another xen,shm-id in",
                ));
            }
        }
    }
    None
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

/// Checks what every result of [`parse`] holds together, whatever the
/// tree: modules apart and owned, each accepted domain's sizes and modules
/// inside `ram`, its static channels, shared memory and peers consistent
/// across domains, every error naming its node. Panics on the first
/// violation. For the unit tests and the dom0less fuzz target (feature
/// `testenv`); `ram` is what was given to [`parse`].
#[cfg(any(test, feature = "testenv"))]
// Test support: it asserts (panics) by design and never runs in the
// hypervisor, so the parser's no-panic lints do not apply.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]
pub fn check_invariants(boot: &Boot<'_>, ram: &[PhysRange]) {
    let all: alloc::vec::Vec<_> = boot.modules.iter().collect();
    assert_eq!(all.len(), boot.modules.len());
    assert!(all.len() <= MAX_MODULES);
    // Distinct entries never share a byte (identical ones are one entry).
    for (i, m) in all.iter().enumerate() {
        assert!(m.range.start < m.range.end, "empty module {m:?}");
        assert_ne!(m.owners, 0, "{m:?} has no owner");
        assert!(
            m.owner < 32 && m.owners & (1 << m.owner) != 0,
            "{m:?} lacks its own bit"
        );
        // Owner n is domains[n - 1], owner 0 the top-level set.
        assert!(
            m.owners >> (boot.domains.len() + 1) == 0,
            "{m:?}: stray owner"
        );
        for o in &all[..i] {
            assert!(
                m.range.end <= o.range.start || o.range.end <= m.range.start,
                "{m:?} overlaps {o:?}"
            );
        }
    }
    assert!(boot.domains.len() <= MAX_DOMAINS);
    for (i, d) in boot.domains.iter().enumerate() {
        let bit = 1u32 << (i + 1);
        assert!((MIN_MEMORY..=MAX_MEMORY).contains(&d.memory));
        assert_eq!(d.memory % MEMORY_ALIGN, 0);
        assert!((1..=MAX_VCPUS).contains(&d.cpus));
        assert!(d.affinity[d.cpus as usize..].iter().all(|&a| a == 0));
        assert!(!d.direct_map);
        let mut used = GUEST_DTB_ROOM;
        for m in [Some(d.kernel), d.ramdisk, d.device_tree]
            .into_iter()
            .flatten()
        {
            assert!(
                ram.iter().any(|r| r.contains(&m.range)),
                "{m:?} of {} outside RAM",
                d.node
            );
            assert!(
                all.iter()
                    .any(|t| t.owners & bit != 0 && t.range == m.range && t.kind == m.kind),
                "{m:?} of {} not in the table",
                d.node
            );
            used += m.range.size();
        }
        assert!(used <= d.memory, "{}: modules do not fit", d.node);
        // The table holds no module of this domain beyond the three.
        assert!(all.iter().filter(|t| t.owners & bit != 0).count() <= 3);
        let t = &d.tmem;
        assert!((1..=MAX_TMEM_WEIGHT).contains(&t.client.weight));
        assert!(!t.client.frozen);
        for (k, u) in t.shared.iter().enumerate() {
            assert!(!t.shared[..k].contains(u), "{}: a UUID twice", d.node);
        }
        check_static_invariants(boot, d, ram);
    }
    // Shared regions across domains: one id is one range, ids apart, one
    // owner at most; the region list names each once.
    let shms: alloc::vec::Vec<_> = boot
        .domains
        .iter()
        .flat_map(|d| d.shared_mems.iter().map(move |m| (d.node, m)))
        .collect();
    for (i, (d, m)) in shms.iter().enumerate() {
        for (e, n) in &shms[..i] {
            if m.id == n.id {
                assert_eq!((m.host, m.size), (n.host, n.size), "{d}, {e}: {}", m.id);
                assert!(!(m.owner && n.owner), "{d}, {e} both own {}", m.id);
            } else {
                assert!(
                    !m.host_range().overlaps(&n.host_range()),
                    "{d}'s {} overlaps {e}'s {}",
                    m.id,
                    n.id
                );
            }
        }
    }
    let regions: alloc::vec::Vec<_> = boot.shm_regions().collect();
    for (i, (id, r)) in regions.iter().enumerate() {
        assert!(regions[..i].iter().all(|(j, q)| j != id && !q.overlaps(r)));
    }
    assert!(
        shms.iter()
            .all(|(_, m)| regions.contains(&(m.id, m.host_range())))
    );
    for (d, p) in boot.unknown_peers() {
        assert!(boot.domains.iter().any(|e| e.node == d));
        assert!(!boot.domains.iter().any(|e| e.node == p));
    }
    for e in &boot.errors {
        let s = alloc::string::ToString::to_string(e);
        assert!(
            s.starts_with("/chosen/") && s.ends_with("; domain not built"),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }
    if let Some(e) = boot.dom0_error {
        assert!(
            all.iter().all(|t| t.owners & 1 == 0),
            "{e:?} not rolled back"
        );
    }
    let _ = alloc::format!("{boot:?}");
}

/// [`check_invariants`] of one accepted domain's static event channels,
/// shared memory and peers.
#[cfg(any(test, feature = "testenv"))]
// Test support: it asserts (panics) by design and never runs in the
// hypervisor, so the parser's no-panic lints do not apply.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]
fn check_static_invariants(boot: &Boot<'_>, d: &DomainSpec<'_>, ram: &[PhysRange]) {
    assert!(d.static_evtchns.len() <= MAX_STATIC_EVTCHNS);
    for (i, e) in d.static_evtchns.iter().enumerate() {
        assert!((1..=MAX_STATIC_PORT).contains(&e.local_port), "{e:?}");
        assert!((1..=MAX_STATIC_PORT).contains(&e.peer_port), "{e:?}");
        assert!(
            d.static_evtchns[..i]
                .iter()
                .all(|o| o.local_port != e.local_port),
            "{}: port {} twice",
            d.node,
            e.local_port
        );
        // The peer, when built, has the other end pointing back.
        let back = StaticEvtchn {
            local_port: e.peer_port,
            peer_domain: d.node,
            peer_port: e.local_port,
        };
        let peers: alloc::vec::Vec<_> = boot
            .domains
            .iter()
            .filter(|p| p.node == e.peer_domain)
            .collect();
        assert!(
            peers.is_empty() || peers.iter().any(|p| p.static_evtchns.contains(&back)),
            "{}: {e:?} has no other end",
            d.node
        );
        for p in peers {
            assert!(d.may_talk(p) && p.may_talk(d));
        }
    }
    assert!(d.shared_mems.len() <= MAX_SHARED_MEMS);
    for (i, m) in d.shared_mems.iter().enumerate() {
        assert!(!m.id.is_empty() && m.id.len() <= MAX_SHM_ID, "{m:?}");
        assert!(m.size > 0, "{m:?}");
        for x in [m.host, m.guest, m.size] {
            assert_eq!(x % SHM_ALIGN, 0, "{m:?}");
        }
        assert!(m.host.checked_add(m.size).is_some() && m.guest.checked_add(m.size).is_some());
        assert!(
            ram.iter().any(|r| r.contains(&m.host_range())),
            "{m:?} outside RAM"
        );
        // No module of anyone (dom0 included) shares a byte with it.
        for t in boot.modules.iter() {
            assert!(!t.range.overlaps(&m.host_range()), "{m:?} over {t:?}");
        }
        for o in &d.shared_mems[..i] {
            assert_ne!(o.id, m.id);
            assert!(!o.guest_range().overlaps(&m.guest_range()));
            assert!(!o.host_range().overlaps(&m.host_range()));
        }
    }
    assert!(d.peers.len() <= MAX_PEERS);
    for (i, p) in d.peers.iter().enumerate() {
        assert!(!p.is_empty() && p.len() <= MAX_PEER_NAME && *p != d.node);
        assert!(!d.peers[..i].contains(p));
    }
    for e in &boot.domains {
        assert_eq!(d.may_talk(e), e.may_talk(d));
        if d.peers.contains(&e.node) {
            assert!(d.may_talk(e));
        }
    }
    assert!(d.may_talk(d));
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

    /// A static event channel with phandle `ph`: `port`, to phandle `peer`.
    fn ev(name: &str, ph: u32, port: u32, peer: u32) -> N {
        N::new(name)
            .p("compatible", V::Strs(&["xen,evtchn-v1"]))
            .cells("phandle", &[ph])
            .cells("xen,evtchn", &[port, peer])
    }

    /// A static shared-memory node in 2/2 cells.
    fn shm(name: &str, id: &'static str, host: u64, guest: u64, size: u64) -> N {
        let two = |x: u64| [(x >> 32) as u32, x as u32];
        let cells: Vec<u32> = [host, guest, size].into_iter().flat_map(two).collect();
        N::new(name)
            .p("compatible", V::Strs(&["xen,domain-shared-memory-v1"]))
            .s("xen,shm-id", id)
            .cells("xen,shared-mem", &cells)
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

    fn parse_ok(dtb: &[u8]) -> Boot<'_> {
        let boot = parse(dtb, &RAM).unwrap();
        check(dtb, &boot);
        boot
    }

    /// Every domain node is either built or refused, and [`check_invariants`].
    fn check(dtb: &[u8], boot: &Boot<'_>) {
        let fdt = Fdt::new(dtb).unwrap();
        let nodes = modules::chosen(&fdt.root()).map_or(0, |c| {
            c.children()
                .filter(|n| modules::compatible(n, "xen,domain"))
                .count()
        });
        let n = boot.domains.len() + boot.errors.len() + boot.errors_dropped as usize;
        assert_eq!(n, nodes);
        check_invariants(boot, &RAM);
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
            .kid(ev("evtchn", 7, 10, 8))
            .kid(shm("shm0", "ring", 0x9000_0000, 0x2_0000_0000, 0x1_0000).s("role", "owner"))
            .kid(shm("shm1", "bulk", 0x1_2000_0000, 0x2_1000_0000, 0x20_0000))
            .p("hv,xen-peers", V::Strs(&["DomU3", "DomU2"]))
            .kid(N::new("note").s("label", "no compatible: ignored"));
        let tree = dtb(chosen()
            .kid(d)
            .kid(simple("DomU2", 0x6300_0000).kid(ev("evtchn", 8, 11, 7))));
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
            static_evtchns: [StaticEvtchn {
                local_port: 10,
                peer_domain: "DomU2",
                peer_port: 11,
            }]
            .into_iter()
            .collect(),
            shared_mems: [
                SharedMem {
                    id: "ring",
                    host: 0x9000_0000,
                    guest: 0x2_0000_0000,
                    size: 0x1_0000,
                    owner: true,
                },
                SharedMem {
                    id: "bulk",
                    host: 0x1_2000_0000,
                    guest: 0x2_1000_0000,
                    size: 0x20_0000,
                    owner: false,
                },
            ]
            .into_iter()
            .collect(),
            peers: ["DomU3", "DomU2"].into_iter().collect(),
            tmem: TmemSpec::default(),
        };
        assert_eq!(*d, want);
        assert!(d.xen_interfaces() && !d.xenstore());
        let e = &boot.domains[1];
        assert_eq!(
            e.static_evtchns.as_slice(),
            [StaticEvtchn {
                local_port: 11,
                peer_domain: "DomU1",
                peer_port: 10,
            }]
        );
        assert!(d.may_talk(e) && e.may_talk(d));
        assert_eq!(
            boot.unknown_peers().collect::<Vec<_>>(),
            [("DomU1", "DomU3")]
        );
        assert_eq!(boot.modules.len(), 4);
        let regions: Vec<_> = boot.shm_regions().collect();
        assert_eq!(
            regions,
            [
                ("ring", PhysRange::from_base_size(0x9000_0000, 0x1_0000)),
                ("bulk", PhysRange::from_base_size(0x1_2000_0000, 0x20_0000)),
            ]
        );
        assert_eq!(
            boot.modules.iter().take(3).copied().collect::<Vec<_>>(),
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
        assert!(d.static_evtchns.is_empty() && d.shared_mems.is_empty() && d.peers.is_empty());
        // No xen,enhanced: no Xen interfaces, as in Xen.
        assert!(!d.xen_interfaces() && !d.xenstore());
        // An empty xen,enhanced means "enabled", as in Xen.
        let tree = dtb(chosen().kid(simple("d", 0x6000_0000).empty("xen,enhanced")));
        assert_eq!(parse_ok(&tree).domains[0].enhanced, Some("enabled"));
        for (v, xen, xenstore) in [
            ("enabled", true, true),
            ("no-xenstore", true, false),
            ("disabled", false, false),
            ("legacy", true, true),
        ] {
            let tree = dtb(chosen().kid(simple("d", 0x6000_0000).s("xen,enhanced", v)));
            let boot = parse_ok(&tree);
            let d = &boot.domains[0];
            assert_eq!(d.enhanced, Some(v));
            assert_eq!((d.xen_interfaces(), d.xenstore()), (xen, xenstore), "{v}");
        }
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
    fn tmem_settings_and_shared_uuids() {
        // Absent: weight 1, no cap, no persistent quota, no sharing.
        let tree = dtb(chosen().kid(simple("d", 0x6000_0000)));
        let t = &parse_ok(&tree).domains[0].tmem;
        assert_eq!(*t, TmemSpec::default());
        assert_eq!(t.client.weight, 1);
        let tree = dtb(chosen().kid(
            simple("d", 0x6000_0000)
                .cells("hv,tmem-weight", &[3])
                .cells("hv,tmem-ephemeral", &[0, 4099])
                .cells("hv,tmem-persistent", &[256])
                .empty("hv,tmem-compress")
                .p(
                    "hv,tmem-shared",
                    V::Strs(&[
                        "00112233-4455-6677-8899-aabbccddeeff",
                        "FFFFFFFF-0000-0000-0000-000000000001",
                    ]),
                ),
        ));
        let t = &parse_ok(&tree).domains[0].tmem;
        assert_eq!(
            (
                t.client.weight,
                t.client.eph_cap,
                t.client.pers_quota,
                t.client.compress
            ),
            (3, 1024, 64, true)
        );
        assert_eq!(
            t.shared.as_slice(),
            &[
                [0x7766_5544_3322_1100, 0xffee_ddcc_bbaa_9988],
                [0xffff_ffff, 0x0100_0000_0000_0000]
            ]
        );
        let bad = |p: &'static str, why: &'static str| DomainError::BadProperty("d", p, why);
        let weight = "not one cell of 1 to 10000";
        let uuid = "not a UUID (8-4-4-4-12 hex)";
        let cases = [
            (
                simple("d", 0x6000_0000).cells("hv,tmem-weight", &[0]),
                bad("hv,tmem-weight", weight),
            ),
            (
                simple("d", 0x6000_0000).cells("hv,tmem-weight", &[10_001]),
                bad("hv,tmem-weight", weight),
            ),
            (
                simple("d", 0x6000_0000).empty("hv,tmem-weight"),
                bad("hv,tmem-weight", weight),
            ),
            (
                simple("d", 0x6000_0000).cells("hv,tmem-ephemeral", &[1, 2, 3]),
                bad("hv,tmem-ephemeral", "not 1 or 2 cells of KiB"),
            ),
            (
                simple("d", 0x6000_0000).empty("hv,tmem-persistent"),
                bad("hv,tmem-persistent", "not 1 or 2 cells of KiB"),
            ),
            (
                simple("d", 0x6000_0000).cells("hv,tmem-compress", &[1]),
                bad("hv,tmem-compress", "not empty"),
            ),
            (
                simple("d", 0x6000_0000).p("hv,tmem-shared", V::Bytes(b"abc".to_vec())),
                bad("hv,tmem-shared", "not a list of strings"),
            ),
            (
                simple("d", 0x6000_0000).s("hv,tmem-shared", "00112233-4455-6677-8899-aabbccddeef"),
                bad("hv,tmem-shared", uuid),
            ),
            (
                simple("d", 0x6000_0000)
                    .s("hv,tmem-shared", "00112233x4455-6677-8899-aabbccddeeff"),
                bad("hv,tmem-shared", uuid),
            ),
            (
                simple("d", 0x6000_0000)
                    .s("hv,tmem-shared", "0011223g-4455-6677-8899-aabbccddeeff"),
                bad("hv,tmem-shared", uuid),
            ),
            (
                simple("d", 0x6000_0000)
                    .s("hv,tmem-shared", "+0112233-4455-6677-8899-aabbccddeeff"),
                bad("hv,tmem-shared", uuid),
            ),
            (
                simple("d", 0x6000_0000).p(
                    "hv,tmem-shared",
                    V::Strs(&[
                        "00112233-4455-6677-8899-aabbccddeeff",
                        "00112233-4455-6677-8899-AABBCCDDEEFF",
                    ]),
                ),
                bad("hv,tmem-shared", "a UUID twice"),
            ),
        ];
        for (node, want) in cases {
            refused(node, want);
        }
        // 17 UUIDs: one too many.
        const MANY: [&str; 17] = [
            "00000000-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000002",
            "00000000-0000-0000-0000-000000000003",
            "00000000-0000-0000-0000-000000000004",
            "00000000-0000-0000-0000-000000000005",
            "00000000-0000-0000-0000-000000000006",
            "00000000-0000-0000-0000-000000000007",
            "00000000-0000-0000-0000-000000000008",
            "00000000-0000-0000-0000-000000000009",
            "00000000-0000-0000-0000-00000000000a",
            "00000000-0000-0000-0000-00000000000b",
            "00000000-0000-0000-0000-00000000000c",
            "00000000-0000-0000-0000-00000000000d",
            "00000000-0000-0000-0000-00000000000e",
            "00000000-0000-0000-0000-00000000000f",
            "00000000-0000-0000-0000-000000000010",
        ];
        refused(
            simple("d", 0x6000_0000).p("hv,tmem-shared", V::Strs(&MANY)),
            bad("hv,tmem-shared", "more than 16 UUIDs"),
        );
        let tree =
            dtb(chosen().kid(simple("d", 0x6000_0000).p("hv,tmem-shared", V::Strs(&MANY[..16]))));
        assert_eq!(parse_ok(&tree).domains[0].tmem.shared.len(), 16);
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
                    "not \"enabled\", \"no-xenstore\", \"disabled\" or \"legacy\"",
                ),
            ),
            (
                d().p("xen,enhanced", V::Bytes(b"enabled".to_vec())),
                bad(
                    "xen,enhanced",
                    "not \"enabled\", \"no-xenstore\", \"disabled\" or \"legacy\"",
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
    fn static_event_channels_pair_up() {
        // Two channels between a and b, one between b and c; linux,phandle
        // counts as a phandle too.
        let tree = dtb(chosen()
            .kid(
                simple("a", 0x6000_0000)
                    .kid(ev("e1", 1, 10, 2))
                    .kid(ev("e2", 3, 4095, 4)),
            )
            .kid(
                simple("b", 0x6100_0000)
                    .kid(ev("e1", 2, 20, 1))
                    .kid(ev("e2", 4, 1, 3))
                    .kid(
                        ev("e3", 0, 30, 6)
                            .without("phandle")
                            .cells("linux,phandle", &[5]),
                    ),
            )
            .kid(simple("c", 0x6200_0000).kid(ev("e1", 6, 30, 5))));
        let boot = parse_ok(&tree);
        assert!(boot.errors.is_empty(), "{:?}", boot.errors);
        let ch = |d: usize| -> Vec<(u32, &str, u32)> {
            boot.domains[d]
                .static_evtchns
                .iter()
                .map(|e| (e.local_port, e.peer_domain, e.peer_port))
                .collect()
        };
        assert_eq!(ch(0), [(10, "b", 20), (4095, "b", 1)]);
        assert_eq!(ch(1), [(20, "a", 10), (1, "a", 4095), (30, "c", 30)]);
        assert_eq!(ch(2), [(30, "b", 30)]);
        let [a, b, c] = [0, 1, 2].map(|i| &boot.domains[i]);
        assert!(a.may_talk(b) && b.may_talk(c) && a.may_talk(a));
        assert!(!a.may_talk(c) && !c.may_talk(a));
    }

    #[test]
    fn static_event_channel_errors() {
        let bad = |d, c, why| DomainError::Evtchn(d, c, why);
        // The other end points elsewhere: a is refused, b and c pair up.
        let tree = dtb(chosen()
            .kid(simple("a", 0x6000_0000).kid(ev("ea", 1, 10, 2)))
            .kid(simple("b", 0x6100_0000).kid(ev("eb", 2, 10, 3)))
            .kid(simple("c", 0x6200_0000).kid(ev("ec", 3, 10, 2))));
        let boot = parse_ok(&tree);
        assert_eq!(
            boot.errors.as_slice(),
            [bad("a", "ea", "the peer does not point back at this node")]
        );
        assert_eq!(boot.domains.len(), 2);
        // One domain alone: each refused with its reason, "good" built.
        let one = |kid: N| simple("d", 0x6000_0000).kid(kid);
        let no_phandle = || ev("e", 1, 10, 99).without("phandle");
        let cases: Vec<(N, &str)> = vec![
            (
                one(ev("e", 1, 10, 99)),
                "the phandle names no node of a domain in /chosen",
            ),
            (
                one(ev("e", 1, 10, 2)).kid(ev("f", 2, 11, 1)),
                "the peer is in the same domain",
            ),
            (
                one(ev("e", 1, 10, 2))
                    .kid(module("r", R, 0x6100_0000, 0x1000).cells("phandle", &[2])),
                "the phandle names a node that is not xen,evtchn-v1",
            ),
            (
                one(no_phandle()),
                "the node has no phandle, so no peer can point back at it",
            ),
            (
                one(ev("e", 1, 10, 2).cells("phandle", &[u32::MAX])),
                "the node has no phandle, so no peer can point back at it",
            ),
            (one(ev("e", 1, 0, 2)), "local port not 1 to 4095"),
            (one(ev("e", 1, 4096, 2)), "local port not 1 to 4095"),
            (
                one(ev("e", 1, 10, 2).cells("xen,evtchn", &[10])),
                "xen,evtchn is not <local-port &peer>",
            ),
            (
                one(ev("e", 1, 10, 2).cells("xen,evtchn", &[10, 2, 0])),
                "xen,evtchn is not <local-port &peer>",
            ),
            (
                one(ev("e", 1, 10, 2).without("xen,evtchn")),
                "xen,evtchn is not <local-port &peer>",
            ),
        ];
        for (node, why) in cases {
            refused(node, bad("d", "e", why));
        }
        // A peer's end that is malformed or out of range refuses both.
        for (peer, why) in [
            (ev("p", 2, 4096, 1), "the peer's port not 1 to 4095"),
            (
                ev("p", 2, 10, 1).cells("xen,evtchn", &[10]),
                "the peer's xen,evtchn is not <port &node>",
            ),
        ] {
            let tree = dtb(chosen()
                .kid(simple("a", 0x6000_0000).kid(ev("e", 1, 10, 2)))
                .kid(simple("b", 0x6100_0000).kid(peer)));
            let boot = parse_ok(&tree);
            assert_eq!(boot.errors[0], bad("a", "e", why));
            assert_eq!(boot.errors.len(), 2);
        }
        // A dom0 channel under /chosen: there is no dom0.
        let tree = dtb(chosen()
            .kid(ev("dom0-ec", 5, 10, 1))
            .kid(simple("a", 0x6000_0000).kid(ev("e", 1, 10, 5))));
        assert_eq!(
            parse_ok(&tree).errors.as_slice(),
            [bad(
                "a",
                "e",
                "the peer is a dom0 channel directly under /chosen: there is no dom0 here"
            )]
        );
        // One phandle on two nodes: neither end can be resolved.
        let tree = dtb(chosen()
            .kid(simple("a", 0x6000_0000).kid(ev("e", 1, 10, 2)))
            .kid(simple("b", 0x6100_0000).kid(ev("e", 2, 10, 1)))
            .kid(simple("c", 0x6200_0000).kid(N::new("x").cells("phandle", &[2]))));
        let boot = parse_ok(&tree);
        assert_eq!(
            boot.errors.as_slice(),
            [
                bad("a", "e", "the phandle names more than one node in /chosen"),
                bad(
                    "b",
                    "e",
                    "its own phandle is on more than one node in /chosen"
                )
            ]
        );
        assert_eq!(boot.domains[0].node, "c");
    }

    #[test]
    fn a_port_once_per_domain_and_at_most_16() {
        // a uses port 10 twice: refused; b is built, its channels name a
        // domain that is not (the hypervisor skips them).
        let tree = dtb(chosen()
            .kid(
                simple("a", 0x6000_0000)
                    .kid(ev("e1", 1, 10, 2))
                    .kid(ev("e2", 3, 10, 4)),
            )
            .kid(
                simple("b", 0x6100_0000)
                    .kid(ev("e1", 2, 20, 1))
                    .kid(ev("e2", 4, 21, 3)),
            ));
        let boot = parse_ok(&tree);
        assert_eq!(
            boot.errors.as_slice(),
            [DomainError::Evtchn(
                "a",
                "e2",
                "local port used by another channel of this domain"
            )]
        );
        assert_eq!(boot.domains[0].node, "b");
        assert_eq!(boot.domains[0].static_evtchns.len(), 2);
        assert!(
            boot.domains[0]
                .static_evtchns
                .iter()
                .all(|e| e.peer_domain == "a")
        );
        // 16 channels each way are fine, the 17th refuses both domains.
        let pair = |n: u32| {
            let (mut a, mut b) = (simple("a", 0x6000_0000), simple("b", 0x6100_0000));
            for i in 0..n {
                a = a.kid(ev(&format!("e{i}"), 100 + i, 1 + i, 200 + i));
                b = b.kid(ev(&format!("e{i}"), 200 + i, 1 + i, 100 + i));
            }
            dtb(chosen().kid(a).kid(b))
        };
        let tree = pair(16);
        let boot = parse_ok(&tree);
        assert_eq!(boot.domains.len(), 2);
        assert_eq!(boot.domains[1].static_evtchns.len(), MAX_STATIC_EVTCHNS);
        let tree = pair(17);
        let boot = parse_ok(&tree);
        let why = "more than 16 static event channels in one domain";
        assert_eq!(
            boot.errors.as_slice(),
            [
                DomainError::Evtchn("a", "e16", why),
                DomainError::Evtchn("b", "e16", why)
            ]
        );
    }

    #[test]
    fn static_shared_memory_between_two_domains() {
        let tree = dtb(chosen()
            .kid(
                simple("a", 0x6000_0000)
                    .kid(shm("s", "ring", 0x9000_0000, 0x2_0000_0000, 0x1_0000).s("role", "owner")),
            )
            .kid(
                simple("b", 0x6100_0000).kid(
                    shm("t", "ring", 0x9000_0000, 0x3_0000_0000, 0x1_0000).s("role", "borrower"),
                ),
            )
            .kid(simple("c", 0x6200_0000)));
        let boot = parse_ok(&tree);
        assert!(boot.errors.is_empty(), "{:?}", boot.errors);
        let [a, b, c] = [0, 1, 2].map(|i| &boot.domains[i]);
        assert_eq!(
            (a.shared_mems[0].owner, b.shared_mems[0].owner),
            (true, false)
        );
        assert_eq!(b.shared_mems[0].guest, 0x3_0000_0000);
        assert!(a.may_talk(b) && b.may_talk(a) && !a.may_talk(c));
        assert_eq!(
            boot.shm_regions().collect::<Vec<_>>(),
            [("ring", PhysRange::from_base_size(0x9000_0000, 0x1_0000))]
        );
        // 1/1 cells, from the domain node.
        let one = dom("d", 64)
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .kid(module("k", K, 0, 0).cells("reg", &[0x6000_0000, 0x1000]))
            .kid(shm("s", "x", 0, 0, 0).cells("xen,shared-mem", &[0x9000_0000, 0x1000, 0x2000]));
        let tree = dtb(chosen().kid(one));
        let m = parse_ok(&tree).domains[0].shared_mems[0];
        assert_eq!(
            (m.host, m.guest, m.size, m.owner),
            (0x9000_0000, 0x1000, 0x2000, false)
        );
    }

    #[test]
    fn static_shared_memory_errors() {
        let d = || simple("d", 0x6000_0000);
        let s = |host, guest, size| shm("s", "id", host, guest, size);
        let ok = || s(0x9000_0000, 0x2_0000_0000, 0x1000);
        let cases: Vec<(N, &str)> = vec![
            (
                d().kid(ok().without("xen,shm-id")),
                "xen,shm-id missing or not one string",
            ),
            (
                d().kid(ok().p("xen,shm-id", V::Strs(&["a", "b"]))),
                "xen,shm-id missing or not one string",
            ),
            (
                d().kid(ok().s("xen,shm-id", "")),
                "xen,shm-id empty or longer than 15 bytes",
            ),
            (
                d().kid(ok().s("xen,shm-id", "0123456789abcdef")),
                "xen,shm-id empty or longer than 15 bytes",
            ),
            (
                d().kid(ok().s("role", "lender")),
                "role neither \"owner\" nor \"borrower\"",
            ),
            (
                d().kid(ok().without("xen,shared-mem")),
                "xen,shared-mem missing",
            ),
            (
                d().kid(ok().cells("xen,shared-mem", &[0, 0x9000_0000, 0, 0, 0])),
                SHARED_MEM_CELLS,
            ),
            (
                d().kid(ok().cells("xen,shared-mem", &[0, 0x9000_0000, 0, 0, 0, 0x1000, 0])),
                SHARED_MEM_CELLS,
            ),
            (d().kid(s(0x9000_0000, 0x1000, 0)), "size 0"),
            (
                d().kid(s(0x9000_0800, 0x1000, 0x1000)),
                "host, guest or size not 4 KiB aligned",
            ),
            (
                d().kid(s(0x9000_0000, 0x1800, 0x1000)),
                "host, guest or size not 4 KiB aligned",
            ),
            (
                d().kid(s(0x9000_0000, 0x1000, 0x1800)),
                "host, guest or size not 4 KiB aligned",
            ),
            (
                d().kid(s(0x9000_0000, u64::MAX - 0xfff, 0x2000)),
                "a range runs past the address space",
            ),
            (
                d().kid(s(u64::MAX - 0xfff, 0x1000, 0x2000)),
                "a range runs past the address space",
            ),
            (
                d().kid(s(0x3000_0000, 0x1000, 0x1000)),
                "host range outside the usable RAM",
            ),
            (
                d().kid(s(0xbfff_f000, 0x1000, 0x2000)),
                "host range outside the usable RAM",
            ),
            (
                dom("d", 64)
                    .cells("#address-cells", &[3])
                    .kid(ok())
                    .kid(module("kernel", K, 0x6000_0000, 0x1000)),
                "the domain's #address-cells and #size-cells must be 1 or 2",
            ),
            (
                d().kid(ok())
                    .kid(shm("s", "id", 0x9100_0000, 0x2_1000_0000, 0x1000)),
                "xen,shm-id used twice in this domain",
            ),
            (
                d().kid(ok())
                    .kid(shm("s", "id2", 0x9000_0000, 0x2_1000_0000, 0x1000)),
                "host range overlaps another region of this domain",
            ),
            (
                d().kid(ok())
                    .kid(shm("s", "id2", 0x9100_0000, 0x2_0000_0000, 0x1000)),
                "guest range overlaps another region of this domain",
            ),
        ];
        for (node, why) in cases {
            refused(node, DomainError::SharedMem("d", "s", why));
        }
        // At most 8.
        let many = |n: u64| {
            (0..n).fold(d(), |d, i| {
                d.kid(shm(
                    "s",
                    ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8"][i as usize],
                    0x9000_0000 + (i << 20),
                    0x2_0000_0000 + (i << 20),
                    0x1000,
                ))
            })
        };
        let tree = dtb(chosen().kid(many(8)));
        assert_eq!(
            parse_ok(&tree).domains[0].shared_mems.len(),
            MAX_SHARED_MEMS
        );
        refused(
            many(9),
            DomainError::SharedMem("d", "s", "more than 8 shared-memory regions in one domain"),
        );
    }

    #[test]
    fn shared_memory_against_other_domains_and_modules() {
        let a = || {
            simple("a", 0x6000_0000)
                .kid(shm("s", "ring", 0x9000_0000, 0x2_0000_0000, 0x2000).s("role", "owner"))
        };
        let two = |b: N| {
            let tree = dtb(chosen().kid(a()).kid(b));
            let boot = parse_ok(&tree);
            assert_eq!(boot.domains[0].node, "a");
            assert_eq!(boot.domains.len(), 1);
            boot.errors[0].to_string()
        };
        let b = || simple("b", 0x6100_0000);
        let conflict = |why| DomainError::ShmConflict("b", "t", "a", why).to_string();
        // The same id, another size or host.
        assert_eq!(
            two(b().kid(shm("t", "ring", 0x9000_0000, 0x2_0000_0000, 0x1000))),
            conflict("same xen,shm-id, another host range or size than in")
        );
        assert_eq!(
            two(b().kid(shm("t", "ring", 0x9001_0000, 0x2_0000_0000, 0x2000))),
            conflict("same xen,shm-id, another host range or size than in")
        );
        // Another id over the same bytes.
        assert_eq!(
            two(b().kid(shm("t", "bulk", 0x9000_1000, 0x2_0000_0000, 0x1000))),
            conflict("host range overlaps the region of another xen,shm-id in")
        );
        // Two owners.
        assert_eq!(
            two(b().kid(shm("t", "ring", 0x9000_0000, 0x2_0000_0000, 0x2000).s("role", "owner"))),
            conflict("a second owner of its xen,shm-id; the owner is")
        );
        // A later domain's module over the region.
        assert_eq!(
            two(dom("b", 64).kid(module("k", K, 0x9000_1000, 0x1000))),
            DomainError::ModuleOverShm("b", "k", "a").to_string()
        );
        // A region over a module: its own, an earlier domain's, dom0's.
        let over = |m: u64| shm("t", "x", m, 0x2_0000_0000, 0x1000);
        refused(
            simple("d", 0x6000_0000).kid(over(0x6000_0000)),
            DomainError::ShmOverModule("d", "t", "kernel"),
        );
        let tree = dtb(chosen()
            .kid(module("k0", K, 0x4100_0000, 0x1000))
            .kid(simple("a", 0x6000_0000))
            .kid(simple("b", 0x6100_0000).kid(over(0x6000_0000)))
            .kid(simple("c", 0x6200_0000).kid(over(0x4100_0000))));
        let boot = parse_ok(&tree);
        assert_eq!(
            boot.errors.as_slice(),
            [
                DomainError::ShmOverModule("b", "t", "kernel"),
                DomainError::ShmOverModule("c", "t", "k0")
            ]
        );
        // A refused domain's region is gone: a later one may use its bytes.
        let tree = dtb(chosen()
            .kid(
                simple("a", 0x6000_0000)
                    .kid(over(0x9000_0000))
                    .cells("cpus", &[0]),
            )
            .kid(simple("b", 0x6100_0000).kid(shm("t", "y", 0x9000_0000, 0x1000, 0x1000))));
        let boot = parse_ok(&tree);
        assert_eq!(boot.domains.len(), 1);
        assert_eq!(boot.domains[0].shared_mems[0].id, "y");
    }

    #[test]
    fn peers_list_and_policy() {
        let tree = dtb(chosen()
            .kid(simple("a", 0x6000_0000).p("hv,xen-peers", V::Strs(&["b", "gone"])))
            .kid(simple("b", 0x6100_0000))
            .kid(simple("c", 0x6200_0000).empty("hv,xen-peers"))
            .kid(simple("d", 0x6300_0000).p("hv,xen-peers", V::Strs(&["c"]))));
        let boot = parse_ok(&tree);
        assert!(boot.errors.is_empty());
        let [a, b, c, d] = [0, 1, 2, 3].map(|i| &boot.domains[i]);
        assert_eq!(a.peers.as_slice(), ["b", "gone"]);
        assert!(c.peers.is_empty());
        // Either side naming the other is enough; nobody else.
        assert!(a.may_talk(b) && b.may_talk(a) && c.may_talk(d) && d.may_talk(c));
        assert!(!a.may_talk(c) && !b.may_talk(d) && !b.may_talk(c));
        assert_eq!(boot.unknown_peers().collect::<Vec<_>>(), [("a", "gone")]);

        let bad = |why| DomainError::BadProperty("d", "hv,xen-peers", why);
        let d = || simple("d", 0x6000_0000);
        let long: &'static str = "x".repeat(65).leak();
        let names: Vec<&'static str> = (0..17).map(|i| &*format!("p{i}").leak()).collect();
        let names: &'static [&'static str] = names.leak();
        let cases = vec![
            (
                d().s("hv,xen-peers", ""),
                bad("a name empty or longer than 64 bytes"),
            ),
            (
                d().p("hv,xen-peers", V::Strs(&["a", ""])),
                bad("a name empty or longer than 64 bytes"),
            ),
            (
                d().s("hv,xen-peers", long),
                bad("a name empty or longer than 64 bytes"),
            ),
            (
                d().p("hv,xen-peers", V::Bytes(b"a".to_vec())),
                bad("not a list of strings"),
            ),
            (
                d().p("hv,xen-peers", V::Bytes(b"\xff\0".to_vec())),
                bad("a name not UTF-8"),
            ),
            (
                d().p("hv,xen-peers", V::Strs(&["a", "a"])),
                bad("a name twice"),
            ),
            (d().s("hv,xen-peers", "d"), bad("names the domain itself")),
            (
                d().p("hv,xen-peers", V::Strs(names)),
                bad("more than 16 names"),
            ),
        ];
        for (node, want) in cases {
            refused(node, want);
        }
        let tree = dtb(chosen().kid(
            d().s("hv,xen-peers", &long[1..])
                .p("hv,xen-peers", V::Strs(&names[1..])),
        ));
        assert_eq!(parse_ok(&tree).domains[0].peers.len(), MAX_PEERS);
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
            (
                DomainError::Evtchn("d1", "ec", "local port not 1 to 4095"),
                "/chosen/d1/ec: static event channel: local port not 1 to 4095; domain not built",
            ),
            (
                DomainError::SharedMem("d1", "shm", "size 0"),
                "/chosen/d1/shm: static shared memory: size 0; domain not built",
            ),
            (
                DomainError::ShmConflict(
                    "d2",
                    "shm",
                    "d1",
                    "same xen,shm-id, another host range or size than in",
                ),
                "/chosen/d2/shm: static shared memory: same xen,shm-id, another host range or \
                 size than in /chosen/d1; domain not built",
            ),
            (
                DomainError::ShmOverModule("d1", "shm", "kernel"),
                "/chosen/d1/shm: static shared memory overlaps boot module kernel; domain not built",
            ),
            (
                DomainError::ModuleOverShm("d2", "kernel", "d1"),
                "/chosen/d2/kernel: module overlaps static shared memory of /chosen/d1; domain not built",
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
                    .kid(ev("e", 1, 10, 2))
                    .kid(shm("s", "ring", 0x9000_0000, 0x2_0000_0000, 0x1000).s("role", "owner")),
            )
            .kid(
                simple("b", 0x6800_0000)
                    .cells("memory", &[4096 * 2])
                    .p("hv,xen-peers", V::Strs(&["a", "c"]))
                    .kid(shm("s", "ring", 0x9000_0000, 0x3_0000_0000, 0x1000)),
            )
            .kid(
                simple("c", 0x7000_0000)
                    .s("xen,enhanced", "enabled")
                    .kid(ev("e", 2, 11, 1)),
            ))
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
