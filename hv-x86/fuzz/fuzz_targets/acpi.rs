//! The ACPI parser over hostile firmware memory, in two modes chosen by the
//! first byte's low bit.
//!
//! Raw: the input is laid out as it is in the BIOS data area, the EBDA
//! (wherever the BDA's segment word says), the BIOS area at 0xe0000 and a
//! table area higher up, so every signature, checksum and length check meets
//! arbitrary bytes. Generated: the input drives a writer of an RSDP (in the
//! EBDA or the BIOS area, ACPI 1.0 or 2.0), an RSDT or XSDT, and MADT, DMAR
//! and other tables whose entries are mostly plausible and whose checksums
//! are right, so the fuzzer gets past the checksums to the entry checks;
//! runs of entries go past the capacities; some inputs then change bytes
//! anywhere, list odd root entries (0, the root itself, repeats,
//! unreadable) or more than `MAX_TABLES`, or spoil the root table.
//!
//! Either way `find_rsdp` and `parse` must return (never panic, overflow or
//! read outside the regions), and what they accept must hold together:
//! capacities respected, no CPU APIC id twice, overrides for ISA IRQs only,
//! every DRHD base and RMRR range page-aligned with base <= limit, device
//! scope paths within PCI's numbers, the summary three lines, every error
//! one line. An uncorrupted generated set must be accepted whole.
#![no_main]

use hv_x86::acpi::{
    self, Acpi, AcpiError, MAX_CPUS, MAX_DRHDS, MAX_IO_APICS, MAX_LOCAL_NMIS, MAX_OVERRIDES,
    MAX_PATH, MAX_RMRRS, MAX_TABLES, Rsdp,
};
use hv_x86::multiboot::Memory;
use libfuzzer_sys::fuzz_target;

const BDA: u64 = 0x400;
const EBDA_SEGMENT: u16 = 0x9f80;
const EBDA: u64 = 0x9_f800;
/// The generated EBDA: 2 KiB, so an RSDP anywhere in its first KiB fits.
const EBDA_LEN: usize = 0x800;
const BIOS: u64 = 0xe_0000;
const BIOS_LEN: usize = 0x2_0000;
const TABLES: u64 = 0x7fe_0000;
const UNREADABLE: u64 = 0x9000_0000;
const PAGE_MASK: u64 = 0xfff;

/// Firmware memory: separate regions, anything else unreadable.
#[derive(Default)]
struct Regions(Vec<(u64, Vec<u8>)>);

impl Regions {
    /// Adds `bytes` at `base` unless that would overlap a region.
    fn add(&mut self, base: u64, bytes: Vec<u8>) {
        let end = base + bytes.len() as u64;
        if !self
            .0
            .iter()
            .any(|(b, r)| base < b + r.len() as u64 && *b < end)
        {
            self.0.push((base, bytes));
        }
    }
}

impl Memory for Regions {
    fn read(&self, addr: u64, max: usize) -> Option<&[u8]> {
        self.0.iter().find_map(|(base, r)| {
            let off = usize::try_from(addr.checked_sub(*base)?).ok()?;
            let rest = r.get(off..).filter(|rest| !rest.is_empty())?;
            Some(&rest[..rest.len().min(max)])
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(rest);
    } else {
        generated(mode, rest);
    }
});

/// The input, consumed from the front; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head.to_vec()
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
}

fn raw(data: &[u8]) {
    match acpi::rsdp_from_bytes(data) {
        Ok(rsdp) => check_rsdp(&rsdp),
        Err(e) => check_error(&e),
    }
    let mut input = Input(data);
    let bda = input.take(0x100);
    let ebda_len = usize::from(input.u16()) % 0x401;
    let ebda = input.take(ebda_len);
    let bios_len = usize::from(input.u16()) * 2;
    let bios = input.take(bios_len);
    let tables = input.take(usize::MAX);
    let segment = bda
        .get(0x0e..0x10)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]));
    let mut mem = Regions::default();
    mem.add(BDA, bda);
    mem.add(BIOS, bios);
    mem.add(TABLES, tables);
    mem.add(u64::from(segment) << 4, ebda);
    // Raw bytes promise nothing: only the checks inside run apply.
    let _ = run(&mem);
}

