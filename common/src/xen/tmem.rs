//! Xen's tmem ABI on top of [`crate::tmem`]: HYPERVISOR_tmem_op
//! (hypercall 38, `struct tmem_op`) for every domain, and
//! XEN_SYSCTL_tmem_op (sysctl 24 of hypercall 35) for a domain with
//! [`CAP_CONTROL`]. Numbers and layouts are Xen 4.12's, the last Xen with
//! tmem, so a guest written for it runs unchanged.
//!
//! Decided here:
//! - Pages move whole: `tmem_offset`, `pfn_offset` and `len` (left from
//!   the sub-page commands Xen dropped in 4.4) must be 0, or `len` one
//!   page; anything else is EINVAL.
//! - `cmfn` is a guest frame number of the caller's own RAM. A hole, a
//!   foreign (grant) mapping, a grant-table or shared-info frame, or a
//!   frame outside its RAM is EFAULT, as Xen answers a frame it cannot
//!   get.
//! - The sysctl checks XEN_SYSCTL_INTERFACE_VERSION 0x12 (Xen 4.12's;
//!   EACCES otherwise, Xen's answer to a mismatch). Save and restore
//!   (migration) are not offered: EOPNOTSUPP.
//! - SET_CLIENT_INFO carries weight, compression and freezing as in Xen.
//!   Xen 4.12 had no per-domain cap; ours is set by the same command with
//!   `arg` = 1, taking the ephemeral cap from `oid[0]` and the persistent
//!   quota from `oid[1]` (both in pages).

use super::abi::*;
use super::{CAP_CONTROL, DomId, Env, Xen, get_u32, get_u64, read_struct};
use crate::tmem::{self, ClientConfig, MAX_POOLS_PER_DOMAIN, PAGE, PoolKind};

/// Size of `struct tmem_op`.
pub const TMEM_OP_SIZE: usize = 56;
/// Commands of HYPERVISOR_tmem_op.
pub const TMEM_CONTROL: u32 = 0;
pub const TMEM_NEW_POOL: u32 = 1;
pub const TMEM_DESTROY_POOL: u32 = 2;
pub const TMEM_PUT_PAGE: u32 = 4;
pub const TMEM_GET_PAGE: u32 = 5;
pub const TMEM_FLUSH_PAGE: u32 = 6;
pub const TMEM_FLUSH_OBJECT: u32 = 7;
pub const TMEM_AUTH: u32 = 101;
pub const TMEM_RESTORE_NEW: u32 = 102;
/// TMEM_NEW_POOL flag bits.
pub const TMEM_POOL_PERSIST: u32 = 1;
pub const TMEM_POOL_SHARED: u32 = 2;
pub const TMEM_POOL_PRECOMPRESSED: u32 = 4;
pub const TMEM_POOL_PAGESIZE_SHIFT: u32 = 4;
pub const TMEM_POOL_PAGESIZE_MASK: u32 = 0xf;
pub const TMEM_POOL_VERSION_SHIFT: u32 = 24;
pub const TMEM_POOL_VERSION_MASK: u32 = 0xff;
pub const TMEM_POOL_RESERVED_BITS: u32 = 0x00ff_ff00;
/// The one tmem ABI version.
pub const TMEM_SPEC_VERSION: u32 = 1;

/// The tmem command of sysctl (hypercall [`HC_SYSCTL`]).
pub const XEN_SYSCTL_TMEM_OP: u32 = 24;
/// Xen 4.12's sysctl interface version (the last with tmem).
pub const XEN_SYSCTL_INTERFACE_VERSION_TMEM: u32 = 0x12;
/// Size of `struct xen_sysctl` as read for tmem: the header and
/// `struct xen_sysctl_tmem_op`.
pub const SYSCTL_TMEM_SIZE: usize = 8 + 56;
/// XEN_SYSCTL_TMEM_OP_* commands.
pub const TMEMC_THAW: u32 = 0;
pub const TMEMC_FREEZE: u32 = 1;
pub const TMEMC_FLUSH: u32 = 2;
pub const TMEMC_DESTROY: u32 = 3;
pub const TMEMC_LIST: u32 = 4;
pub const TMEMC_GET_CLIENT_INFO: u32 = 5;
pub const TMEMC_SET_CLIENT_INFO: u32 = 6;
pub const TMEMC_GET_POOLS: u32 = 7;
pub const TMEMC_QUERY_FREEABLE_MB: u32 = 8;
pub const TMEMC_SET_POOLS: u32 = 9;
pub const TMEMC_SAVE_BEGIN: u32 = 10;
pub const TMEMC_SET_AUTH: u32 = 11;
/// cli_id naming every client.
pub const TMEMC_ALL_CLIENTS: u32 = 0xffff;
/// `struct xen_tmem_client` and `struct xen_tmem_pool_info` sizes.
pub const TMEM_CLIENT_SIZE: usize = 20;
pub const TMEM_POOL_INFO_SIZE: usize = 32;
/// `xen_tmem_client.flags` bits.
pub const TMEM_CLIENT_FROZEN_BIT: u32 = 1;
pub const TMEM_CLIENT_COMPRESS_BIT: u32 = 2;
/// `xen_tmem_pool_info.flags` bits.
pub const TMEM_POOL_INFO_PERSIST: u32 = 1;
pub const TMEM_POOL_INFO_SHARED: u32 = 2;
pub const TMEM_POOL_INFO_AUTH: u32 = 4;

