//! Boot modules: the kernels, ramdisks and device trees a boot loader left
//! in memory and described under `/chosen`, in Xen's multiboot binding
//! (`compatible = "multiboot,module"` plus `"multiboot,kernel"`,
//! `"multiboot,ramdisk"` or `"multiboot,device-tree"`, with `reg` and, for
//! kernels, `bootargs`). QEMU's guest-loader device and a U-Boot script
//! both write these nodes.
//!
//! This module owns the fixed-capacity table and its checks; it never
//! touches the memory the modules describe. Every loop over the table is
//! bounded by the number of entries filled, never by the capacity.
//!
//! Cells: a module's `reg` is read with `/chosen`'s own `#address-cells` and
//! `#size-cells` when it has them, else with the root's. QEMU's guest-loader
//! writes 2+2 cells without adding the properties to `/chosen`, relying on
//! the root's (the DT specification's default of 2/1 would misread it).
//!
//! Owners: the table holds the modules of every domain built at boot (see
//! [`crate::dom0less`]). Each entry records who asked for it: owner 0 is the
//! top-level (dom0) set, owner n the n-th domain accepted from `/chosen`.
//! "One module of each kind" holds per owner. A module identical (kind,
//! start, size) to one of another owner is shared: one entry, one more bit in
//! [`BootModule::owners`], so several domains can boot one kernel image.

use core::fmt;

use arrayvec::ArrayVec;

use crate::fdt::{Fdt, Node};
use crate::memory::PhysRange;

/// Capacity of the module table.
pub const MAX_MODULES: usize = 32;

/// What a module holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// A kernel image (`multiboot,kernel`, or the first plain module).
    Kernel,
    /// An initial ramdisk (`multiboot,ramdisk`, or the second plain module).
    Ramdisk,
    /// A partial device tree for the domain (`multiboot,device-tree`).
    DeviceTree,
}

/// One boot module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootModule<'a> {
    /// Its kind.
    pub kind: ModuleKind,
    /// Where it lies in physical memory.
    pub range: PhysRange,
    /// The `bootargs` of a kernel module.
    pub bootargs: Option<&'a str>,
    /// The node it came from, for messages.
    pub node: &'a str,
    /// Who asked for it first: 0 for the top-level (dom0) set, n for the
    /// n-th domain accepted (index in `Boot::domains` plus one). Below 32.
    pub owner: u8,
    /// Every owner of the entry, bit n for owner n. [`Modules::push`] sets
    /// it; a module handed out with a domain carries only its own bit.
    pub owners: u32,
}

/// Owner `owner`'s bit in [`BootModule::owners`], if it has one.
pub fn owner_bit(owner: u8) -> Option<u32> {
    1u32.checked_shl(u32::from(owner))
}