/// find_rsdp then parse, checking what comes back.
fn run(mem: &Regions) -> Result<(Rsdp, Result<Acpi, AcpiError>), AcpiError> {
    let rsdp = acpi::find_rsdp(mem).inspect_err(check_error)?;
    check_rsdp(&rsdp);
    let parsed = acpi::parse(mem, &rsdp);
    match &parsed {
        Ok(a) => check(a),
        Err(e) => check_error(e),
    }
    Ok((rsdp, parsed))
}

fn check_error(e: &AcpiError) {
    let text = e.to_string();
    assert!(!text.is_empty() && !text.contains('\n'), "{text}");
}

fn check_rsdp(rsdp: &Rsdp) {
    if let Some(at) = rsdp.found_at {
        assert_eq!(at % 16, 0);
        assert!(
            (0xe_0000..0x10_0000).contains(&at) || at < 0x10_0400,
            "{at:#x}"
        );
    }
    assert!(rsdp.xsdt.is_none() || rsdp.revision >= 2);
    assert_ne!(rsdp.xsdt, Some(0));
    let _ = format!("{}", rsdp.oem_id);
}

/// What an accepted set of tables must satisfy.
fn check(a: &Acpi) {
    assert!(a.tables.len() <= MAX_TABLES);
    assert_eq!(a.first_rejection.is_some(), a.rejected > 0);
    if let Some(why) = &a.first_rejection {
        check_error(why);
    }
    if let Some(m) = &a.madt {
        assert!(m.local_apic_address != 0 && m.local_apic_address & PAGE_MASK == 0);
        assert!(m.cpus.len() <= MAX_CPUS && m.io_apics.len() <= MAX_IO_APICS);
        assert!(m.overrides.len() <= MAX_OVERRIDES && m.local_nmis.len() <= MAX_LOCAL_NMIS);
        assert!(m.cpus_dropped == 0 || m.cpus.len() == MAX_CPUS);
        assert!(m.io_apics_dropped == 0 || m.io_apics.len() == MAX_IO_APICS);
        for (i, c) in m.cpus.iter().enumerate() {
            assert!(m.cpus[..i].iter().all(|d| d.apic_id != c.apic_id));
            assert!(c.apic_id != u32::MAX && (c.x2apic || c.apic_id < 0xff));
        }
        for (i, o) in m.overrides.iter().enumerate() {
            assert!(o.irq < 16);
            assert!(m.overrides[..i].iter().all(|p| p.irq != o.irq));
        }
        assert!(m.io_apics.iter().all(|io| io.address != 0));
        assert!(m.local_nmis.iter().all(|n| n.lint <= 1));
    }
    if let Some(d) = &a.dmar {
        assert!((32..=64).contains(&d.host_address_width));
        assert!(d.drhds.len() <= MAX_DRHDS && d.rmrrs.len() <= MAX_RMRRS);
        for (i, u) in d.drhds.iter().enumerate() {
            assert!(u.register_base != 0 && u.register_base & PAGE_MASK == 0);
            assert!(u.register_pages.is_power_of_two() && u.register_pages <= 1 << 15);
            if u.include_pci_all {
                assert!(
                    d.drhds[..i]
                        .iter()
                        .all(|v| !(v.include_pci_all && v.segment == u.segment))
                );
            }
        }
        for r in d.rmrrs.iter() {
            assert!(r.base <= r.limit);
            assert_eq!(r.base & PAGE_MASK, 0);
            assert_eq!(r.limit & PAGE_MASK, PAGE_MASK);
        }
        let scopes = d
            .drhds
            .iter()
            .flat_map(|u| u.scopes.iter())
            .chain(d.rmrrs.iter().flat_map(|r| r.scopes.iter()))
            .chain(d.atsrs.iter().flat_map(|t| t.scopes.iter()));
        for s in scopes {
            assert!(!s.path.is_empty() && s.path.len() <= MAX_PATH);
            assert!(s.path.iter().all(|h| h.device < 32 && h.function < 8));
        }
        let incomplete = d.drhds_dropped + d.rmrrs_dropped + d.atsrs_dropped > 0;
        assert!(!(incomplete && d.complete()));
    }
    let summary = a.to_string();
    assert_eq!(summary.lines().count(), 3, "{summary}");
}

