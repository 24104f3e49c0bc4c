//! A bounds-checked reader for flattened device trees (DTB, spec v17).
//!
//! [`Fdt::new`] checks the header and walks the whole structure block once
//! before it hands out a single node: every token in bounds, nodes properly
//! nested (at most [`MAX_DEPTH`] deep) and closed, every property's length
//! inside the block, every name NUL-terminated, every property name offset
//! inside the strings block. Walks after that still use checked access and
//! stop (never panic) if something is off. It accepts what real Linux trees
//! contain (property names longer than the spec's 31 characters, for one),
//! which is why it exists instead of a crate: see `docs/decisions.md`.

/// FDT magic.
const MAGIC: u32 = 0xd00d_feed;
/// Header size (version 17).
const HEADER: usize = 40;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Longest node or property name accepted (the spec allows 31; Linux trees
/// use a few more). The bound keeps every name scan and comparison short, so
/// no blob can make a walk quadratic through long names.
pub const MAX_NAME: usize = 256;
/// Most `/memreserve/` entries read.
const MAX_RESERVATIONS: usize = 256;

/// Why a blob is not a usable device tree.
pub type Error = &'static str;

fn be32(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be64(data: &[u8], off: usize) -> Option<u64> {
    Some((u64::from(be32(data, off)?) << 32) | u64::from(be32(data, off.checked_add(4)?)?))
}

/// Rounds up to the 4-byte token alignment.
fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// A NUL-terminated name of at most [`MAX_NAME`] bytes at `off` in `data`.
fn cstr(data: &[u8], off: usize) -> Option<(&[u8], usize)> {
    let rest = data.get(off..)?;
    let len = rest.iter().take(MAX_NAME + 1).position(|&b| b == 0)?;
    Some((&rest[..len], len + 1))
}

/// A validated device tree.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    rsvmap: &'a [u8],
}

/// One node.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    fdt: Fdt<'a>,
    /// Offset of the node's BEGIN_NODE token in the structure block.
    offset: usize,
}

/// One property.
#[derive(Clone, Copy, Debug)]
pub struct Property<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its raw value.
    pub value: &'a [u8],
}

/// A token read from the structure block.
enum Token<'a> {
    Begin {
        name: &'a [u8],
        next: usize,
    },
    End {
        next: usize,
    },
    Prop {
        nameoff: usize,
        value: &'a [u8],
        next: usize,
    },
    Nop {
        next: usize,
    },
    Finish,
}

impl<'a> Fdt<'a> {
    /// Checks `data` (exactly `totalsize` bytes or more) and returns the tree.
    pub fn new(data: &'a [u8]) -> Result<Self, Error> {
        if data.len() < HEADER {
            return Err("truncated header");
        }
        let h = |i: usize| be32(data, i * 4).unwrap_or(0) as usize;
        if h(0) as u32 != MAGIC {
            return Err("bad magic");
        }
        let total = h(1);
        if total < HEADER || total > data.len() {
            return Err("totalsize out of bounds");
        }
        let data = &data[..total];
        let (off_struct, off_strings, off_rsv, version, last_comp) = (h(2), h(3), h(4), h(5), h(6));
        let (size_strings, size_struct) = (h(8), h(9));
        if version < 16 || last_comp > 17 {
            return Err("unsupported version");
        }
        let block = |off: usize, size: usize| data.get(off..off.checked_add(size)?);
        let structs = block(off_struct, size_struct).ok_or("structure block out of bounds")?;
        let strings = block(off_strings, size_strings).ok_or("strings block out of bounds")?;
        if off_struct % 4 != 0 || off_rsv % 8 != 0 {
            return Err("misaligned block");
        }
        let rsvmap = data.get(off_rsv..).ok_or("reservation map out of bounds")?;
        // Every property name is a suffix of one run of the strings block:
        // one linear scan bounds them all.
        if strings.split(|&c| c == 0).any(|name| name.len() > MAX_NAME) {
            return Err("a property name is longer than 256 bytes");
        }
        let fdt = Fdt {
            structs,
            strings,
            rsvmap,
        };
        fdt.check_reservations()?;
        fdt.check_structure()?;
        Ok(fdt)
    }

    fn check_reservations(&self) -> Result<(), Error> {
        for i in 0..=MAX_RESERVATIONS {
            let off = i * 16;
            let (a, s) = (be64(self.rsvmap, off), be64(self.rsvmap, off + 8));
            match (a, s) {
                (Some(0), Some(0)) => return Ok(()),
                (Some(_), Some(_)) => {}
                _ => return Err("reservation map not terminated"),
            }
        }
        Err("too many memory reservations")
    }

