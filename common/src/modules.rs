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
    /// dom0-style set; domain nodes are a later parser's business).
    pub fn from_fdt(dtb: &'a [u8]) -> Result<Self, ModuleError<'a>> {
        let fdt = Fdt::new(dtb).map_err(ModuleError::Malformed)?;
        let root = fdt.root();
        let Some(chosen) = root.children().find(|c| c.name() == "chosen") else {
            return Ok(Self::default());
        };
        let cells = |node: &Node<'a>, name: &str| node.property(name).and_then(be32);
        let acells = cells(&chosen, "#address-cells")
            .or_else(|| cells(&root, "#address-cells"))
            .unwrap_or(2);
        let scells = cells(&chosen, "#size-cells")
            .or_else(|| cells(&root, "#size-cells"))
            .unwrap_or(1);
        let mut out = Self::default();
        for node in chosen.children() {
            let Some(compat) = node.property("compatible") else {
                continue;
            };
            let has = |s: &str| compat.split(|&b| b == 0).any(|c| c == s.as_bytes());
            let specific = if has("multiboot,kernel") {
                Some(ModuleKind::Kernel)
            } else if has("multiboot,ramdisk") {
                Some(ModuleKind::Ramdisk)
            } else if has("multiboot,device-tree") {
                Some(ModuleKind::DeviceTree)
            } else {
                None
            };
            if specific.is_none() && !has("multiboot,module") {
                continue;
            }
            let name = node.name();
            let (base, size) = reg(&node, acells, scells).ok_or(ModuleError::BadReg(name))?;
            if size == 0 {
                return Err(ModuleError::Empty(name));
            }
            let end = base.checked_add(size).ok_or(ModuleError::Overflow(name))?;
            let range = PhysRange { start: base, end };
            let bootargs = node
                .property("bootargs")
                .and_then(|v| v.strip_suffix(&[0]))
                .and_then(|v| core::str::from_utf8(v).ok());
            // A plain module takes the first free slot of kernel, ramdisk:
            // the order Xen's binding gives plain modules.
            let kind = match specific {
                Some(k) => k,
                None if out.first(ModuleKind::Kernel).is_none() => ModuleKind::Kernel,
                None => ModuleKind::Ramdisk,
            };
            out.push(BootModule {
                kind,
                range,
                bootargs,
                node: name,
            })?;
        }
        Ok(out)
    }

    /// Adds a module after checking it against every one already held.
    pub fn push(&mut self, m: BootModule<'a>) -> Result<(), ModuleError<'a>> {
        if m.range.size() == 0 {
            return Err(ModuleError::Empty(m.node));
        }
        for other in self.entries.iter() {
            if other.range.start < m.range.end && m.range.start < other.range.end {
                return Err(ModuleError::Overlap(other.node, m.node));
            }
            if other.kind == m.kind {
                return Err(ModuleError::Duplicate(m.node));
            }
        }
        self.entries
            .try_push(m)
            .map_err(|_| ModuleError::TooMany(m.node))
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

    /// The first module of `kind`.
    pub fn first(&self, kind: ModuleKind) -> Option<&BootModule<'a>> {
        self.entries.iter().find(|m| m.kind == kind)
    }
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
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
            });
        }
        let extra = BootModule {
            kind: ModuleKind::Kernel,
            range: PhysRange::from_base_size(0x1000_0000, 0x10),
            bootargs: None,
            node: "33rd",
        };
        assert_eq!(t.push(extra), Err(ModuleError::TooMany("33rd")));
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
