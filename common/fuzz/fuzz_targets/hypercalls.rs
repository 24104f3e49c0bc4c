//! Every hypercall handler of common::xen, driven with arbitrary numbers,
//! arguments and guest memory contents from three domains (two linked,
//! one a stranger; domain 1 has the control capability, so the tmem
//! sysctl is reached too), through the host stand-in for the
//! architecture. After every call the event-channel, grant-table and tmem
//! invariants must hold and nothing may panic. Half the inputs go to the event-channel sequence
//! fuzzer, which also drives ballooning and domain restarts.
#![no_main]

use common::xen::abi::*;
use common::xen::testenv::{RAM_BASE_GFN, TestEnv};
use common::xen::{CAP_CONTROL, evtchn, hypercall};
use libfuzzer_sys::fuzz_target;

/// Hypercalls the dispatcher knows, and a few it does not.
const CALLS: [u64; 14] = [
    HC_XEN_VERSION,
    HC_CONSOLE_IO,
    HC_VM_ASSIST,
    HC_SCHED_OP,
    HC_VCPU_OP,
    HC_MEMORY_OP,
    HC_HVM_OP,
    HC_MULTICALL,
    HC_EVENT_CHANNEL_OP,
    HC_GRANT_TABLE_OP,
    HC_PHYSDEV_OP,
    HC_TMEM_OP,
    HC_SYSCTL,
    999,
];
const PAGES: u64 = 16;

fn word(data: &mut &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    u64::from_le_bytes(b)
}

/// Mostly addresses inside guest RAM (or just past it), else anything.
fn arg(v: u64) -> u64 {
    match v & 3 {
        0 => (RAM_BASE_GFN << 12) + (v >> 2) % ((PAGES + 1) << 12),
        1 => (v >> 2) & 0xff,
        2 => RAM_BASE_GFN + (v >> 2) % (PAGES + 2),
        _ => v,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut data)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        evtchn::fuzz(data);
        return;
    }
    let env = TestEnv::new(&[1, 2, 3], PAGES as usize);
    let mut xen = env.xen();
    xen.allow(1, 2);
    xen.tmem = common::tmem::Tmem::new(8 * common::tmem::PAGE);
    if let Some(d) = xen.domain_mut(1) {
        d.cfg.caps |= CAP_CONTROL;
    }
    for _ in 0..64 {
        if data.len() < 8 {
            break;
        }
        let head = word(&mut data);
        let dom = (head % 3) as u16 + 1;
        env.current.set(dom);
        // Some guest memory first: a struct for the call to read.
        let poke_len = ((head >> 8) % 64) as usize;
        let at = (RAM_BASE_GFN << 12) + ((head >> 16) % (PAGES << 12));
        let bytes: Vec<u8> = data.iter().take(poke_len).copied().collect();
        data = &data[bytes.len()..];
        let _ = common::xen::Env::write_virt(&env, at, &bytes);
        let nr = CALLS[((head >> 40) % CALLS.len() as u64) as usize];
        let mut args = [0u64; 5];
        for a in &mut args {
            *a = arg(word(&mut data));
        }
        // Small sub-op numbers most of the time.
        args[0] %= if head >> 60 == 0 { u64::MAX } else { 16 };
        let vcpu = ((head >> 48) & 1) as u32;
        let mut r = hypercall(&mut xen, &env, dom, vcpu, nr, args);
        let mut rounds = 0;
        while let Some(next) = r.cont {
            rounds += 1;
            assert!(rounds < 100_000, "a continuation that never ends");
            r = hypercall(&mut xen, &env, dom, vcpu, nr, next);
        }
        if let Err(e) = evtchn::check_invariants(&xen) {
            panic!("event channels: {e}");
        }
        xen.tmem.check_invariants();
        // Unlinked domains never got a channel between them.
        for port in 1..64 {
            if let Some(d) = xen.domain(3) {
                if let Some(evtchn::State::Interdomain { remote_dom, .. }) = d.evtchn.state(port) {
                    assert_eq!(remote_dom, 3, "domain 3 reached another domain");
                }
            }
        }
    }
    for id in [1, 2, 3] {
        xen.remove_domain(&env, id);
    }
    // Nothing of tmem outlives its domains.
    xen.tmem.check_invariants();
    assert_eq!(xen.tmem.stats().pages, 0, "tmem pages leaked");
    assert_eq!(xen.tmem.stats().bytes, 0, "tmem bytes leaked");
});
