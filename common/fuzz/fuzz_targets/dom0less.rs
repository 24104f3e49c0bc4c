//! The dom0less parser over hostile trees, in two modes. Input that starts
//! with the FDT magic is the tree itself (real and corrupted DTBs). Any
//! other input drives a generator that writes a well-formed tree of domain
//! nodes, modules, vCPU nodes, static event channels (paired across
//! domains by phandle, sometimes dangling, one-sided or reusing a port),
//! static shared memory (ids shared, mismatched or over modules),
//! `hv,xen-peers` and properties, mostly plausible and sometimes not, so
//! the fuzzer reaches the checks behind a valid header. Either way `parse`
//! must return (never panic or overflow), and what it accepts must hold
//! together: every channel's peer, when built, has the other end pointing
//! back; no shared region overlaps a module or another id's region.
#![no_main]

use common::dom0less::{Boot, MAX_DOMAINS, MAX_STATIC_PORT, check_invariants, parse};
use common::fdt::Fdt;
use common::memory::PhysRange;
use common::modules::Modules;
use libfuzzer_sys::fuzz_target;
use vm_fdt::FdtWriter;

/// The host RAM the modules must lie in.
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

fuzz_target!(|data: &[u8]| {
    if data.starts_with(&0xd00d_feedu32.to_be_bytes()) {
        check(data);
    } else if let Some(dtb) = generate(data) {
        check(&dtb);
    }
});

fn check(dtb: &[u8]) {
    match parse(dtb, &RAM) {
        Ok(boot) => invariants(dtb, &boot),
        Err(e) => {
            assert!(!e.to_string().contains('\n'));
            assert!(Modules::from_fdt(dtb).is_err());
        }
    }
}

/// The `xen,domain` children of `/chosen`, counted apart from the parser.
fn domain_nodes(dtb: &[u8]) -> usize {
    let Ok(fdt) = Fdt::new(dtb) else { return 0 };
    let Some(chosen) = fdt.root().children().find(|c| c.name() == "chosen") else {
        return 0;
    };
    chosen
        .children()
        .filter(|n| {
            n.property("compatible")
                .is_some_and(|c| c.split(|&b| b == 0).any(|s| s == b"xen,domain"))
        })
        .count()
}

fn invariants(dtb: &[u8], boot: &Boot<'_>) {
    check_invariants(boot, &RAM);
    let refused = boot.errors.len() + boot.errors_dropped as usize;
    assert_eq!(
        boot.domains.len() + refused,
        domain_nodes(dtb),
        "a domain node neither built nor refused"
    );
    // The dom0 set agrees with the dom0-only reader.
    let dom0_modules = boot.modules.iter().filter(|t| t.owners & 1 != 0).count();
    match (Modules::from_fdt(dtb), boot.dom0_error) {
        (Ok(m), None) => {
            assert_eq!(m.len(), dom0_modules);
            assert_eq!(
                boot.dom0.map(|(k, _)| k.range),
                m.first(common::modules::ModuleKind::Kernel)
                    .map(|k| k.range)
            );
        }
        (Err(a), Some(b)) => assert_eq!(a, b),
        (a, b) => panic!("dom0 readers disagree: {a:?} vs {b:?}"),
    }
}

/// Reads choices from the fuzz input; zeros once it runs out. A zero picks
/// the plausible choice everywhere, so short inputs write valid domains.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn below(&mut self, n: u8) -> u8 {
        self.u8() % n
    }
    /// True `in_8` times in 8; false on a zero.
    fn chance(&mut self, in_8: u8) -> bool {
        self.below(8) >= 8 - in_8
    }
}