/// Xen's tmem errno values.
pub const EFROZEN: i32 = tmem::EFROZEN;
pub const EEMPTY: i32 = tmem::EEMPTY;

fn oid_at(b: &[u8], off: usize) -> tmem::Oid {
    [get_u64(b, off), get_u64(b, off + 8), get_u64(b, off + 16)]
}

/// HYPERVISOR_tmem_op(`arg`): Xen's return value (a pool id, 1 or 0) or
/// a positive errno.
pub fn op(xen: &mut Xen, env: &dyn Env, dom: DomId, arg: u64) -> Result<i64, i32> {
    let b: [u8; TMEM_OP_SIZE] =
        read_struct(env, arg).map_err(|e| xen.refuse(env, dom, e, "tmem_op"))?;
    let (cmd, pool) = (get_u32(&b, 0), get_u32(&b, 4));
    match cmd {
        TMEM_NEW_POOL => {
            let uuid = [get_u64(&b, 8), get_u64(&b, 16)];
            let flags = get_u32(&b, 24);
            let version = (flags >> TMEM_POOL_VERSION_SHIFT) & TMEM_POOL_VERSION_MASK;
            let pagebits = (flags >> TMEM_POOL_PAGESIZE_SHIFT) & TMEM_POOL_PAGESIZE_MASK;
            if version != TMEM_SPEC_VERSION
                || pagebits != 0
                || flags & TMEM_POOL_PRECOMPRESSED != 0
                || flags & TMEM_POOL_RESERVED_BITS != 0
            {
                return Err(xen.refuse(env, dom, EPERM, "tmem pool flags"));
            }
            let kind = PoolKind {
                persistent: flags & TMEM_POOL_PERSIST != 0,
                shared: flags & TMEM_POOL_SHARED != 0,
            };
            xen.tmem
                .new_pool(dom, kind, uuid)
                .map(i64::from)
                .map_err(|e| xen.refuse(env, dom, e.errno(), "tmem new pool"))
        }
        TMEM_DESTROY_POOL => Ok(i64::from(xen.tmem.destroy_pool(dom, pool))),
        TMEM_PUT_PAGE | TMEM_GET_PAGE | TMEM_FLUSH_PAGE | TMEM_FLUSH_OBJECT => {
            if !xen.tmem.has_pool(dom, pool) {
                return Err(xen.refuse(env, dom, ENODEV, "tmem pool"));
            }
            let oid = oid_at(&b, 8);
            let index = get_u32(&b, 32);
            match cmd {
                TMEM_FLUSH_PAGE => {
                    let r = xen_flush(xen, dom, pool, oid, Some(index));
                    return result(xen, env, dom, r);
                }
                TMEM_FLUSH_OBJECT => {
                    let r = xen_flush(xen, dom, pool, oid, None);
                    return result(xen, env, dom, r);
                }
                _ => {}
            }
            let (toff, poff, len) = (get_u32(&b, 36), get_u32(&b, 40), get_u32(&b, 44));
            if toff != 0 || poff != 0 || (len != 0 && len as usize != PAGE) {
                return Err(xen.refuse(env, dom, EINVAL, "tmem offsets"));
            }
            let gfn = get_u64(&b, 48);
            if !xen.domain(dom).is_some_and(|d| d.is_plain_ram(gfn)) {
                return Err(xen.refuse(env, dom, EFAULT, "tmem frame"));
            }
            let Some(page) = env.ram_page(dom, gfn) else {
                return Err(xen.refuse(env, dom, EFAULT, "tmem frame"));
            };
            let mut buf = [0u8; PAGE];
            if cmd == TMEM_PUT_PAGE {
                page.read(0, &mut buf);
                let room = xen.domain(dom).map_or(0, |d| d.given_back());
                let r = xen
                    .tmem
                    .put_within(dom, pool, oid, index, &buf, room)
                    .map(|()| 1);
                result(xen, env, dom, r)
            } else {
                match xen.tmem.get(dom, pool, oid, index, &mut buf) {
                    Ok(true) => {
                        page.write(0, &buf);
                        Ok(1)
                    }
                    Ok(false) => Ok(0),
                    Err(e) => result(xen, env, dom, Err(e)),
                }
            }
        }
        TMEM_CONTROL | TMEM_AUTH | TMEM_RESTORE_NEW => {
            Err(xen.refuse(env, dom, EOPNOTSUPP, "tmem control through tmem_op"))
        }
        _ => Err(xen.refuse(env, dom, ENOSYS, "tmem command")),
    }
}

fn xen_flush(
    xen: &mut Xen,
    dom: DomId,
    pool: u32,
    oid: tmem::Oid,
    index: Option<u32>,
) -> Result<i64, tmem::Error> {
    match index {
        Some(i) => xen.tmem.flush_page(dom, pool, oid, i),
        None => xen.tmem.flush_object(dom, pool, oid),
    }
    .map(i64::from)
}