    fn check_structure(&self) -> Result<(), Error> {
        let mut off = 0;
        let mut depth = 0usize;
        let mut seen_root = false;
        // Each token advances by at least 4 bytes: this loop is bounded.
        loop {
            match self.token(off).ok_or("structure token out of bounds")? {
                Token::Begin { name, next } => {
                    if depth == 0 && seen_root {
                        return Err("more than one root node");
                    }
                    if depth == 0 && !name.is_empty() {
                        return Err("root node has a name");
                    }
                    if core::str::from_utf8(name).is_err() {
                        return Err("node name is not UTF-8");
                    }
                    seen_root = true;
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err("nodes nested too deep");
                    }
                    off = next;
                }
                Token::End { next } => {
                    depth = depth.checked_sub(1).ok_or("unbalanced end of node")?;
                    off = next;
                }
                Token::Prop { nameoff, next, .. } => {
                    if depth == 0 {
                        return Err("property outside any node");
                    }
                    let (name, _) = cstr(self.strings, nameoff)
                        .ok_or("property name outside the strings block")?;
                    if core::str::from_utf8(name).is_err() {
                        return Err("property name is not UTF-8");
                    }
                    off = next;
                }
                Token::Nop { next } => off = next,
                Token::Finish => {
                    return if depth == 0 && seen_root {
                        Ok(())
                    } else {
                        Err("structure block ends inside a node")
                    };
                }
            }
        }
    }

    fn token(&self, off: usize) -> Option<Token<'a>> {
        let tag = be32(self.structs, off)?;
        let body = off.checked_add(4)?;
        Some(match tag {
            BEGIN_NODE => {
                let (name, len) = cstr(self.structs, body)?;
                Token::Begin {
                    name,
                    next: align4(body.checked_add(len)?)?,
                }
            }
            END_NODE => Token::End { next: body },
            PROP => {
                let len = be32(self.structs, body)? as usize;
                let nameoff = be32(self.structs, body.checked_add(4)?)? as usize;
                let start = body.checked_add(8)?;
                let value = self.structs.get(start..start.checked_add(len)?)?;
                Token::Prop {
                    nameoff,
                    value,
                    next: align4(start.checked_add(len)?)?,
                }
            }
            NOP => Token::Nop { next: body },
            END => Token::Finish,
            _ => return None,
        })
    }

    /// The root node.
    pub fn root(&self) -> Node<'a> {
        // The structure check found the root at the first BEGIN_NODE.
        let mut off = 0;
        while let Some(Token::Nop { next }) = self.token(off) {
            off = next;
        }
        Node {
            fdt: *self,
            offset: off,
        }
    }

    /// The `/memreserve/` entries as (address, size).
    pub fn reservations(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let map = self.rsvmap;
        (0..MAX_RESERVATIONS)
            .map(move |i| (be64(map, i * 16), be64(map, i * 16 + 8)))
            .map_while(|e| match e {
                (Some(a), Some(s)) if (a, s) != (0, 0) => Some((a, s)),
                _ => None,
            })
    }
}