/// Cells as a property value.
fn cells(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// A `(base, size)` in `a` and `s` cells (1 or 2; other counts get 2).
fn reg(base: u64, size: u64, a: u32, s: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for (x, n) in [(base, a), (size, s)] {
        if n == 1 {
            v.extend_from_slice(&(x as u32).to_be_bytes());
        } else {
            v.extend_from_slice(&x.to_be_bytes());
        }
    }
    v
}

/// Writes a tree from `data`; `None` if the writer refuses it.
fn generate(data: &[u8]) -> Option<Vec<u8>> {
    let mut inp = Input(data);
    let mut w = FdtWriter::new().ok()?;
    let root = w.begin_node("").ok()?;
    let root_cells = match inp.below(4) {
        0 => Some((2, 2)),
        1 => Some((2, 1)),
        2 => Some((1, 1)),
        _ => None,
    };
    if let Some((a, s)) = root_cells {
        w.property_u32("#address-cells", a).ok()?;
        w.property_u32("#size-cells", s).ok()?;
    }
    let chosen = w.begin_node("chosen").ok()?;
    let chosen_cells = if inp.chance(2) {
        let c = (1 + u32::from(inp.below(3)), 1 + u32::from(inp.below(2)));
        w.property_u32("#address-cells", c.0).ok()?;
        w.property_u32("#size-cells", c.1).ok()?;
        Some(c)
    } else {
        None
    };
    let parent_cells = chosen_cells.or(root_cells).unwrap_or((2, 1));
    // Dense trees give every domain three modules of its own first, so
    // the module table fills up.
    let dense = inp.chance(2);
    if inp.chance(4) {
        w.property_string("xen,xen-bootargs", "console=dtuart sched=null")
            .ok()?;
    }
    // Top-level (dom0) modules.
    for i in 0..inp.below(4) {
        let name = format!("module@{i}");
        module(&mut inp, &mut w, &name, parent_cells)?;
    }
    // Sometimes a dom0 channel, which domain 0's first channel may name.
    if inp.chance(1) {
        let e = w.begin_node("dom0-evtchn").ok()?;
        w.property_string("compatible", "xen,evtchn-v1").ok()?;
        w.property_phandle(DOM0_PHANDLE).ok()?;
        w.property_array_u32("xen,evtchn", &[1, phandle(0, 0)])
            .ok()?;
        w.end_node(e).ok()?;
    }
    let domains = if dense {
        11 + inp.below(8)
    } else {
        inp.below(MAX_DOMAINS as u8 + 6)
    };
    for d in 0..domains {
        domain(&mut inp, &mut w, d, domains, parent_cells, dense)?;
    }
    w.end_node(chosen).ok()?;
    w.end_node(root).ok()?;
    w.finish().ok()
}

/// The phandle of channel `c` of domain `d` (unique in the tree).
fn phandle(d: u8, c: u8) -> u32 {
    0x100 + u32::from(d) * 32 + u32::from(c)
}

/// The phandle of the dom0 channel under /chosen.
const DOM0_PHANDLE: u32 = 0x50;

/// Ids the shared regions use; the first three plausible, then an empty
/// one and a too long one.
const SHM_IDS: [&str; 5] = ["ring", "bulk", "log", "", "sixteen-bytes-id"];

/// The `hv,tmem-*` properties: each present half the time, mostly good
/// values, sometimes a bad one (weight 0, a bad cell count, a malformed
/// or repeated UUID).
fn write_tmem(inp: &mut Input, w: &mut FdtWriter) -> Option<()> {
    if inp.chance(4) {
        let weight = match inp.below(8) {
            0 => 0,
            1 => inp.u32(),
            n => u32::from(n),
        };
        w.property_u32("hv,tmem-weight", weight).ok()?;
    }
    for name in ["hv,tmem-ephemeral", "hv,tmem-persistent"] {
        if inp.chance(4) {
            match inp.below(4) {
                0 => w.property(name, &[1, 2, 3]).ok()?,
                1 => w.property(name, &cells(&[0, inp.u32()])).ok()?,
                _ => w.property_u32(name, inp.u32() >> inp.below(32)).ok()?,
            }
        }
    }
    if inp.chance(4) {
        if inp.chance(1) {
            w.property_u32("hv,tmem-compress", 1).ok()?;
        } else {
            w.property_null("hv,tmem-compress").ok()?;
        }
    }
    if inp.chance(4) {
        const UUIDS: [&str; 4] = [
            "5a7d0f1e-0000-4000-8000-000000000001",
            "5A7D0F1E-0000-4000-8000-000000000002",
            "5a7d0f1e-0000-4000-8000-00000000000",
            "5a7d0f1e+0000-4000-8000-000000000003",
        ];
        let n = inp.below(5);
        let list: Vec<String> = (0..n)
            .map(|_| UUIDS[usize::from(inp.below(4))].into())
            .collect();
        w.property_string_list("hv,tmem-shared", list).ok()?;
    }
    Some(())
}

/// Domain `d`'s static event channels: `n` nodes, channel `c` paired with
/// channel `c` of domain `d ^ 1` (ports 1 + c here, 100 + c there), each
/// with a phandle; the input sometimes bends a port, the pointer, or the
/// phandle. Then its shared regions and `hv,xen-peers`.
fn write_statics(
    inp: &mut Input<'_>,
    w: &mut FdtWriter,
    d: u8,
    domains: u8,
    cells: (u32, u32),
) -> Option<()> {
    let n = [1u8, 0, 2, 3, 17][usize::from(inp.below(5))];
    for c in 0..n {
        let e = w.begin_node(&format!("evtchn{c}")).ok()?;
        w.property_string("compatible", "xen,evtchn-v1").ok()?;
        let port = |d: u8| {
            if d % 2 == 0 {
                1 + u32::from(c)
            } else {
                100 + u32::from(c)
            }
        };
        let mut local = port(d);
        let mut target = phandle(d ^ 1, c);
        match inp.below(16) {
            8 => local = 0,
            9 => local = MAX_STATIC_PORT + 1,
            10 => local = 1,
            11 => target = phandle(d ^ 1, c.wrapping_add(1)),
            12 => target = phandle(d, c ^ 1),
            13 => {
                target = if inp.chance(4) {
                    DOM0_PHANDLE
                } else {
                    inp.u32()
                }
            }
            14 => target = phandle(inp.below(domains.max(1)), inp.below(4)),
            _ => {}
        }
        match inp.below(16) {
            15 => {}
            14 => w.property_u32("linux,phandle", phandle(d, c)).ok()?,
            _ => w.property_phandle(phandle(d, c)).ok()?,
        }
        let v: Vec<u32> = match inp.below(16) {
            15 => vec![local],
            14 => vec![local, target, 0],
            _ => vec![local, target],
        };
        w.property_array_u32("xen,evtchn", &v).ok()?;
        w.end_node(e).ok()?;
    }
    for k in 0..inp.below(4) {
        let s = w.begin_node(&format!("shm{k}")).ok()?;
        w.property_string("compatible", "xen,domain-shared-memory-v1")
            .ok()?;
        let id = usize::from(inp.below(8)) % SHM_IDS.len();
        if !inp.chance(1) || id >= 3 {
            w.property_string("xen,shm-id", SHM_IDS[id]).ok()?;
        }
        // Each id has its own host range, sometimes bent.
        let base = 0xa000_0000 + ((id as u64) << 24);
        let host = match inp.below(16) {
            12 => 0x4000_0000 + (u64::from(inp.below(8)) << 21),
            13 => base + 0x1000,
            14 => u64::from(inp.u32()) << 12,
            15 => base + 0x800,
            _ => base,
        };
        let size = match inp.below(16) {
            13 => 0,
            14 => 0x2000,
            15 => u64::from(inp.u32()),
            _ => 0x1000,
        };
        let guest = 0x1_0000_0000 + (u64::from(k) << 20) + if inp.chance(1) { 0x1000 } else { 0 };
        // In the domain's cells (1, else 2: a count of 3 gets 2 and is
        // refused).
        let num = |x: u64, n: u32| match n {
            1 => (x as u32).to_be_bytes().to_vec(),
            _ => x.to_be_bytes().to_vec(),
        };
        let v = [num(host, cells.0), num(guest, cells.0), num(size, cells.1)].concat();
        w.property("xen,shared-mem", &v).ok()?;
        match inp.below(8) {
            0 | 1 | 2 => {}
            3 | 4 => w.property_string("role", "borrower").ok()?,
            5 | 6 => w.property_string("role", "owner").ok()?,
            _ => w.property_string("role", "lender").ok()?,
        }
        w.end_node(s).ok()?;
    }
    if inp.chance(2) {
        let names: Vec<String> = (0..inp.below(4))
            .map(|_| match inp.below(8) {
                7 => String::new(),
                6 => format!("domU{d}"),
                _ => format!("domU{}", inp.below(domains.saturating_add(2))),
            })
            .collect();
        w.property_string_list("hv,xen-peers", names).ok()?;
    }
    Some(())
}

/// A module node whose `reg` uses `(a, s)` cells, usually a valid one.
fn module(inp: &mut Input<'_>, w: &mut FdtWriter, name: &str, (a, s): (u32, u32)) -> Option<()> {
    let n = w.begin_node(name).ok()?;
    let compat: &[&str] = match inp.below(5) {
        0 => &["multiboot,kernel", "multiboot,module"],
        1 => &["multiboot,ramdisk", "multiboot,module"],
        2 => &["multiboot,device-tree", "multiboot,module"],
        3 => &["multiboot,module"],
        _ => &["multiboot,kernel"],
    };
    w.property_string_list("compatible", compat.iter().map(|s| s.to_string()).collect())
        .ok()?;
    // Bases on a 1 MiB grid across and past the RAM, so modules collide,
    // coincide (and are shared) or fall outside.
    let base = match inp.below(8) {
        5 => u64::from(inp.u32()) << 12,
        6 => u64::MAX - 0xfff,
        7 => 0x1_0000_0000 + (u64::from(inp.u8()) << 20),
        3 | 4 => 0x4000_0000 + (u64::from(inp.u8()) << 21),
        _ => 0x4000_0000 + (u64::from(inp.below(8)) << 21),
    };
    let size = match inp.below(8) {
        5 => 0,
        6 => u64::from(inp.u32()),
        7 => 64 << 20,
        _ => u64::from(inp.below(4) + 1) << 19,
    };
    let (a, s) = if inp.chance(1) { (2, 2) } else { (a, s) };
    w.property("reg", &reg(base, size, a, s)).ok()?;
    if inp.chance(2) {
        w.property_string("bootargs", "console=hvc0").ok()?;
    }
    w.end_node(n).ok()
}

fn domain(
    inp: &mut Input<'_>,
    w: &mut FdtWriter,
    i: u8,
    domains: u8,
    parent: (u32, u32),
    dense: bool,
) -> Option<()> {
    let n = w.begin_node(&format!("domU{i}")).ok()?;
    let compat = if inp.chance(1) {
        "vendor,thing"
    } else {
        "xen,domain"
    };
    w.property_string("compatible", compat).ok()?;
    let own_cells = match inp.below(8) {
        1 | 2 => Some((1, 1)),
        3 | 4 => Some((2, 2)),
        5 => Some((3, 1)),
        _ => None,
    };
    if let Some((a, s)) = own_cells {
        w.property_u32("#address-cells", a).ok()?;
        w.property_u32("#size-cells", s).ok()?;
    }
    let kib = match inp.below(16) {
        12 => inp.u32(),
        13 => 4095,
        14 => 3 << 20,
        15 => (3 << 20) + 1,
        _ => u32::from(inp.u8()) * 1024 + 4096,
    };
    match inp.below(16) {
        12 => {}
        13 => w.property("memory", &cells(&[0, 0, kib])).ok()?,
        14 => w.property("memory", &cells(&[inp.u32(), kib])).ok()?,
        15 | 11 | 10 => w.property_u32("memory", kib).ok()?,
        _ => w.property("memory", &cells(&[0, kib])).ok()?,
    }
    let cpus = match inp.below(16) {
        14 => inp.u32(),
        15 => 0,
        _ => 1 + u32::from(inp.below(9)),
    };
    if !inp.chance(1) {
        w.property_u32("cpus", cpus).ok()?;
    }
    if inp.chance(2) {
        w.property_null("vpl011").ok()?;
    }
    if inp.chance(2) {
        w.property_u32("capabilities", u32::from(inp.below(9)))
            .ok()?;
    }
    if inp.chance(1) && inp.chance(1) {
        w.property_null("direct-map").ok()?;
    }
    let strings = [
        ("passthrough", ["enabled", "disabled", "maybe"]),
        ("xen,enhanced", ["no-xenstore", "disabled", ""]),
        ("hv,on-crash", ["destroy", "restart", "explode"]),
    ];
    for (name, values) in strings {
        if inp.chance(2) {
            let v = values[usize::from(inp.below(3))];
            if v.is_empty() {
                w.property_null(name).ok()?;
            } else {
                w.property_string(name, v).ok()?;
            }
        }
    }
    write_tmem(inp, w)?;
    let cells = own_cells.unwrap_or(parent);
    write_statics(inp, w, i, domains, cells)?;
    if dense {
        let kinds = [
            "multiboot,kernel",
            "multiboot,ramdisk",
            "multiboot,device-tree",
        ];
        for (j, kind) in (0u64..).zip(kinds) {
            let m = w.begin_node(&format!("m{j}")).ok()?;
            w.property_string_list("compatible", vec![kind.into(), "multiboot,module".into()])
                .ok()?;
            let base = 0x4000_0000 + ((u64::from(i) * 3 + j) << 22);
            w.property("reg", &reg(base, 0x1_0000, cells.0, cells.1))
                .ok()?;
            w.end_node(m).ok()?;
        }
    }
    let children = if dense { 0 } else { 1 + inp.below(6) };
    for c in 0..children {
        let name = format!("c{c}");
        match inp.below(10) {
            0..=4 => module(inp, w, &name, cells)?,
            5 | 6 => {
                let v = w.begin_node(&name).ok()?;
                w.property_string("compatible", "xen,vcpu").ok()?;
                if !inp.chance(1) {
                    w.property_u32("id", u32::from(inp.below(10))).ok()?;
                }
                let list: Vec<u32> = (0..=inp.below(3))
                    .map(|_| u32::from(inp.below(70)))
                    .collect();
                w.property_array_u32("hard-affinity", &list).ok()?;
                w.end_node(v).ok()?;
            }
            7 => {
                // A bare channel or region: refused.
                let e = w.begin_node(&name).ok()?;
                let compat = if inp.chance(4) {
                    "xen,evtchn-v1"
                } else {
                    "xen,domain-shared-memory-v1"
                };
                w.property_string("compatible", compat).ok()?;
                w.end_node(e).ok()?;
            }
            8 => {
                let e = w.begin_node(&name).ok()?;
                w.property_string("compatible", "vendor,gpu").ok()?;
                w.end_node(e).ok()?;
            }
            _ => {
                let e = w.begin_node(&name).ok()?;
                w.property_string("label", "ignored").ok()?;
                w.end_node(e).ok()?;
            }
        }
    }
    w.end_node(n).ok()
}