/// A table: 36-byte header, then `body`; length and checksum right.
fn sdt(signature: [u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = signature.to_vec();
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.extend_from_slice(&[revision, 0]);
    t.extend_from_slice(b"FUZZ  FUZZTABL");
    t.extend_from_slice(&[1, 0, 0, 0]);
    t.extend_from_slice(b"FUZZ");
    t.extend_from_slice(&[1, 0, 0, 0]);
    t.extend_from_slice(body);
    fix_checksum(&mut t, 9);
    t
}

/// Makes all of `t` sum to zero by setting the byte at `at`.
fn fix_checksum(t: &mut [u8], at: usize) {
    t[at] = 0;
    t[at] = t.iter().fold(0u8, |s, &c| s.wrapping_add(c)).wrapping_neg();
}

fn madt(g: &mut Input) -> Vec<u8> {
    let lapic = if g.u8() & 7 == 0 {
        g.u32()
    } else {
        0xfee0_0000
    };
    let mut body = lapic.to_le_bytes().to_vec();
    body.extend_from_slice(&u32::from(g.u8() & 1).to_le_bytes());
    for _ in 0..g.u8() % 80 {
        let mut e;
        match g.u8() % 9 {
            0 => {
                e = vec![0, 8, g.u8(), g.u8()];
                e.extend_from_slice(&u32::from(g.u8() % 4).to_le_bytes());
            }
            1 => {
                e = vec![9, 16, 0, 0];
                let id = if g.u8() == 0xff {
                    u32::MAX
                } else {
                    u32::from(g.u16())
                };
                e.extend_from_slice(&id.to_le_bytes());
                e.extend_from_slice(&u32::from(g.u8() % 4).to_le_bytes());
                e.extend_from_slice(&u32::from(g.u8()).to_le_bytes());
            }
            2 => {
                e = vec![1, 12, g.u8(), 0];
                let address = 0xfec0_0000 + (u32::from(g.u8()) << 12);
                e.extend_from_slice(&address.to_le_bytes());
                e.extend_from_slice(&(u32::from(g.u8()) * 24).to_le_bytes());
            }
            3 => {
                let bus = u8::from(g.u8() % 8 == 0);
                e = vec![2, 10, bus, g.u8() % 18];
                e.extend_from_slice(&u32::from(g.u8()).to_le_bytes());
                e.extend_from_slice(&u16::from(g.u8() & 0xf).to_le_bytes());
            }
            4 => {
                e = vec![4, 6, g.u8()];
                e.extend_from_slice(&u16::from(g.u8() & 0xf).to_le_bytes());
                e.push(g.u8() % 3);
            }
            5 => {
                e = vec![10, 12];
                e.extend_from_slice(&u16::from(g.u8() & 0xf).to_le_bytes());
                e.extend_from_slice(&g.u32().to_le_bytes());
                e.extend_from_slice(&[g.u8() % 3, 0, 0, 0]);
            }
            6 => {
                e = vec![5, 12, 0, 0];
                let address = (u64::from(g.u16()) << 12) | u64::from(g.u8() & 0x10);
                e.extend_from_slice(&address.to_le_bytes());
            }
            7 if g.u8() & 1 == 0 => {
                // A run of CPUs, past MAX_CPUS at times.
                let (first, n) = (u32::from(g.u16()), u32::from(g.u8()));
                e = Vec::new();
                for id in first..first + n {
                    e.extend_from_slice(&[9, 16, 0, 0]);
                    e.extend_from_slice(&id.to_le_bytes());
                    e.extend_from_slice(&[1, 0, 0, 0]);
                    e.extend_from_slice(&id.to_le_bytes());
                }
            }
            7 => {
                let len = 2 + g.u8() % 20;
                e = vec![11 + g.u8() % 50, len];
                e.resize(usize::from(len), 0);
            }
            _ => {
                let len = usize::from(g.u8() % 20);
                e = g.take(len);
            }
        }
        body.extend_from_slice(&e);
    }
    sdt(*b"APIC", 5, &body)
}

/// Device scopes, mostly well formed.
fn scopes(g: &mut Input) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..g.u8() % 10 {
        if g.u8() % 8 == 0 {
            let len = usize::from(g.u8() % 12);
            out.extend(g.take(len));
            continue;
        }
        let hops = 1 + usize::from(g.u8() % 6);
        out.extend_from_slice(&[g.u8() % 7, (6 + 2 * hops) as u8, 0, 0, g.u8(), g.u8()]);
        for _ in 0..hops {
            out.extend_from_slice(&[g.u8() % 34, g.u8() % 9]);
        }
    }
    out
}

/// A DMAR remapping structure: type, length, `fixed`, `rest`.
fn structure(kind: u16, fixed: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut s = kind.to_le_bytes().to_vec();
    s.extend_from_slice(&((4 + fixed.len() + rest.len()) as u16).to_le_bytes());
    s.extend_from_slice(fixed);
    s.extend_from_slice(rest);
    s
}