/// Why the modules were refused; each names the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleError<'a> {
    /// The tree itself is malformed.
    Malformed(&'static str),
    /// `reg` is missing, has the wrong length, or its cells are unusable.
    BadReg(&'a str),
    /// A module of zero bytes.
    Empty(&'a str),
    /// A module whose end overflows the address space.
    Overflow(&'a str),
    /// Two modules share bytes.
    Overlap(&'a str, &'a str),
    /// More modules than [`MAX_MODULES`].
    TooMany(&'a str),
    /// A second module of a kind a domain takes once.
    Duplicate(&'a str),
}

impl fmt::Display for ModuleError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleError::Malformed(why) => write!(f, "device tree malformed: {}", why),
            ModuleError::BadReg(n) => write!(f, "/chosen/{}: bad or missing reg", n),
            ModuleError::Empty(n) => write!(f, "/chosen/{}: module is empty", n),
            ModuleError::Overflow(n) => {
                write!(f, "/chosen/{}: module runs past the address space", n)
            }
            ModuleError::Overlap(a, b) => {
                write!(f, "/chosen/{} overlaps /chosen/{}", b, a)
            }
            ModuleError::TooMany(n) => {
                write!(f, "/chosen/{}: more than {} boot modules", n, MAX_MODULES)
            }
            ModuleError::Duplicate(n) => {
                write!(f, "/chosen/{}: a second module of the same kind", n)
            }
        }
    }
}

/// The filled part of the module table.
#[derive(Clone, Debug, Default)]
pub struct Modules<'a> {
    entries: ArrayVec<BootModule<'a>, MAX_MODULES>,
}

impl<'a> Modules<'a> {
    /// Reads the multiboot modules directly under `/chosen` of `dtb` (the
    /// dom0-style set, owner 0; the domain nodes are [`crate::dom0less`]'s).
    pub fn from_fdt(dtb: &'a [u8]) -> Result<Self, ModuleError<'a>> {
        let fdt = Fdt::new(dtb).map_err(ModuleError::Malformed)?;
        let root = fdt.root();
        let mut out = Self::default();
        if let Some(chosen) = chosen(&root) {
            let (acells, scells) = cells(&[chosen, root]);
            out.push_top_level(&chosen, acells, scells)?;
        }
        Ok(out)
    }

    /// Adds the multiboot modules that are direct children of `chosen` as
    /// owner 0. On an error the entries already added stay: the caller
    /// rolls them back ([`Modules::remove_owner`]) or drops the table.
    pub(crate) fn push_top_level(
        &mut self,
        chosen: &Node<'a>,
        acells: u32,
        scells: u32,
    ) -> Result<(), ModuleError<'a>> {
        for node in chosen.children() {
            let Some(specific) = module_kind(&node) else {
                continue;
            };
            // A plain module takes the first free slot of kernel, ramdisk:
            // the order Xen's binding gives plain modules.
            let kind = match specific {
                Some(k) => k,
                None if !self.has_own(0, ModuleKind::Kernel) => ModuleKind::Kernel,
                None => ModuleKind::Ramdisk,
            };
            self.push(read_module(&node, kind, acells, scells, 0)?)?;
        }
        Ok(())
    }

    /// Adds a module after checking it against every one already held: no
    /// shared byte with another module (except an identical module of
    /// another owner, which is shared instead of added), and at most one
    /// module of each kind per owner. The entry's `owners` is set here.
    pub fn push(&mut self, m: BootModule<'a>) -> Result<(), ModuleError<'a>> {
        if m.range.size() == 0 {
            return Err(ModuleError::Empty(m.node));
        }
        let bit = owner_bit(m.owner).ok_or(ModuleError::Malformed("module owner above 31"))?;
        let mut shared = None;
        for (i, other) in self.entries.iter().enumerate() {
            let same_owner = other.owners & bit != 0;
            if other.range.start < m.range.end && m.range.start < other.range.end {
                if !same_owner && other.kind == m.kind && other.range == m.range {
                    shared = Some(i);
                    continue;
                }
                return Err(ModuleError::Overlap(other.node, m.node));
            }
            if same_owner && other.kind == m.kind {
                return Err(ModuleError::Duplicate(m.node));
            }
        }
        if let Some(entry) = shared.and_then(|i| self.entries.get_mut(i)) {
            entry.owners |= bit;
            return Ok(());
        }
        self.entries
            .try_push(BootModule { owners: bit, ..m })
            .map_err(|_| ModuleError::TooMany(m.node))
    }

    /// Drops `owner` from every entry, and the entries nobody else shares:
    /// how a refused domain's modules are rolled back.
    pub fn remove_owner(&mut self, owner: u8) {
        let Some(bit) = owner_bit(owner) else {
            return;
        };
        for e in self.entries.iter_mut() {
            e.owners &= !bit;
            if e.owner == owner && e.owners != 0 {
                // Only a bit below 32 is set, so this fits a u8.
                e.owner = u8::try_from(e.owners.trailing_zeros()).unwrap_or(0);
            }
        }
        self.entries.retain(|e| e.owners != 0);
    }

    /// Keeps the first `len` entries (no-op when `len` is not below the
    /// number held). Sharing recorded on the kept entries stays: to roll
    /// back one owner use [`Modules::remove_owner`].
    pub fn truncate(&mut self, len: usize) {
        self.entries.truncate(len);
    }

    /// The modules, in tree order.
    pub fn iter(&self) -> impl Iterator<Item = &BootModule<'a>> {
        self.entries.iter()
    }

    /// How many modules the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `owner` holds a module of `kind`.
    fn has_own(&self, owner: u8, kind: ModuleKind) -> bool {
        let bit = owner_bit(owner).unwrap_or(0);
        self.entries
            .iter()
            .any(|m| m.kind == kind && m.owners & bit != 0)
    }

    /// The first module of `kind`.
    pub fn first(&self, kind: ModuleKind) -> Option<&BootModule<'a>> {
        self.entries.iter().find(|m| m.kind == kind)
    }
}