impl<'a> Node<'a> {
    /// The node's name with its unit address (empty for the root).
    pub fn name(&self) -> &'a str {
        match self.fdt.token(self.offset) {
            Some(Token::Begin { name, .. }) => core::str::from_utf8(name).unwrap_or(""),
            _ => "",
        }
    }

    /// The name without the `@unit-address`.
    pub fn base_name(&self) -> &'a str {
        let n = self.name();
        n.split('@').next().unwrap_or(n)
    }

    /// Offset just after this node's BEGIN_NODE token.
    fn body(&self) -> Option<usize> {
        match self.fdt.token(self.offset)? {
            Token::Begin { next, .. } => Some(next),
            _ => None,
        }
    }

    /// The node's properties, in order.
    pub fn properties(&self) -> impl Iterator<Item = Property<'a>> + 'a {
        let fdt = self.fdt;
        let mut off = self.body();
        core::iter::from_fn(move || {
            loop {
                match fdt.token(off?)? {
                    Token::Prop {
                        nameoff,
                        value,
                        next,
                    } => {
                        off = Some(next);
                        let (name, _) = cstr(fdt.strings, nameoff)?;
                        return Some(Property {
                            name: core::str::from_utf8(name).ok()?,
                            value,
                        });
                    }
                    Token::Nop { next } => off = Some(next),
                    _ => return None,
                }
            }
        })
    }

    /// A property's value by name.
    pub fn property(&self, name: &str) -> Option<&'a [u8]> {
        self.properties().find(|p| p.name == name).map(|p| p.value)
    }

    /// The direct children, in order.
    pub fn children(&self) -> impl Iterator<Item = Node<'a>> + 'a {
        let fdt = self.fdt;
        let mut off = self.body();
        core::iter::from_fn(move || {
            let mut depth = 0usize;
            let mut found = None;
            // Skip properties, then yield each BEGIN_NODE at depth 0 and
            // skip over its subtree.
            loop {
                let cur = off?;
                match fdt.token(cur)? {
                    Token::Prop { next, .. } | Token::Nop { next } => off = Some(next),
                    Token::Begin { next, .. } => {
                        if depth == 0 {
                            found = Some(Node { fdt, offset: cur });
                        }
                        depth += 1;
                        off = Some(next);
                    }
                    Token::End { next } => {
                        if depth == 0 {
                            // End of the parent: no more children.
                            off = None;
                            return None;
                        }
                        depth -= 1;
                        off = Some(next);
                        if depth == 0 {
                            return found;
                        }
                    }
                    Token::Finish => {
                        off = None;
                        return None;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Builds a DTB by hand: root { a = "x"; child@1 { b = <1>; }; }.
    fn sample() -> Vec<u8> {
        let mut s = Vec::new();
        let strings = b"a\0b\0";
        let tok = |s: &mut Vec<u8>, v: u32| s.extend_from_slice(&v.to_be_bytes());
        tok(&mut s, BEGIN_NODE);
        s.extend_from_slice(&[0, 0, 0, 0]);
        tok(&mut s, PROP);
        tok(&mut s, 2);
        tok(&mut s, 0);
        s.extend_from_slice(b"x\0\0\0");
        tok(&mut s, BEGIN_NODE);
        s.extend_from_slice(b"child@1\0");
        tok(&mut s, PROP);
        tok(&mut s, 4);
        tok(&mut s, 2);
        tok(&mut s, 1);
        tok(&mut s, END_NODE);
        tok(&mut s, END_NODE);
        tok(&mut s, END);
        let rsv = HEADER + 8 - HEADER % 8;
        let off_struct = rsv + 32;
        let off_strings = off_struct + s.len();
        let total = off_strings + strings.len();
        let mut d = std::vec![0u8; total];
        for (i, v) in [
            MAGIC as usize,
            total,
            off_struct,
            off_strings,
            rsv,
            17,
            16,
            0,
            strings.len(),
            s.len(),
        ]
        .into_iter()
        .enumerate()
        {
            d[i * 4..i * 4 + 4].copy_from_slice(&(v as u32).to_be_bytes());
        }
        d[rsv..rsv + 8].copy_from_slice(&0x1000u64.to_be_bytes());
        d[rsv + 8..rsv + 16].copy_from_slice(&0x2000u64.to_be_bytes());
        d[off_struct..off_strings].copy_from_slice(&s);
        d[off_strings..].copy_from_slice(strings);
        d
    }

    #[test]
    fn walks_nodes_and_properties() {
        let d = sample();
        let fdt = Fdt::new(&d).unwrap();
        let root = fdt.root();
        assert_eq!(root.name(), "");
        assert_eq!(root.property("a"), Some(&b"x\0"[..]));
        let kids: Vec<_> = root.children().collect();
        assert_eq!(kids.len(), 1);
        assert_eq!((kids[0].name(), kids[0].base_name()), ("child@1", "child"));
        assert_eq!(kids[0].property("b"), Some(&[0, 0, 0, 1][..]));
        assert_eq!(kids[0].children().count(), 0);
        assert_eq!(fdt.reservations().collect::<Vec<_>>(), [(0x1000, 0x2000)]);
    }

    #[test]
    fn every_truncation_and_single_byte_corruption_is_an_error_or_a_clean_walk() {
        let d = sample();
        for len in 0..d.len() {
            assert!(Fdt::new(&d[..len]).is_err(), "truncated to {len} accepted");
        }
        for i in 0..d.len() {
            for bit in 0..8 {
                let mut c = d.clone();
                c[i] ^= 1 << bit;
                if let Ok(fdt) = Fdt::new(&c) {
                    fn walk(n: Node<'_>) -> usize {
                        n.properties().count() + n.children().map(walk).sum::<usize>()
                    }
                    let _ = walk(fdt.root());
                }
            }
        }
    }

    #[test]
    fn structural_errors() {
        let d = sample();
        let mut c = d.clone();
        c[0] = 0;
        assert_eq!(Fdt::new(&c).unwrap_err(), "bad magic");
        let mut c = d.clone();
        c[23] = 15; // version
        assert_eq!(Fdt::new(&c).unwrap_err(), "unsupported version");
    }
}
