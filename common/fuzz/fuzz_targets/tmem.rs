//! common::tmem driven with arbitrary operation sequences from three
//! domains, checked against a model after every operation:
//! - the store's own bookkeeping ([`Tmem::check_invariants`]): no page or
//!   byte unaccounted, budget never exceeded;
//! - a persistent page, once put, reads back exactly until it is flushed,
//!   replaced or its pool destroyed: never dropped;
//! - a get from a private ephemeral pool is exclusive: the page is gone
//!   after it;
//! - no domain ever holds more persistent pages than its quota, and a
//!   put never takes it past the room it was given;
//! - once every domain is removed, nothing is left.
#![no_main]

use std::collections::BTreeMap;

use common::tmem::{ClientConfig, PAGE, PoolKind, Tmem};
use libfuzzer_sys::fuzz_target;

const UUIDS: [[u64; 2]; 2] = [[1, 1], [2, 2]];

fn page(seed: u8, kind: u8) -> [u8; PAGE] {
    let mut p = [0u8; PAGE];
    match kind % 3 {
        // Zeros with a header: compresses well.
        0 => p[..16].fill(seed),
        // A repeating pattern.
        1 => p
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = seed ^ (i % 61) as u8),
        // Noise: stays raw.
        _ => {
            let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for b in p.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
        }
    }
    p
}

fuzz_target!(|data: &[u8]| {
    let Some((&setup, data)) = data.split_first() else {
        return;
    };
    let mut t = Tmem::new((usize::from(setup % 16) + 1) * PAGE);
    t.set_compress_all(setup & 0x80 != 0);
    for d in 1..=3u16 {
        t.configure(
            d,
            ClientConfig {
                weight: u32::from(d),
                eph_cap: u64::from(setup >> 4 & 3) * u64::from(d),
                pers_quota: u64::from(d) * 2,
                compress: d == 2,
                frozen: false,
            },
        );
        t.authorize(d, UUIDS[usize::from(d) % 2], true);
    }
    // (dom, pool, oid, index) -> what a persistent put stored.
    let mut pers: BTreeMap<(u16, u32, u64, u32), [u8; PAGE]> = BTreeMap::new();
    let mut alive = [true; 4];
    for op in data.chunks_exact(4) {
        let dom = u16::from(op[0] % 3) + 1;
        if !alive[usize::from(dom)] {
            continue;
        }
        let pool = u32::from(op[1] % 5);
        let oid = [u64::from(op[2] % 4), 0, 0];
        let index = u32::from(op[3] % 8);
        let key = (dom, pool, oid[0], index);
        let persistent = t
            .pools_of(dom)
            .iter()
            .any(|(id, kind, _, _)| *id == pool && kind.persistent);
        match op[0] / 3 % 8 {
            0 => {
                let kind = PoolKind {
                    persistent: op[1] & 0x10 != 0,
                    shared: op[1] & 0x20 != 0,
                };
                let _ = t.new_pool(dom, kind, UUIDS[usize::from(op[2] % 2)]);
            }
            1 | 2 => {
                let p = page(op[3], op[2]);
                // Op 2 puts within a room (the memory a domain gave back).
                let room = if op[0] / 3 % 8 == 2 {
                    u64::from(op[2] >> 4)
                } else {
                    u64::MAX
                };
                let before = t.client_stats(dom).map_or(0, |s| s.pers_pages);
                let r = t.put_within(dom, pool, oid, index, &p, room);
                if persistent && r.is_ok() {
                    let after = t.client_stats(dom).map_or(0, |s| s.pers_pages);
                    assert!(
                        after <= before || after <= room,
                        "d{dom} past its room: {after} pages, room {room}"
                    );
                }
                if persistent {
                    match r {
                        Ok(()) => {
                            pers.insert(key, p);
                        }
                        // A failed put over a page removes the old one.
                        Err(_) => {
                            pers.remove(&key);
                        }
                    }
                }
            }
            3 | 4 => {
                let mut out = [0u8; PAGE];
                let private_eph = t
                    .pools_of(dom)
                    .iter()
                    .any(|(id, kind, _, _)| *id == pool && !kind.persistent && !kind.shared);
                if let Ok(true) = t.get(dom, pool, oid, index, &mut out) {
                    if let Some(want) = pers.get(&key) {
                        assert_eq!(&out[..], &want[..], "persistent page changed");
                    }
                    if private_eph {
                        assert!(
                            t.peek(dom, pool, oid, index).is_none(),
                            "a private get was not exclusive"
                        );
                    }
                }
            }
            5 => {
                if let Ok(true) = t.flush_page(dom, pool, oid, index) {
                    pers.remove(&key);
                }
            }
            6 => match op[3] % 3 {
                0 => {
                    if t.destroy_pool(dom, pool) {
                        pers.retain(|k, _| !(k.0 == dom && k.1 == pool));
                    }
                }
                1 => {
                    if let Ok(true) = t.flush_object(dom, pool, oid) {
                        pers.retain(|k, _| !(k.0 == dom && k.1 == pool && k.2 == oid[0]));
                    }
                }
                _ => {
                    t.flush_client(dom, u64::from(op[2]));
                }
            },
            _ => {
                if op[3] % 16 == 0 {
                    t.remove_client(dom);
                    alive[usize::from(dom)] = false;
                    pers.retain(|k, _| k.0 != dom);
                } else {
                    let frozen = op[3] & 1 == 1;
                    let cfg = ClientConfig {
                        frozen,
                        ..t.config(dom)
                    };
                    t.configure(dom, cfg);
                }
            }
        }
        t.check_invariants();
        for ((d, p, o, i), want) in &pers {
            let got = t.peek(*d, *p, [*o, 0, 0], *i);
            assert!(
                got.as_ref() == Some(want),
                "persistent page d{d} pool {p} {o}/{i} lost"
            );
        }
        for d in 1..=3u16 {
            if let Some(s) = t.client_stats(d) {
                assert!(
                    s.pers_pages <= t.config(d).pers_quota,
                    "d{d} over its quota"
                );
            }
        }
    }
    for d in 1..=3u16 {
        t.remove_client(d);
    }
    t.check_invariants();
    assert_eq!(t.stats().pages, 0);
    assert_eq!(t.stats().bytes, 0);
});