fn dmar(g: &mut Input) -> Vec<u8> {
    let width = if g.u8() & 7 == 0 {
        g.u8()
    } else {
        38 + g.u8() % 10
    };
    let mut body = vec![width, g.u8() & 7];
    body.extend_from_slice(&[0; 10]);
    for _ in 0..g.u8() % 12 {
        let segment = u16::from(g.u8() % 2).to_le_bytes();
        let s = match g.u8() % 6 {
            0 | 1 => {
                let base = if g.u8() & 7 == 0 {
                    g.u64()
                } else {
                    0xfed9_0000 + (u64::from(g.u8()) << 12)
                };
                let mut fixed = vec![g.u8() & 1, g.u8() & 0xf, segment[0], segment[1]];
                fixed.extend_from_slice(&base.to_le_bytes());
                structure(0, &fixed, &scopes(g))
            }
            2 => {
                let base = u64::from(g.u16()) << 12;
                let limit = if g.u8() & 7 == 0 {
                    g.u64()
                } else {
                    base + (u64::from(g.u8()) << 12) + 0xfff
                };
                let mut fixed = vec![0, 0, segment[0], segment[1]];
                fixed.extend_from_slice(&base.to_le_bytes());
                fixed.extend_from_slice(&limit.to_le_bytes());
                structure(1, &fixed, &scopes(g))
            }
            3 => structure(2, &[g.u8() & 1, 0, segment[0], segment[1]], &scopes(g)),
            4 if g.u8() & 1 == 0 => {
                // A run of units or regions, past their capacities at times.
                let (rmrrs, n) = (g.u8() & 1 == 1, u64::from(g.u8() % 32));
                let mut run = Vec::new();
                for i in 0..n {
                    let mut fixed = vec![0, 0, segment[0], segment[1]];
                    fixed.extend_from_slice(&((0x10_0000 + i) << 12).to_le_bytes());
                    if rmrrs {
                        fixed.extend_from_slice(&(((0x10_0000 + i) << 12) | 0xfff).to_le_bytes());
                    }
                    run.extend(structure(u16::from(rmrrs), &fixed, &[]));
                }
                run
            }
            4 => {
                let len = usize::from(g.u8() % 24);
                structure(3 + u16::from(g.u8() % 5), &[], &g.take(len))
            }
            _ => {
                let len = usize::from(g.u8() % 32);
                g.take(len)
            }
        };
        body.extend_from_slice(&s);
    }
    sdt(*b"DMAR", 1, &body)
}

fn rsdp(v2: bool, rsdt: u64, xsdt: u64) -> Vec<u8> {
    let mut r = b"RSD PTR \0FUZZ  ".to_vec();
    r.push(if v2 { 2 } else { 0 });
    r.extend_from_slice(&(rsdt as u32).to_le_bytes());
    // The 1.0 checksum first: the extended one covers its byte.
    fix_checksum(&mut r, 8);
    if v2 {
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&xsdt.to_le_bytes());
        r.extend_from_slice(&[0; 4]);
        fix_checksum(&mut r, 32);
    }
    r
}