/// EEMPTY is an answer, not a refusal: not logged.
fn result(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    r: Result<i64, tmem::Error>,
) -> Result<i64, i32> {
    r.map_err(|e| match e {
        tmem::Error::Empty => EEMPTY,
        e => xen.refuse(env, dom, e.errno(), "tmem page op"),
    })
}

/// HYPERVISOR_sysctl(`arg`) for XEN_SYSCTL_tmem_op; every other sysctl
/// is ENOSYS.
pub fn sysctl(xen: &mut Xen, env: &dyn Env, dom: DomId, arg: u64) -> Result<i64, i32> {
    let control = xen
        .domain(dom)
        .is_some_and(|d| d.cfg.caps & CAP_CONTROL != 0);
    if !control {
        return Err(xen.refuse(env, dom, EPERM, "sysctl without the control capability"));
    }
    let b: [u8; SYSCTL_TMEM_SIZE] =
        read_struct(env, arg).map_err(|e| xen.refuse(env, dom, e, "sysctl"))?;
    if get_u32(&b, 0) != XEN_SYSCTL_TMEM_OP {
        return Err(xen.refuse(env, dom, ENOSYS, "sysctl command"));
    }
    if get_u32(&b, 4) != XEN_SYSCTL_INTERFACE_VERSION_TMEM {
        return Err(xen.refuse(env, dom, EACCES, "sysctl interface version"));
    }
    let t = &b[8..];
    let (cmd, cli, len, arg32) = (get_u32(t, 0), get_u32(t, 8), get_u32(t, 12), get_u32(t, 16));
    let oid = oid_at(t, 24);
    let buf = get_u64(t, 48);
    let clients: alloc::vec::Vec<DomId> = if cli == TMEMC_ALL_CLIENTS {
        xen.tmem.clients().collect()
    } else {
        match DomId::try_from(cli) {
            Ok(d) if xen.domain(d).is_some() => alloc::vec![d],
            _ => return Err(xen.refuse(env, dom, ENOENT, "tmem client")),
        }
    };
    let one = || clients.first().copied().ok_or(ENOENT);
    match cmd {
        TMEMC_THAW | TMEMC_FREEZE => {
            for d in clients {
                let cfg = ClientConfig {
                    frozen: cmd == TMEMC_FREEZE,
                    ..xen.tmem.config(d)
                };
                xen.tmem.configure(d, cfg);
            }
            Ok(0)
        }
        TMEMC_FLUSH => {
            // `arg` KiB of ephemeral pages; answers the KiB flushed.
            let want = u64::from(arg32).div_ceil(4);
            let mut done = 0;
            for d in clients {
                done += xen.tmem.flush_client(d, want - done);
            }
            Ok((done * 4) as i64)
        }
        TMEMC_DESTROY => {
            for d in clients {
                xen.tmem.remove_client(d);
            }
            Ok(0)
        }
        TMEMC_LIST => {
            let text = list(&xen.tmem, &clients);
            let n = text.len().min(len as usize);
            env.write_virt(buf, &text.as_bytes()[..n])
                .map_err(|e| xen.refuse(env, dom, e, "tmem list buffer"))?;
            Ok(n as i64)
        }
        TMEMC_GET_CLIENT_INFO => {
            let d = one()?;
            let cfg = xen.tmem.config(d);
            let pools = xen.tmem.pools_of(d).len() as u32;
            let mut out = [0u8; TMEM_CLIENT_SIZE];
            let flags = (u32::from(cfg.frozen) * TMEM_CLIENT_FROZEN_BIT)
                | (u32::from(cfg.compress) * TMEM_CLIENT_COMPRESS_BIT);
            for (i, v) in [
                TMEM_SPEC_VERSION,
                MAX_POOLS_PER_DOMAIN as u32,
                pools,
                flags,
                cfg.weight,
            ]
            .into_iter()
            .enumerate()
            {
                put_u32(&mut out, i * 4, v);
            }
            env.write_virt(buf, &out)
                .map_err(|e| xen.refuse(env, dom, e, "tmem client buffer"))?;
            Ok(0)
        }
        TMEMC_SET_CLIENT_INFO => {
            let c: [u8; TMEM_CLIENT_SIZE] =
                read_struct(env, buf).map_err(|e| xen.refuse(env, dom, e, "tmem client buffer"))?;
            if get_u32(&c, 0) != TMEM_SPEC_VERSION {
                return Err(xen.refuse(env, dom, EOPNOTSUPP, "tmem client version"));
            }
            if get_u32(&c, 4) as usize > MAX_POOLS_PER_DOMAIN {
                return Err(xen.refuse(env, dom, ERANGE, "tmem client maxpools"));
            }
            let (flags, weight) = (get_u32(&c, 12), get_u32(&c, 16));
            for d in clients {
                let old = xen.tmem.config(d);
                let mut cfg = ClientConfig {
                    weight,
                    compress: flags & TMEM_CLIENT_COMPRESS_BIT != 0,
                    frozen: flags & TMEM_CLIENT_FROZEN_BIT != 0,
                    ..old
                };
                if arg32 == 1 {
                    cfg.eph_cap = oid[0];
                    cfg.pers_quota = oid[1];
                }
                xen.tmem.configure(d, cfg);
            }
            Ok(0)
        }
        TMEMC_GET_POOLS => {
            let d = one()?;
            let pools = xen.tmem.pools_of(d);
            let room = len as usize / TMEM_POOL_INFO_SIZE;
            for (i, &(id, kind, uuid, pages)) in pools.iter().take(room).enumerate() {
                let mut out = [0u8; TMEM_POOL_INFO_SIZE];
                let flags = (u32::from(kind.persistent) * TMEM_POOL_INFO_PERSIST)
                    | (u32::from(kind.shared) * TMEM_POOL_INFO_SHARED)
                    | (TMEM_SPEC_VERSION << TMEM_POOL_VERSION_SHIFT);
                put_u32(&mut out, 0, flags);
                put_u32(&mut out, 4, id);
                put_u64(&mut out, 8, pages);
                put_u64(&mut out, 16, uuid[0]);
                put_u64(&mut out, 24, uuid[1]);
                let at = buf.wrapping_add((i * TMEM_POOL_INFO_SIZE) as u64);
                env.write_virt(at, &out)
                    .map_err(|e| xen.refuse(env, dom, e, "tmem pool buffer"))?;
            }
            Ok(pools.len().min(room) as i64)
        }
        TMEMC_QUERY_FREEABLE_MB => {
            let pages: u64 = xen
                .tmem
                .clients()
                .filter_map(|d| xen.tmem.client_stats(d))
                .map(|s| s.eph_pages)
                .sum();
            Ok(((pages * PAGE as u64) >> 20) as i64)
        }
        TMEMC_SET_AUTH => {
            let d = one()?;
            let n = len as usize / TMEM_POOL_INFO_SIZE;
            for i in 0..n {
                let at = buf.wrapping_add((i * TMEM_POOL_INFO_SIZE) as u64);
                let p: [u8; TMEM_POOL_INFO_SIZE] = read_struct(env, at)
                    .map_err(|e| xen.refuse(env, dom, e, "tmem auth buffer"))?;
                let uuid = [get_u64(&p, 16), get_u64(&p, 24)];
                xen.tmem
                    .authorize(d, uuid, get_u32(&p, 0) & TMEM_POOL_INFO_AUTH != 0);
            }
            Ok(n as i64)
        }
        _ => Err(xen.refuse(env, dom, EOPNOTSUPP, "tmem control command")),
    }
}