pub(crate) fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// The first child of `root` named `chosen`.
pub(crate) fn chosen<'a>(root: &Node<'a>) -> Option<Node<'a>> {
    root.children().find(|c| c.name() == "chosen")
}

/// `#address-cells` and `#size-cells` from the first node of `chain` that
/// has a usable one of each, else the specification's 2 and 1.
pub(crate) fn cells(chain: &[Node<'_>]) -> (u32, u32) {
    let get = |name: &str| chain.iter().find_map(|n| n.property(name).and_then(be32));
    (
        get("#address-cells").unwrap_or(2),
        get("#size-cells").unwrap_or(1),
    )
}

/// Whether `node`'s `compatible` list holds `s`.
pub(crate) fn compatible(node: &Node<'_>, s: &str) -> bool {
    node.property("compatible")
        .is_some_and(|c| c.split(|&b| b == 0).any(|c| c == s.as_bytes()))
}

/// A multiboot module node's kind: `None` if `node` is not a module,
/// `Some(None)` for a plain `multiboot,module`.
pub(crate) fn module_kind(node: &Node<'_>) -> Option<Option<ModuleKind>> {
    let has = |s: &str| compatible(node, s);
    if has("multiboot,kernel") {
        Some(Some(ModuleKind::Kernel))
    } else if has("multiboot,ramdisk") {
        Some(Some(ModuleKind::Ramdisk))
    } else if has("multiboot,device-tree") {
        Some(Some(ModuleKind::DeviceTree))
    } else if has("multiboot,module") {
        Some(None)
    } else {
        None
    }
}

/// A property holding one string: NUL-terminated UTF-8 with no other NUL.
pub(crate) fn string(v: &[u8]) -> Option<&str> {
    let s = v.strip_suffix(&[0])?;
    if s.contains(&0) {
        return None;
    }
    core::str::from_utf8(s).ok()
}

/// The module described by `node`, its `reg` read with the given cells:
/// present, not empty, not running past the address space.
pub(crate) fn read_module<'a>(
    node: &Node<'a>,
    kind: ModuleKind,
    acells: u32,
    scells: u32,
    owner: u8,
) -> Result<BootModule<'a>, ModuleError<'a>> {
    let name = node.name();
    let (base, size) = reg(node, acells, scells).ok_or(ModuleError::BadReg(name))?;
    if size == 0 {
        return Err(ModuleError::Empty(name));
    }
    let end = base.checked_add(size).ok_or(ModuleError::Overflow(name))?;
    Ok(BootModule {
        kind,
        range: PhysRange { start: base, end },
        bootargs: node.property("bootargs").and_then(string),
        node: name,
        owner,
        owners: owner_bit(owner).unwrap_or(0),
    })
}

