//! Puts and gets per second of the tmem store on the host, with and
//! without LZ4 compression, over a page mix (`cargo bench -p common
//! --bench tmem`; `cargo run -- bench tmem` runs it with the in-guest
//! figures and the compression ratios).
//!
//! The mix: a third of the pages mostly zero (a header), a third
//! text-like (lower-case words), a third noise, as the test guest's
//! benchmark uses. A put stores into a pool that always has room (the
//! budget holds every page); a get is exclusive, so each timed get is
//! followed by an untimed put back.

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::tmem::{ClientConfig, PAGE, PoolKind, Tmem};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PAGES: usize = 256;

fn page(seed: u64, kind: usize) -> Box<[u8; PAGE]> {
    let mut p = Box::new([0u8; PAGE]);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for (i, b) in p.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = match kind % 3 {
            0 if i < 32 => x as u8,
            0 => 0,
            1 if x.is_multiple_of(7) => b' ',
            1 => b'a' + (x % 26) as u8,
            _ => x as u8,
        };
    }
    p
}

fn store(compress: bool) -> (Tmem, u32) {
    let mut t = Tmem::new(4 * PAGES * PAGE);
    t.configure(
        1,
        ClientConfig {
            compress,
            ..ClientConfig::default()
        },
    );
    let pool = t.new_pool(1, PoolKind::default(), [0; 2]).expect("pool");
    (t, pool)
}

fn bench(c: &mut Criterion) {
    let mix: Vec<Box<[u8; PAGE]>> = (0..PAGES).map(|i| page(i as u64, i)).collect();
    let mut g = c.benchmark_group("tmem");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for compress in [false, true] {
        let mode = if compress { "lz4" } else { "raw" };
        let (mut t, pool) = store(compress);
        let mut i = 0usize;
        g.bench_function(format!("put/{mode}"), |b| {
            b.iter(|| {
                i = (i + 1) % PAGES;
                t.put(1, pool, [1, 0, 0], i as u32, black_box(&mix[i]))
                    .expect("put")
            })
        });
        let mut out = [0u8; PAGE];
        g.bench_function(format!("get/{mode}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for k in 0..iters {
                    let i = (k as usize) % PAGES;
                    t.put(1, pool, [2, 0, 0], i as u32, &mix[i]).expect("put");
                    let t0 = Instant::now();
                    let found = t.get(1, pool, [2, 0, 0], i as u32, &mut out);
                    spent += t0.elapsed();
                    assert_eq!(found, Ok(true));
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