fn generated(mode: u8, data: &[u8]) {
    let v2 = mode & 2 != 0;
    let placement = (mode >> 2) & 3;
    let corrupt = mode & 0x10 != 0;
    let odd_entries = mode & 0x20 != 0;
    let many = mode & 0x40 != 0;
    let root_trouble = mode & 0x80 != 0;
    let mut g = Input(data);

    let mut area = Vec::new();
    let mut addrs = Vec::new();
    let mut listed_madt = false;
    let count = g.u8() % 10;
    for _ in 0..count {
        let table = match g.u8() % 5 {
            0 | 1 => {
                listed_madt = true;
                madt(&mut g)
            }
            2 => dmar(&mut g),
            3 => {
                let len = usize::from(g.u8());
                sdt(*b"FACP", 3, &g.take(len))
            }
            4 if g.u8() % 4 == 0 => {
                // A MADT or DMAR too short for its fixed fields.
                let signature = if g.u8() & 1 == 0 { *b"APIC" } else { *b"DMAR" };
                let len = usize::from(g.u8() % 12);
                sdt(signature, 1, &g.take(len))
            }
            _ => {
                let signature = [g.u8(), g.u8(), g.u8(), g.u8()];
                let len = usize::from(g.u8() % 64);
                sdt(signature, 1, &g.take(len))
            }
        };
        addrs.push(TABLES + area.len() as u64);
        area.extend_from_slice(&table);
        area.resize(area.len().next_multiple_of(16), 0);
    }
    let root_at = TABLES + area.len() as u64;
    let mut entries = addrs.clone();
    if odd_entries {
        for _ in 0..1 + g.u8() % 4 {
            let odd = match g.u8() % 5 {
                0 => 0,
                1 => root_at,
                2 => addrs.first().copied().unwrap_or(UNREADABLE),
                3 => UNREADABLE,
                _ => root_at + 0x1_0000,
            };
            let at = usize::from(g.u8()) % (entries.len() + 1);
            entries.insert(at, odd);
        }
    }
    if many {
        while entries.len() < MAX_TABLES + 6 {
            entries.push(UNREADABLE + entries.len() as u64 * 0x1000);
        }
    }
    let root = if v2 {
        let body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
        sdt(*b"XSDT", 1, &body)
    } else {
        let body: Vec<u8> = entries
            .iter()
            .flat_map(|&a| (a as u32).to_le_bytes())
            .collect();
        sdt(*b"RSDT", 1, &body)
    };
    let mut root = root;
    let mut pointer = rsdp(v2, if v2 { 0 } else { root_at }, root_at);
    if root_trouble {
        match g.u8() % 4 {
            // Entries that are not whole pointers.
            0 => {
                let extra = 1 + usize::from(g.u8() % 7);
                root.resize(root.len() + extra, 0);
                let len = root.len() as u32;
                root[4..8].copy_from_slice(&len.to_le_bytes());
                fix_checksum(&mut root, 9);
            }
            // The other root's signature.
            1 => {
                root[0..4].copy_from_slice(if v2 { b"RSDT" } else { b"XSDT" });
                fix_checksum(&mut root, 9);
            }
            // A length below the header or past memory.
            2 => {
                root[4..8].copy_from_slice(&(g.u32() % 0x2_0000).to_le_bytes());
                fix_checksum(&mut root, 9);
            }
            // No root at all.
            _ => pointer = rsdp(v2, 0, 0),
        }
    }
    area.extend_from_slice(&root);

    let mut bda = vec![0u8; 0x100];
    bda[0x0e..0x10].copy_from_slice(&EBDA_SEGMENT.to_le_bytes());
    let mut ebda = vec![0u8; EBDA_LEN];
    let mut bios = vec![0u8; BIOS_LEN];
    let ebda_at = usize::from(g.u8() % 64) * 16;
    let bios_at = usize::from(g.u16() % 0x1ffd) * 16;
    if placement == 0 || placement == 2 {
        ebda[ebda_at..ebda_at + pointer.len()].copy_from_slice(&pointer);
    }
    if placement == 1 || placement == 2 {
        bios[bios_at..bios_at + pointer.len()].copy_from_slice(&pointer);
    }
    if corrupt {
        for _ in 0..1 + g.u8() % 4 {
            let value = g.u8();
            let target: &mut Vec<u8> = match g.u8() % 3 {
                0 => &mut ebda,
                1 => &mut bios,
                _ => &mut area,
            };
            let at = g.u32() as usize % target.len().max(1);
            if let Some(b) = target.get_mut(at) {
                *b = value;
            }
        }
    }
    let mut mem = Regions::default();
    mem.add(BDA, bda);
    mem.add(EBDA, ebda);
    mem.add(BIOS, bios);
    mem.add(TABLES, area);
    let outcome = run(&mem);

    // Oracles for what was generated untouched.
    if corrupt {
        return;
    }
    if placement == 3 {
        assert_eq!(
            outcome.err(),
            Some(AcpiError::NoRsdp),
            "no RSDP was written"
        );
        return;
    }
    let (rsdp, parsed) = outcome.expect("a well-formed RSDP is found");
    let expected_at = if placement == 1 {
        BIOS + bios_at as u64
    } else {
        EBDA + ebda_at as u64
    };
    assert_eq!(rsdp.found_at, Some(expected_at));
    if root_trouble {
        return;
    }
    let acpi = parsed.expect("a well-formed root table is accepted");
    if odd_entries || many {
        return;
    }
    assert_eq!(
        acpi.tables.len(),
        usize::from(count),
        "every header is sound"
    );
    assert_eq!(acpi.tables_ignored, 0);
    assert!(!listed_madt || acpi.madt.is_some() || acpi.rejected > 0);
}