/// The single `reg` entry of a module node, as (base, size).
fn reg(node: &Node<'_>, acells: u32, scells: u32) -> Option<(u64, u64)> {
    if !(1..=2).contains(&acells) || !(1..=2).contains(&scells) {
        return None;
    }
    let v = node.property("reg")?;
    let (a, s) = (acells as usize * 4, scells as usize * 4);
    if v.len() != a + s {
        return None;
    }
    let num = |b: &[u8]| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    Some((num(v.get(..a)?), num(v.get(a..)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;
    use vm_fdt::FdtWriter;

    struct M<'s> {
        name: &'s str,
        compat: &'s [&'s str],
        reg: Vec<u32>,
        bootargs: Option<&'s str>,
    }

    fn tree(chosen_cells: Option<(u32, u32)>, mods: &[M]) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        if let Some((a, s)) = chosen_cells {
            w.property_u32("#address-cells", a).unwrap();
            w.property_u32("#size-cells", s).unwrap();
        }
        w.property_string("bootargs", "hv.x=1").unwrap();
        for m in mods {
            let n = w.begin_node(m.name).unwrap();
            w.property_string_list(
                "compatible",
                m.compat.iter().map(|s| s.to_string()).collect(),
            )
            .unwrap();
            w.property_array_u32("reg", &m.reg).unwrap();
            if let Some(b) = m.bootargs {
                w.property_string("bootargs", b).unwrap();
            }
            w.end_node(n).unwrap();
        }
        w.end_node(chosen).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    use std::string::ToString;

    fn m<'s>(name: &'s str, compat: &'s [&'s str], reg: &[u32]) -> M<'s> {
        M {
            name,
            compat,
            reg: reg.to_vec(),
            bootargs: None,
        }
    }

    #[test]
    fn qemu_guest_loader_nodes() {
        // What QEMU's guest-loader writes: 2+2 cells, /chosen without cells.
        let mut k = m(
            "module@0x41000000",
            &["multiboot,module", "multiboot,kernel"],
            &[0, 0x4100_0000, 0, 0x186a0],
        );
        k.bootargs = Some("console=ttyAMA0 a,b");
        let r = m(
            "module@0x49000000",
            &["multiboot,module", "multiboot,ramdisk"],
            &[0, 0x4900_0000, 0, 0x1000],
        );
        let dtb = tree(None, &[r, k]);
        let mods = Modules::from_fdt(&dtb).unwrap();
        assert_eq!(mods.len(), 2);
        let k = mods.first(ModuleKind::Kernel).unwrap();
        assert_eq!(k.range, PhysRange::from_base_size(0x4100_0000, 0x186a0));
        assert_eq!(k.bootargs, Some("console=ttyAMA0 a,b"));
        let r = mods.first(ModuleKind::Ramdisk).unwrap();
        assert_eq!(r.range.start, 0x4900_0000);
        assert_eq!(r.bootargs, None);
    }

    #[test]
    fn chosen_cells_win_and_plain_modules_fill_kernel_then_ramdisk() {
        let dtb = tree(
            Some((1, 1)),
            &[
                m("a", &["multiboot,module"], &[0x4100_0000, 0x1000]),
                m("b", &["multiboot,module"], &[0x4200_0000, 0x2000]),
            ],
        );
        let mods = Modules::from_fdt(&dtb).unwrap();
        assert_eq!(mods.first(ModuleKind::Kernel).unwrap().node, "a");
        assert_eq!(mods.first(ModuleKind::Ramdisk).unwrap().node, "b");
        assert_eq!(
            mods.first(ModuleKind::Ramdisk).unwrap().range,
            PhysRange::from_base_size(0x4200_0000, 0x2000)
        );
    }

    #[test]
    fn errors_name_the_node() {
        let k = &["multiboot,kernel"];
        let r = &["multiboot,ramdisk"];
        let cases: Vec<(Vec<M>, ModuleError)> = std::vec![
            (
                std::vec![m("z", k, &[0, 0x4000_0000, 0, 0])],
                ModuleError::Empty("z")
            ),
            (
                std::vec![m("short", k, &[0, 0x4000_0000, 0])],
                ModuleError::BadReg("short")
            ),
            (
                std::vec![m("o", k, &[0xffff_ffff, 0xffff_f000, 0, 0x2000])],
                ModuleError::Overflow("o"),
            ),
            (
                std::vec![
                    m("a", k, &[0, 0x4000_0000, 0, 0x2000]),
                    m("b", r, &[0, 0x4000_1000, 0, 0x10])
                ],
                ModuleError::Overlap("a", "b"),
            ),
            (
                std::vec![
                    m("a", k, &[0, 0x4000_0000, 0, 0x10]),
                    m("b", k, &[0, 0x5000_0000, 0, 0x10])
                ],
                ModuleError::Duplicate("b"),
            ),
        ];
        for (mods, want) in cases {
            let dtb = tree(None, &mods);
            assert_eq!(Modules::from_fdt(&dtb).unwrap_err(), want);
        }
        let bad = tree(Some((3, 1)), &[m("c", k, &[0, 0, 0x4000_0000, 0x10])]);
        assert_eq!(
            Modules::from_fdt(&bad).unwrap_err(),
            ModuleError::BadReg("c")
        );
    }

    #[test]
    fn table_is_bounded() {
        let mut t = Modules::default();
        for i in 0..MAX_MODULES {
            t.entries.push(BootModule {
                kind: ModuleKind::DeviceTree,
                range: PhysRange::from_base_size(0x1000 * i as u64, 0x10),
                bootargs: None,
                node: "x",
                owner: 0,
                owners: 1,
            });
        }
        let extra = BootModule {
            kind: ModuleKind::Kernel,
            range: PhysRange::from_base_size(0x1000_0000, 0x10),
            bootargs: None,
            node: "33rd",
            owner: 1,
            owners: 0,
        };
        assert_eq!(t.push(extra), Err(ModuleError::TooMany("33rd")));
        assert_eq!(t.len(), MAX_MODULES);
        t.truncate(3);
        assert_eq!(t.len(), 3);
        t.truncate(10);
        assert_eq!(t.len(), 3);
    }

    fn module(kind: ModuleKind, start: u64, size: u64, node: &str, owner: u8) -> BootModule<'_> {
        BootModule {
            kind,
            range: PhysRange::from_base_size(start, size),
            bootargs: None,
            node,
            owner,
            owners: 0,
        }
    }

    #[test]
    fn owners_share_identical_modules_and_roll_back() {
        use ModuleKind::{Kernel, Ramdisk};
        let mut t = Modules::default();
        t.push(module(Kernel, 0x4000_0000, 0x1000, "k0", 0))
            .unwrap();
        // Another owner may take a kernel too, and share an identical one.
        t.push(module(Kernel, 0x5000_0000, 0x1000, "k1", 1))
            .unwrap();
        t.push(module(Kernel, 0x5000_0000, 0x1000, "k2", 2))
            .unwrap();
        assert_eq!(t.len(), 2);
        let shared = t.iter().nth(1).unwrap();
        assert_eq!((shared.node, shared.owner, shared.owners), ("k1", 1, 0b110));
        // Within one owner a second kernel is a duplicate, even a shared one.
        assert_eq!(
            t.push(module(Kernel, 0x6000_0000, 0x10, "again", 2)),
            Err(ModuleError::Duplicate("again"))
        );
        assert_eq!(
            t.push(module(Kernel, 0x5000_0000, 0x1000, "same", 1)),
            Err(ModuleError::Overlap("k1", "same"))
        );
        // Identical bytes of another kind, or a partial overlap: refused.
        assert_eq!(
            t.push(module(Ramdisk, 0x5000_0000, 0x1000, "r3", 3)),
            Err(ModuleError::Overlap("k1", "r3"))
        );
        assert_eq!(
            t.push(module(Kernel, 0x5000_0800, 0x1000, "k3", 3)),
            Err(ModuleError::Overlap("k1", "k3"))
        );
        assert_eq!(
            t.push(module(Kernel, 0x1000, 0x10, "far", 40)),
            Err(ModuleError::Malformed("module owner above 31"))
        );
        // Rolling back the first owner hands the shared entry to the second.
        t.push(module(Ramdisk, 0x5100_0000, 0x1000, "r1", 1))
            .unwrap();
        t.remove_owner(1);
        assert_eq!(t.len(), 2);
        let kept = t.iter().nth(1).unwrap();
        assert_eq!((kept.node, kept.owner, kept.owners), ("k1", 2, 0b100));
        t.remove_owner(2);
        assert_eq!(t.iter().map(|m| m.node).collect::<Vec<_>>(), ["k0"]);
        t.remove_owner(200);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn unrelated_children_and_no_chosen() {
        let dtb = tree(None, &[m("x", &["vendor,thing"], &[0, 1, 0, 1])]);
        assert!(Modules::from_fdt(&dtb).unwrap().is_empty());
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.end_node(root).unwrap();
        let dtb = w.finish().unwrap();
        assert!(Modules::from_fdt(&dtb).unwrap().is_empty());
    }
}