/// One line per client and one for the store, `key=value` separated by
/// commas (the shape of Xen's LIST output, our own keys).
fn list(t: &tmem::Tmem, clients: &[DomId]) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::new();
    for d in clients {
        let cfg = t.config(*d);
        let st = t.client_stats(*d).unwrap_or_default();
        let _ = writeln!(
            s,
            "C=d{d},w={},cap={},quota={},compress={},frozen={},pools={},eph={},pers={},bytes={},puts={},good_puts={},gets={},found={},evicted={}",
            cfg.weight,
            cfg.eph_cap,
            cfg.pers_quota,
            u8::from(cfg.compress),
            u8::from(cfg.frozen),
            st.pools,
            st.eph_pages,
            st.pers_pages,
            st.bytes,
            st.puts,
            st.good_puts,
            st.gets,
            st.found_gets,
            st.evicted
        );
    }
    let g = t.stats();
    let _ = writeln!(
        s,
        "G=pages={},compressed={},bytes={},raw_bytes={},evictions={},budget={}",
        g.pages,
        g.compressed_pages,
        g.bytes,
        g.raw_bytes,
        g.evictions,
        t.budget()
    );
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testenv::*;
    use super::super::{Reply, hypercall};
    use super::*;

    const D1: DomId = 1;
    const D2: DomId = 2;
    /// Frame 0 holds the op structures, frames 1.. the data pages.
    const OP: u64 = RAM_BASE_GFN << 12;

    fn call(xen: &mut Xen, env: &TestEnv, dom: DomId, nr: u64, arg: u64) -> i64 {
        env.current.set(dom);
        let r: Reply = hypercall(xen, env, dom, 0, nr, [arg, 0, 0, 0, 0]);
        r.ret
    }

    fn new_pool(xen: &mut Xen, env: &TestEnv, dom: DomId, flags: u32, uuid: [u64; 2]) -> i64 {
        env.current.set(dom);
        let mut b = [0u8; TMEM_OP_SIZE];
        put_u32(&mut b, 0, TMEM_NEW_POOL);
        put_u64(&mut b, 8, uuid[0]);
        put_u64(&mut b, 16, uuid[1]);
        put_u32(&mut b, 24, flags);
        env.poke(OP, &b);
        call(xen, env, dom, HC_TMEM_OP, OP)
    }

    #[allow(clippy::too_many_arguments)]
    fn page_op(
        xen: &mut Xen,
        env: &TestEnv,
        dom: DomId,
        cmd: u32,
        pool: i32,
        oid: u64,
        index: u32,
        gfn: u64,
        offsets: [u32; 3],
    ) -> i64 {
        env.current.set(dom);
        let mut b = [0u8; TMEM_OP_SIZE];
        put_u32(&mut b, 0, cmd);
        put_u32(&mut b, 4, pool as u32);
        put_u64(&mut b, 8, oid);
        put_u32(&mut b, 32, index);
        for (i, v) in offsets.iter().enumerate() {
            put_u32(&mut b, 36 + i * 4, *v);
        }
        put_u64(&mut b, 48, gfn);
        env.poke(OP, &b);
        call(xen, env, dom, HC_TMEM_OP, OP)
    }

    fn put(xen: &mut Xen, env: &TestEnv, dom: DomId, pool: i32, index: u32, frame: u64) -> i64 {
        page_op(
            xen,
            env,
            dom,
            TMEM_PUT_PAGE,
            pool,
            7,
            index,
            RAM_BASE_GFN + frame,
            [0; 3],
        )
    }

    fn get(xen: &mut Xen, env: &TestEnv, dom: DomId, pool: i32, index: u32, frame: u64) -> i64 {
        page_op(
            xen,
            env,
            dom,
            TMEM_GET_PAGE,
            pool,
            7,
            index,
            RAM_BASE_GFN + frame,
            [0; 3],
        )
    }

    fn fill(env: &TestEnv, dom: DomId, frame: u64, byte: u8) {
        env.current.set(dom);
        env.poke(TestEnv::addr(frame, 0), &[byte; PAGE]);
    }

    fn frame(env: &TestEnv, dom: DomId, frame: u64) -> alloc::vec::Vec<u8> {
        env.current.set(dom);
        env.peek(TestEnv::addr(frame, 0), PAGE)
    }

    const V1: u32 = TMEM_SPEC_VERSION << TMEM_POOL_VERSION_SHIFT;

    fn setup() -> (TestEnv, Xen) {
        let env = TestEnv::new(&[D1, D2], 8);
        let mut xen = env.xen();
        xen.tmem = tmem::Tmem::new(16 * PAGE);
        (env, xen)
    }

    #[test]
    fn put_and_get_through_the_hypercall() {
        let (env, mut xen) = setup();
        assert_eq!(new_pool(&mut xen, &env, D1, V1, [0; 2]), 0);
        fill(&env, D1, 1, 0xab);
        assert_eq!(put(&mut xen, &env, D1, 0, 3, 1), 1);
        assert_eq!(get(&mut xen, &env, D1, 0, 4, 2), 0);
        assert_eq!(get(&mut xen, &env, D1, 0, 3, 2), 1);
        assert_eq!(frame(&env, D1, 2), [0xab; PAGE]);
        // Private ephemeral: exclusive, and the pool is now empty.
        assert_eq!(get(&mut xen, &env, D1, 0, 3, 2), -i64::from(EEMPTY));
        // Flushes answer 1 or 0.
        assert_eq!(put(&mut xen, &env, D1, 0, 3, 1), 1);
        let flush = |xen: &mut Xen, cmd, index| page_op(xen, &env, D1, cmd, 0, 7, index, 0, [0; 3]);
        assert_eq!(flush(&mut xen, TMEM_FLUSH_PAGE, 3), 1);
        assert_eq!(flush(&mut xen, TMEM_FLUSH_PAGE, 3), 0);
        assert_eq!(put(&mut xen, &env, D1, 0, 5, 1), 1);
        assert_eq!(flush(&mut xen, TMEM_FLUSH_OBJECT, 0), 1);
        assert_eq!(flush(&mut xen, TMEM_FLUSH_OBJECT, 0), 0);
        // Destroy answers 1, then 0.
        env.poke(OP, &TMEM_DESTROY_POOL.to_le_bytes());
        env.poke(OP + 4, &0u32.to_le_bytes());
        assert_eq!(call(&mut xen, &env, D1, HC_TMEM_OP, OP), 1);
        assert_eq!(call(&mut xen, &env, D1, HC_TMEM_OP, OP), 0);
        xen.tmem.check_invariants();
    }

    #[test]
    fn every_bad_field_gets_xens_errno() {
        let (env, mut xen) = setup();
        let e = |v: i32| -i64::from(v);
        // Pool flags: version, page size, precompressed, reserved bits,
        // shared and persistent together.
        for flags in [
            0,
            V1 | (1 << TMEM_POOL_PAGESIZE_SHIFT),
            V1 | TMEM_POOL_PRECOMPRESSED,
            V1 | 0x100,
            V1 | TMEM_POOL_SHARED | TMEM_POOL_PERSIST,
        ] {
            assert_eq!(
                new_pool(&mut xen, &env, D1, flags, [1, 2]),
                e(EPERM),
                "{flags:#x}"
            );
        }
        // Shared without authorization.
        assert_eq!(
            new_pool(&mut xen, &env, D1, V1 | TMEM_POOL_SHARED, [1, 2]),
            e(EPERM)
        );
        assert_eq!(new_pool(&mut xen, &env, D1, V1, [0; 2]), 0);
        // Pools that do not exist.
        for pool in [1, 16, -1, i32::MIN] {
            assert_eq!(put(&mut xen, &env, D1, pool, 0, 1), e(ENODEV), "{pool}");
        }
        // Another domain's pool id is not ours.
        assert_eq!(put(&mut xen, &env, D2, 0, 0, 1), e(ENODEV));
        // Offsets and lengths.
        let put_at =
            |xen: &mut Xen, gfn, off| page_op(xen, &env, D1, TMEM_PUT_PAGE, 0, 7, 0, gfn, off);
        for off in [
            [1, 0, 0],
            [0, 4096, 0],
            [0, 0, 1],
            [0, 0, 4097],
            [u32::MAX; 3],
        ] {
            assert_eq!(
                put_at(&mut xen, RAM_BASE_GFN + 1, off),
                e(EINVAL),
                "{off:?}"
            );
        }
        let r = put_at(&mut xen, RAM_BASE_GFN + 1, [0, 0, 4096]);
        assert_eq!(r, 1);
        // Frames that are not the caller's plain RAM.
        for gfn in [0, RAM_BASE_GFN - 1, RAM_BASE_GFN + 8, GRANT_GFN, u64::MAX] {
            let r = page_op(&mut xen, &env, D1, TMEM_PUT_PAGE, 0, 7, 0, gfn, [0; 3]);
            assert_eq!(r, e(EFAULT), "{gfn:#x}");
            let r = page_op(&mut xen, &env, D1, TMEM_GET_PAGE, 0, 7, 0, gfn, [0; 3]);
            assert_eq!(r, e(EFAULT), "{gfn:#x}");
        }
        // An op structure the caller cannot read.
        assert_eq!(call(&mut xen, &env, D1, HC_TMEM_OP, 0x10), e(EFAULT));
        assert_eq!(
            call(&mut xen, &env, D1, HC_TMEM_OP, u64::MAX - 3),
            e(EFAULT)
        );
        // Commands: removed ones and unknown ones, control through tmem_op.
        for (cmd, want) in [
            (3, ENOSYS),
            (8, ENOSYS),
            (9, ENOSYS),
            (10, ENOSYS),
            (u32::MAX, ENOSYS),
            (TMEM_CONTROL, EOPNOTSUPP),
            (TMEM_AUTH, EOPNOTSUPP),
            (TMEM_RESTORE_NEW, EOPNOTSUPP),
        ] {
            env.current.set(D1);
            env.poke(OP, &cmd.to_le_bytes());
            assert_eq!(call(&mut xen, &env, D1, HC_TMEM_OP, OP), e(want), "{cmd}");
        }
        // Budget 0: tmem is off, every put is ENOMEM.
        xen.tmem = tmem::Tmem::new(0);
        assert_eq!(new_pool(&mut xen, &env, D1, V1, [0; 2]), 0);
        assert_eq!(put(&mut xen, &env, D1, 0, 0, 1), e(ENOMEM));
        assert!(env.logs.borrow().iter().any(|l| l.contains("tmem")));
    }

    fn sysctl_op(
        cmd: u32,
        cli: u32,
        len: u32,
        arg: u32,
        oid: [u64; 3],
        buf: u64,
    ) -> [u8; SYSCTL_TMEM_SIZE] {
        let mut b = [0u8; SYSCTL_TMEM_SIZE];
        put_u32(&mut b, 0, XEN_SYSCTL_TMEM_OP);
        put_u32(&mut b, 4, XEN_SYSCTL_INTERFACE_VERSION_TMEM);
        put_u32(&mut b, 8, cmd);
        put_u32(&mut b, 16, cli);
        put_u32(&mut b, 20, len);
        put_u32(&mut b, 24, arg);
        for (i, w) in oid.iter().enumerate() {
            put_u64(&mut b, 32 + i * 8, *w);
        }
        put_u64(&mut b, 56, buf);
        b
    }

    fn sysctl_call(xen: &mut Xen, env: &TestEnv, dom: DomId, b: &[u8]) -> i64 {
        env.current.set(dom);
        env.poke(OP, b);
        call(xen, env, dom, HC_SYSCTL, OP)
    }

    #[test]
    fn the_control_domain_authorizes_freezes_lists_and_sets_quotas() {
        let (env, mut xen) = setup();
        let e = |v: i32| -i64::from(v);
        let buf = TestEnv::addr(7, 0);
        // Only with the control capability.
        let auth = sysctl_op(TMEMC_SET_AUTH, u32::from(D2), 32, 0, [0; 3], buf);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &auth), e(EPERM));
        xen.domain_mut(D1).unwrap().cfg.caps |= CAP_CONTROL;
        let mut bad = auth;
        put_u32(&mut bad, 4, 0x15u32);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &bad), e(EACCES));
        let mut other = auth;
        put_u32(&mut other, 0, 1u32);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &other), e(ENOSYS));
        // Authorize both domains for one uuid; they then share a pool.
        let mut info = [0u8; TMEM_POOL_INFO_SIZE];
        put_u32(&mut info, 0, TMEM_POOL_INFO_AUTH);
        put_u64(&mut info, 16, 5u64);
        put_u64(&mut info, 24, 6u64);
        env.current.set(D1);
        env.poke(buf, &info);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &auth), 1);
        let auth1 = sysctl_op(TMEMC_SET_AUTH, u32::from(D1), 32, 0, [0; 3], buf);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &auth1), 1);
        let shared = V1 | TMEM_POOL_SHARED;
        assert_eq!(new_pool(&mut xen, &env, D1, shared, [5, 6]), 0);
        assert_eq!(new_pool(&mut xen, &env, D2, shared, [5, 6]), 0);
        fill(&env, D1, 1, 0x5a);
        assert_eq!(put(&mut xen, &env, D1, 0, 0, 1), 1);
        assert_eq!(get(&mut xen, &env, D2, 0, 0, 2), 1);
        assert_eq!(frame(&env, D2, 2), [0x5a; PAGE]);
        // Freeze stops puts (EFROZEN), thaw lets them through again.
        let freeze = sysctl_op(TMEMC_FREEZE, u32::from(D2), 0, 0, [0; 3], 0);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &freeze), 0);
        assert_eq!(put(&mut xen, &env, D2, 0, 1, 1), e(EFROZEN));
        let thaw = sysctl_op(TMEMC_THAW, TMEMC_ALL_CLIENTS, 0, 0, [0; 3], 0);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &thaw), 0);
        assert_eq!(put(&mut xen, &env, D2, 0, 1, 1), 1);
        // A persistent quota through SET_CLIENT_INFO with arg 1.
        assert_eq!(
            new_pool(&mut xen, &env, D2, V1 | TMEM_POOL_PERSIST, [0; 2]),
            1
        );
        assert_eq!(put(&mut xen, &env, D2, 1, 0, 1), e(ENOMEM));
        let mut client = [0u8; TMEM_CLIENT_SIZE];
        put_u32(&mut client, 0, TMEM_SPEC_VERSION);
        put_u32(&mut client, 12, TMEM_CLIENT_COMPRESS_BIT);
        put_u32(&mut client, 16, 3u32);
        env.current.set(D1);
        env.poke(buf, &client);
        let set = sysctl_op(TMEMC_SET_CLIENT_INFO, u32::from(D2), 0, 1, [0, 2, 0], buf);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &set), 0);
        // It also needs memory given back to hold them.
        assert_eq!(put(&mut xen, &env, D2, 1, 0, 1), e(ENOMEM));
        assert_eq!(
            reservation(&mut xen, &env, D2, XENMEM_DECREASE_RESERVATION, &[6, 7]),
            2
        );
        assert_eq!(put(&mut xen, &env, D2, 1, 0, 1), 1);
        let c = xen.tmem.config(D2);
        assert_eq!((c.weight, c.compress, c.pers_quota), (3, true, 2));
        // Bad client versions and pool counts.
        put_u32(&mut client, 0, 2u32);
        env.current.set(D1);
        env.poke(buf, &client);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &set), e(EOPNOTSUPP));
        put_u32(&mut client, 0, TMEM_SPEC_VERSION);
        put_u32(&mut client, 4, 17u32);
        env.poke(buf, &client);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &set), e(ERANGE));
        // GET_CLIENT_INFO and GET_POOLS read back.
        let getc = sysctl_op(TMEMC_GET_CLIENT_INFO, u32::from(D2), 0, 0, [0; 3], buf);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &getc), 0);
        let got = env.peek(buf, TMEM_CLIENT_SIZE);
        assert_eq!(get_u32(&got, 8), 2, "two pools");
        assert_eq!(get_u32(&got, 16), 3, "weight");
        let pools = sysctl_op(TMEMC_GET_POOLS, u32::from(D2), 64, 0, [0; 3], buf);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &pools), 2);
        let got = env.peek(buf, 64);
        assert_eq!(
            get_u32(&got, 0) & TMEM_POOL_INFO_SHARED,
            TMEM_POOL_INFO_SHARED
        );
        assert_eq!(get_u64(&got, 16), 5);
        assert_eq!(
            get_u32(&got, 32) & TMEM_POOL_INFO_PERSIST,
            TMEM_POOL_INFO_PERSIST
        );
        // LIST writes text, cut at the buffer's length.
        let list = sysctl_op(TMEMC_LIST, TMEMC_ALL_CLIENTS, 4096, 0, [0; 3], buf);
        let n = sysctl_call(&mut xen, &env, D1, &list);
        let text = alloc::string::String::from_utf8(env.peek(buf, n as usize)).unwrap();
        assert!(text.contains("C=d2,w=3,"), "{text}");
        assert!(text.contains("\nG=pages="), "{text}");
        let short = sysctl_op(TMEMC_LIST, TMEMC_ALL_CLIENTS, 10, 0, [0; 3], buf);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &short), 10);
        // Unknown clients, migration commands.
        let nobody = sysctl_op(TMEMC_FREEZE, 9, 0, 0, [0; 3], 0);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &nobody), e(ENOENT));
        let save = sysctl_op(TMEMC_SAVE_BEGIN, u32::from(D2), 0, 0, [0; 3], 0);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &save), e(EOPNOTSUPP));
        // FLUSH answers the KiB it dropped (one ephemeral page of D2's).
        let flush = sysctl_op(TMEMC_FLUSH, u32::from(D2), 0, 400, [0; 3], 0);
        assert_eq!(sysctl_call(&mut xen, &env, D1, &flush), 4);
        xen.tmem.check_invariants();
    }

    #[test]
    fn a_dying_domain_loses_its_tmem_first_and_the_shared_pool_stays() {
        let (env, mut xen) = setup();
        xen.tmem.authorize(D1, [5, 6], true);
        xen.tmem.authorize(D2, [5, 6], true);
        let shared = V1 | TMEM_POOL_SHARED;
        assert_eq!(new_pool(&mut xen, &env, D1, shared, [5, 6]), 0);
        assert_eq!(new_pool(&mut xen, &env, D1, V1, [0; 2]), 1);
        assert_eq!(new_pool(&mut xen, &env, D2, shared, [5, 6]), 0);
        fill(&env, D1, 1, 0x11);
        assert_eq!(put(&mut xen, &env, D1, 0, 0, 1), 1);
        assert_eq!(put(&mut xen, &env, D1, 1, 0, 1), 1);
        xen.remove_domain(&env, D1);
        xen.tmem.check_invariants();
        assert!(xen.tmem.client_stats(D1).is_none());
        assert_eq!(xen.tmem.stats().pages, 1, "D1's private page went");
        assert_eq!(get(&mut xen, &env, D2, 0, 0, 2), 1);
        assert_eq!(frame(&env, D2, 2), [0x11; PAGE]);
    }

    /// memory_op on `frames` (indices) of `dom`: the extents done.
    fn reservation(xen: &mut Xen, env: &TestEnv, dom: DomId, cmd: u64, frames: &[u64]) -> i64 {
        env.current.set(dom);
        let list = OP + 2048;
        for (i, f) in frames.iter().enumerate() {
            env.poke(list + 8 * i as u64, &(RAM_BASE_GFN + f).to_le_bytes());
        }
        let mut r = [0u8; MEMORY_RESERVATION_SIZE];
        put_u64(&mut r, 0, list);
        put_u64(&mut r, 8, frames.len() as u64);
        put_u16(&mut r, 24, DOMID_SELF);
        env.poke(OP + 1024, &r);
        hypercall(xen, env, dom, 0, HC_MEMORY_OP, [cmd, OP + 1024, 0, 0, 0]).ret
    }

    fn current_reservation(xen: &mut Xen, env: &TestEnv, dom: DomId) -> i64 {
        env.current.set(dom);
        env.poke(OP + 1024, &DOMID_SELF.to_le_bytes());
        hypercall(
            xen,
            env,
            dom,
            0,
            HC_MEMORY_OP,
            [XENMEM_CURRENT_RESERVATION, OP + 1024, 0, 0, 0],
        )
        .ret
    }

    #[test]
    fn persistent_pages_count_against_the_domains_memory() {
        let (env, mut xen) = setup();
        xen.tmem.configure(
            D1,
            ClientConfig {
                pers_quota: 100,
                ..ClientConfig::default()
            },
        );
        let pool = new_pool(&mut xen, &env, D1, V1 | TMEM_POOL_PERSIST, [0; 2]) as i32;
        assert_eq!(pool, 0);
        fill(&env, D1, 1, 0x5a);
        // Every frame in use: no room, whatever the quota.
        assert_eq!(put(&mut xen, &env, D1, pool, 0, 1), -i64::from(ENOMEM));
        assert_eq!(current_reservation(&mut xen, &env, D1), 8);
        // Two frames given back: two pages fit, the third does not.
        assert_eq!(
            reservation(&mut xen, &env, D1, XENMEM_DECREASE_RESERVATION, &[6, 7]),
            2
        );
        assert_eq!(current_reservation(&mut xen, &env, D1), 6);
        assert_eq!(put(&mut xen, &env, D1, pool, 0, 1), 1);
        assert_eq!(put(&mut xen, &env, D1, pool, 1, 1), 1);
        assert_eq!(put(&mut xen, &env, D1, pool, 2, 1), -i64::from(ENOMEM));
        assert_eq!(current_reservation(&mut xen, &env, D1), 8);
        // The room is taken: populate_physmap gets nothing back.
        assert_eq!(
            reservation(&mut xen, &env, D1, XENMEM_POPULATE_PHYSMAP, &[6, 7]),
            0
        );
        // One page flushed: one frame may come back, not two.
        let flush = page_op(&mut xen, &env, D1, TMEM_FLUSH_PAGE, pool, 7, 1, 0, [0; 3]);
        assert_eq!(flush, 1);
        assert_eq!(
            reservation(&mut xen, &env, D1, XENMEM_POPULATE_PHYSMAP, &[6, 7]),
            1
        );
        assert_eq!(current_reservation(&mut xen, &env, D1), 8);
        // The persistent page is still there.
        assert_eq!(get(&mut xen, &env, D1, pool, 0, 2), 1);
        assert_eq!(frame(&env, D1, 2), [0x5a; PAGE]);
        // Another domain's room is its own.
        assert_eq!(
            new_pool(&mut xen, &env, D2, V1 | TMEM_POOL_PERSIST, [0; 2]),
            0
        );
        xen.tmem.check_invariants();
    }
}
