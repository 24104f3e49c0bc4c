//! Host tests of the dispatcher and the simple hypercalls.

use super::abi::*;
use super::testenv::*;
use super::*;

const D1: DomId = 1;
const D2: DomId = 2;

fn call(xen: &mut Xen, env: &TestEnv, dom: DomId, nr: u64, args: [u64; 5]) -> Reply {
    env.current.set(dom);
    hypercall(xen, env, dom, 0, nr, args)
}

#[test]
fn lockless_calls_answer_what_the_dispatcher_does() {
    let env = TestEnv::new(&[D1], 16);
    let mut xen = env.xen();
    let version = [XENVER_VERSION, 0, 0, 0, 0];
    assert_eq!(
        lockless(HC_XEN_VERSION, version),
        Some(call(&mut xen, &env, D1, HC_XEN_VERSION, version))
    );
    // Anything that reads or writes guest memory or state takes the lock.
    for (nr, cmd) in [
        (HC_XEN_VERSION, XENVER_EXTRAVERSION),
        (HC_XEN_VERSION, XENVER_GET_FEATURES),
        (HC_EVENT_CHANNEL_OP, 4),
        (HC_SCHED_OP, 0),
        (HC_GRANT_TABLE_OP, 0),
        (HC_CONSOLE_IO, 0),
    ] {
        assert_eq!(lockless(nr, [cmd, 0, 0, 0, 0]), None, "{nr}/{cmd}");
    }
}

#[test]
fn version_and_features() {
    let env = TestEnv::new(&[D1], 16);
    let mut xen = env.xen();
    assert_eq!(
        call(&mut xen, &env, D1, HC_XEN_VERSION, [0; 5]).ret,
        (4 << 16) | 17
    );
    let a = TestEnv::addr(0, 0);
    env.poke(a, &[0; 8]);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_XEN_VERSION,
            [XENVER_GET_FEATURES, a, 0, 0, 0]
        )
        .ret,
        0
    );
    let map = get_u32(&env.peek(a, 8), 4);
    assert_ne!(map & (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP), 0);
    assert_eq!(map & (1 << XENFEAT_DOM0), 0);
    env.poke(a, &1u32.to_le_bytes());
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_XEN_VERSION,
            [XENVER_GET_FEATURES, a, 0, 0, 0]
        )
        .ret,
        -22
    );
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_XEN_VERSION,
            [XENVER_GET_FEATURES, 0x10, 0, 0, 0]
        )
        .ret,
        -14
    );
    assert_eq!(call(&mut xen, &env, D1, 99, [0; 5]).ret, -38);
}

#[test]
fn shared_info_vcpu_info_and_runstate_are_placed() {
    let env = TestEnv::new(&[D1, D2], 16);
    let mut xen = env.xen();
    let a = TestEnv::addr(0, 0);
    // add_to_physmap(shared_info) at RAM frame 3: the frame shows the page.
    let mut x = [0u8; ADD_TO_PHYSMAP_SIZE];
    put_u16(&mut x, 0, DOMID_SELF);
    put_u32(&mut x, 4, XENMAPSPACE_SHARED_INFO);
    put_u64(&mut x, 16, RAM_BASE_GFN + 3);
    env.poke(a, &x);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_MEMORY_OP,
            [XENMEM_ADD_TO_PHYSMAP, a, 0, 0, 0]
        )
        .ret,
        0
    );
    let si = xen.domain(D1).unwrap().shared_info.frame();
    assert_eq!(env.seen(D1, RAM_BASE_GFN + 3), Some((si, true)));
    // Another domain's shared info is out of reach.
    put_u16(&mut x, 0, D2);
    env.poke(a, &x);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_MEMORY_OP,
            [XENMEM_ADD_TO_PHYSMAP, a, 0, 0, 0]
        )
        .ret,
        -1
    );
    // register_vcpu_info: bad offset, frame not plain RAM, then good, then twice.
    let mut r = [0u8; REGISTER_VCPU_INFO_SIZE];
    put_u64(&mut r, 0, RAM_BASE_GFN + 5);
    put_u32(&mut r, 8, 4090);
    env.poke(a, &r);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_VCPU_OP,
            [VCPUOP_REGISTER_VCPU_INFO, 0, a, 0, 0]
        )
        .ret,
        -22
    );
    put_u64(&mut r, 0, RAM_BASE_GFN + 3);
    put_u32(&mut r, 8, 64);
    env.poke(a, &r);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_VCPU_OP,
            [VCPUOP_REGISTER_VCPU_INFO, 0, a, 0, 0]
        )
        .ret,
        -22
    );
    put_u64(&mut r, 0, RAM_BASE_GFN + 5);
    env.poke(a, &r);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_VCPU_OP,
            [VCPUOP_REGISTER_VCPU_INFO, 0, a, 0, 0]
        )
        .ret,
        0
    );
    assert!(
        xen.domain(D1).unwrap().upcall_pending(&env, 0),
        "a move marks events pending"
    );
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_VCPU_OP,
            [VCPUOP_REGISTER_VCPU_INFO, 0, a, 0, 0]
        )
        .ret,
        -22
    );
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_VCPU_OP,
            [VCPUOP_REGISTER_VCPU_INFO, 7, a, 0, 0]
        )
        .ret,
        -2
    );
    // Runstate area, then a switch writes it.
    let area = TestEnv::addr(6, 0x100);
    env.poke(a, &area.to_le_bytes());
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_VM_ASSIST,
            [VMASST_CMD_ENABLE, VMASST_TYPE_RUNSTATE_UPDATE_FLAG, 0, 0, 0]
        )
        .ret,
        0
    );
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_VCPU_OP,
            [VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, 0, a, 0, 0]
        )
        .ret,
        0
    );
    env.now.set(5000);
    xen.set_runstate(&env, D1, 0, RUNSTATE_BLOCKED);
    let rs = env.peek(area, RUNSTATE_INFO_SIZE);
    assert_eq!(get_u32(&rs, 0), RUNSTATE_BLOCKED);
    assert_eq!(get_u64(&rs, 8), 5000, "entry time, update flag cleared");
    assert_eq!(get_u64(&rs, 16), 5000, "time running since boot");
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_VM_ASSIST,
            [VMASST_CMD_ENABLE, 2, 0, 0, 0]
        )
        .ret,
        -22
    );
}

#[test]
fn balloon_holes_are_given_and_taken_back() {
    let env = TestEnv::new(&[D1], 16);
    let mut xen = env.xen();
    let list = TestEnv::addr(0, 0x800);
    let res = TestEnv::addr(0, 0);
    let mut r = [0u8; MEMORY_RESERVATION_SIZE];
    put_u64(&mut r, 0, list);
    put_u64(&mut r, 8, 2);
    put_u16(&mut r, 24, DOMID_SELF);
    env.poke(res, &r);
    let mut l = Vec::new();
    l.extend_from_slice(&(RAM_BASE_GFN + 8).to_le_bytes());
    l.extend_from_slice(&(RAM_BASE_GFN + 99).to_le_bytes()); // not RAM: stops there
    env.poke(list, &l);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_MEMORY_OP,
            [XENMEM_DECREASE_RESERVATION, res, 0, 0, 0]
        )
        .ret,
        1
    );
    assert_eq!(env.seen(D1, RAM_BASE_GFN + 8), None);
    assert_eq!(
        xen.domain(D1).unwrap().p2m.get(&(RAM_BASE_GFN + 8)),
        Some(&Slot::Hole)
    );
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_MEMORY_OP,
            [XENMEM_POPULATE_PHYSMAP, res, 0, 0, 0]
        )
        .ret,
        1
    );
    assert!(env.seen(D1, RAM_BASE_GFN + 8).is_some());
    // Another domain's reservation, an order above 0.
    put_u16(&mut r, 24, 2);
    env.poke(res, &r);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_MEMORY_OP,
            [XENMEM_DECREASE_RESERVATION, res, 0, 0, 0]
        )
        .ret,
        -1
    );
    put_u16(&mut r, 24, DOMID_SELF);
    put_u32(&mut r, 16, 9);
    env.poke(res, &r);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_MEMORY_OP,
            [XENMEM_DECREASE_RESERVATION, res, 0, 0, 0]
        )
        .ret,
        -22
    );
}

#[test]
fn hvm_params_follow_xens_write_rules() {
    let env = TestEnv::new(&[D1, D2], 4);
    let mut xen = env.xen();
    let a = TestEnv::addr(0, 0);
    let mut p = [0u8; HVM_PARAM_SIZE];
    put_u16(&mut p, 0, DOMID_SELF);
    put_u32(&mut p, 4, HVM_PARAM_STORE_PFN);
    env.poke(a, &p);
    assert_eq!(
        call(&mut xen, &env, D1, HC_HVM_OP, [HVMOP_GET_PARAM, a, 0, 0, 0]).ret,
        0
    );
    assert_eq!(get_u64(&env.peek(a, 16), 8), 0, "no xenstore: 0");
    assert_eq!(
        call(&mut xen, &env, D1, HC_HVM_OP, [HVMOP_SET_PARAM, a, 0, 0, 0]).ret,
        -1
    );
    put_u32(&mut p, 4, HVM_PARAM_CALLBACK_IRQ);
    put_u64(&mut p, 8, 5);
    env.poke(a, &p);
    assert_eq!(
        call(&mut xen, &env, D1, HC_HVM_OP, [HVMOP_SET_PARAM, a, 0, 0, 0]).ret,
        0
    );
    put_u32(&mut p, 4, 4);
    env.poke(a, &p);
    assert_eq!(
        call(&mut xen, &env, D1, HC_HVM_OP, [HVMOP_SET_PARAM, a, 0, 0, 0]).ret,
        -22
    );
    put_u32(&mut p, 4, 999);
    env.poke(a, &p);
    assert_eq!(
        call(&mut xen, &env, D1, HC_HVM_OP, [HVMOP_GET_PARAM, a, 0, 0, 0]).ret,
        -22
    );
    put_u16(&mut p, 0, D2);
    put_u32(&mut p, 4, HVM_PARAM_CALLBACK_IRQ);
    env.poke(a, &p);
    assert_eq!(
        call(&mut xen, &env, D1, HC_HVM_OP, [HVMOP_GET_PARAM, a, 0, 0, 0]).ret,
        -1
    );
}

#[test]
fn multicall_runs_entries_and_continues_long_lists() {
    let env = TestEnv::new(&[D1], 8);
    let mut xen = env.xen();
    let list = TestEnv::addr(1, 0);
    let n = 40u64;
    for i in 0..n {
        let mut e = [0u8; MULTICALL_ENTRY_SIZE];
        put_u64(
            &mut e,
            0,
            if i == 3 { HC_MULTICALL } else { HC_XEN_VERSION },
        );
        env.poke(list + i * 64, &e);
    }
    let r = call(&mut xen, &env, D1, HC_MULTICALL, [list, n, 0, 0, 0]);
    let next = r.cont.expect("more than one chunk: a continuation");
    assert_eq!(next[1], n - MULTICALL_CHUNK);
    assert_eq!(call(&mut xen, &env, D1, HC_MULTICALL, next).cont, None);
    for i in 0..n {
        let ret = get_u64(&env.peek(list + i * 64 + 8, 8), 0) as i64;
        assert_eq!(ret, if i == 3 { -22 } else { (4 << 16) | 17 }, "entry {i}");
    }
}

#[test]
fn shutdown_reasons_and_console_writes() {
    let env = TestEnv::new(&[D1, D2], 4);
    let mut xen = env.xen();
    let a = TestEnv::addr(0, 0);
    env.poke(a, &SHUTDOWN_REBOOT.to_le_bytes());
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_SCHED_OP,
            [SCHEDOP_SHUTDOWN, a, 0, 0, 0]
        )
        .action,
        Action::Shutdown(SHUTDOWN_REBOOT)
    );
    env.poke(a, &9u32.to_le_bytes());
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_SCHED_OP,
            [SCHEDOP_SHUTDOWN, a, 0, 0, 0]
        )
        .ret,
        -22
    );
    let mut rs = [0u8; 8];
    put_u16(&mut rs, 0, D2);
    env.poke(a, &rs);
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_SCHED_OP,
            [SCHEDOP_REMOTE_SHUTDOWN, a, 0, 0, 0]
        )
        .ret,
        -1,
        "no control capability"
    );
    env.poke(a, b"hello");
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_CONSOLE_IO,
            [CONSOLEIO_WRITE, 5, a, 0, 0]
        )
        .ret,
        0
    );
    assert_eq!(
        env.console.borrow().get(&D1).map(|v| v.as_slice()),
        Some(&b"hello"[..])
    );
    assert_eq!(
        call(
            &mut xen,
            &env,
            D1,
            HC_CONSOLE_IO,
            [CONSOLEIO_READ, 5, a, 0, 0]
        )
        .ret,
        -1
    );
    assert!(!env.logs.borrow().is_empty(), "refusals are logged");
}

/// HVMOP_set_param from `caller` on `target` (an id or DOMID_SELF).
fn set_param(
    xen: &mut Xen,
    env: &TestEnv,
    caller: DomId,
    target: DomId,
    index: u32,
    v: u64,
) -> i64 {
    let a = TestEnv::addr(0, 0);
    let mut p = [0u8; HVM_PARAM_SIZE];
    put_u16(&mut p, 0, target);
    put_u32(&mut p, 4, index);
    put_u64(&mut p, 8, v);
    env.current.set(caller);
    env.poke(a, &p);
    call(xen, env, caller, HC_HVM_OP, [HVMOP_SET_PARAM, a, 0, 0, 0]).ret
}

/// HVMOP_get_param: the return value and the value written back.
fn get_param(xen: &mut Xen, env: &TestEnv, caller: DomId, target: DomId, index: u32) -> (i64, u64) {
    let a = TestEnv::addr(0, 0);
    let mut p = [0u8; HVM_PARAM_SIZE];
    put_u16(&mut p, 0, target);
    put_u32(&mut p, 4, index);
    put_u64(&mut p, 8, 0xdead);
    env.current.set(caller);
    env.poke(a, &p);
    let r = call(xen, env, caller, HC_HVM_OP, [HVMOP_GET_PARAM, a, 0, 0, 0]).ret;
    (r, get_u64(&env.peek(a, 16), 8))
}

const D3: DomId = 3;
const EPERM_RET: i64 = -(EPERM as i64);
const EEXIST_RET: i64 = -(EEXIST as i64);
const EINVAL_RET: i64 = -(EINVAL as i64);

#[test]
fn viridian_mask_validity_rule() {
    assert_eq!(check_viridian_mask(0), Ok(()), "0: no enlightenments");
    for ok in [
        HVMPV_BASE_FREQ,
        HVMPV_BASE_FREQ | HVMPV_NO_FREQ,
        HVMPV_BASE_FREQ | HVMPV_TIME_REF_COUNT,
        HVMPV_FEATURE_MASK,
    ] {
        assert_eq!(check_viridian_mask(ok), Ok(()), "{ok:#x}");
    }
    for bad in [
        HVMPV_NO_FREQ,
        HVMPV_TIME_REF_COUNT,
        HVMPV_NO_FREQ | HVMPV_TIME_REF_COUNT,
        HVMPV_BASE_FREQ | 1 << 3,
        HVMPV_BASE_FREQ | 1 << 63,
        1 << 3,
    ] {
        assert_eq!(check_viridian_mask(bad), Err(EINVAL), "{bad:#x}");
    }
    // The change rule's order: same value first, then EEXIST, then EINVAL.
    assert_eq!(viridian_mask_change(0, 0), Ok(()));
    assert_eq!(viridian_mask_change(1, 1), Ok(()));
    assert_eq!(
        viridian_mask_change(1, 1 << 5),
        Err(EEXIST),
        "EEXIST before EINVAL"
    );
    assert_eq!(viridian_mask_change(1, 0), Err(EEXIST));
    assert_eq!(viridian_mask_change(0, 1 << 5), Err(EINVAL));
}

#[test]
fn viridian_guest_may_neither_write_nor_read_its_mask() {
    let env = TestEnv::new(&[D1, D2], 4);
    let mut xen = env.xen();
    for target in [DOMID_SELF, D1] {
        assert_eq!(
            set_param(&mut xen, &env, D1, target, HVM_PARAM_VIRIDIAN, 1),
            EPERM_RET
        );
        assert_eq!(
            get_param(&mut xen, &env, D1, target, HVM_PARAM_VIRIDIAN).0,
            EPERM_RET
        );
    }
    assert_eq!(xen.domain(D1).unwrap().viridian_mask(), 0);
    // Still EPERM after the builder set it, even for the same value, and
    // even when the guest holds CAP_CONTROL (it is its own domain).
    xen.set_viridian(&env, D1, HVMPV_BASE_FREQ).unwrap();
    xen.domain_mut(D1).unwrap().cfg.caps |= CAP_CONTROL;
    assert_eq!(
        set_param(&mut xen, &env, D1, DOMID_SELF, HVM_PARAM_VIRIDIAN, 1),
        EPERM_RET
    );
    assert_eq!(
        set_param(&mut xen, &env, D1, DOMID_SELF, HVM_PARAM_VIRIDIAN, 0),
        EPERM_RET
    );
    assert_eq!(
        get_param(&mut xen, &env, D1, DOMID_SELF, HVM_PARAM_VIRIDIAN).0,
        EPERM_RET
    );
    // A domain without CAP_CONTROL cannot reach another's mask either.
    assert_eq!(
        set_param(&mut xen, &env, D2, D1, HVM_PARAM_VIRIDIAN, 1),
        EPERM_RET
    );
    assert_eq!(xen.domain(D1).unwrap().viridian_mask(), HVMPV_BASE_FREQ);
}

#[test]
fn viridian_builder_sets_the_mask_once() {
    let env = TestEnv::new(&[D1, D2], 4);
    let mut xen = env.xen();
    let d1 = |xen: &Xen| xen.domain(D1).unwrap().viridian_mask();
    // Refusals on a fresh domain leave it at 0.
    assert_eq!(
        xen.set_viridian(&env, D1, HVMPV_BASE_FREQ | 1 << 3),
        Err(EINVAL)
    );
    assert_eq!(
        xen.set_viridian(&env, D1, HVMPV_NO_FREQ),
        Err(EINVAL),
        "no_freq alone"
    );
    assert_eq!(
        xen.set_viridian(&env, D1, HVMPV_TIME_REF_COUNT),
        Err(EINVAL)
    );
    assert_eq!(d1(&xen), 0);
    assert_eq!(xen.set_viridian(&env, D1, 0), Ok(()), "zero on zero");
    assert_eq!(xen.set_viridian(&env, 9, HVMPV_BASE_FREQ), Err(ESRCH));
    // Set, the same value again, then every change refused.
    let m = HVMPV_BASE_FREQ | HVMPV_NO_FREQ;
    assert_eq!(xen.set_viridian(&env, D1, m), Ok(()));
    assert_eq!(xen.domain(D1).unwrap().param(HVM_PARAM_VIRIDIAN), m);
    assert_eq!(xen.set_viridian(&env, D1, m), Ok(()), "same value again");
    assert_eq!(xen.set_viridian(&env, D1, HVMPV_BASE_FREQ), Err(EEXIST));
    assert_eq!(
        xen.set_viridian(&env, D1, 0),
        Err(EEXIST),
        "cannot switch off"
    );
    assert_eq!(xen.set_viridian(&env, D1, 1 << 9), Err(EEXIST));
    assert_eq!(d1(&xen), m);
    // Other domains are untouched; param() out of range reads 0.
    assert_eq!(xen.domain(D2).unwrap().viridian_mask(), 0);
    assert_eq!(xen.domain(D1).unwrap().param(HVM_NR_PARAMS), 0);
    assert!(env.logs.borrow().iter().any(|l| l.contains("viridian")));
}

#[test]
fn viridian_control_domain_follows_the_same_rules() {
    let env = TestEnv::new(&[D1, D2, D3], 4);
    let mut xen = env.xen();
    xen.domain_mut(D3).unwrap().cfg.caps |= CAP_CONTROL;
    let set = |xen: &mut Xen, v| set_param(xen, &env, D3, D1, HVM_PARAM_VIRIDIAN, v);
    assert_eq!(
        set(&mut xen, HVMPV_BASE_FREQ | 1 << 3),
        EINVAL_RET,
        "unknown bit"
    );
    assert_eq!(set(&mut xen, HVMPV_NO_FREQ), EINVAL_RET, "no_freq alone");
    assert_eq!(
        set(&mut xen, HVMPV_TIME_REF_COUNT),
        EINVAL_RET,
        "base missing"
    );
    assert_eq!(set(&mut xen, 0), 0, "zero on zero");
    let m = HVMPV_BASE_FREQ | HVMPV_TIME_REF_COUNT;
    assert_eq!(set(&mut xen, m), 0);
    assert_eq!(
        get_param(&mut xen, &env, D3, D1, HVM_PARAM_VIRIDIAN),
        (0, m),
        "the toolstack reads it back"
    );
    assert_eq!(set(&mut xen, m), 0, "same value again");
    assert_eq!(set(&mut xen, HVMPV_BASE_FREQ), EEXIST_RET);
    assert_eq!(set(&mut xen, 0), EEXIST_RET);
    assert_eq!(set(&mut xen, 1 << 7), EEXIST_RET, "EEXIST before EINVAL");
    assert_eq!(xen.domain(D1).unwrap().viridian_mask(), m);
    // The builder meets the value the control domain set.
    assert_eq!(xen.set_viridian(&env, D1, m), Ok(()));
    assert_eq!(xen.set_viridian(&env, D1, HVMPV_BASE_FREQ), Err(EEXIST));
}

#[test]
fn other_set_once_params_keep_their_rule() {
    let env = TestEnv::new(&[D1, D3], 4);
    let mut xen = env.xen();
    xen.domain_mut(D3).unwrap().cfg.caps |= CAP_CONTROL;
    // IOREQ_PFN (5): any value first, the same again, a change EEXIST;
    // unlike viridian no validity check on the value.
    assert_eq!(set_param(&mut xen, &env, D3, D1, 5, 0x1234), 0);
    assert_eq!(set_param(&mut xen, &env, D3, D1, 5, 0x1234), 0);
    assert_eq!(set_param(&mut xen, &env, D3, D1, 5, 0x1235), EEXIST_RET);
    assert_eq!(get_param(&mut xen, &env, D3, D1, 5), (0, 0x1234));
    // A parameter that is not set-once may change.
    assert_eq!(set_param(&mut xen, &env, D3, D1, HVM_PARAM_STORE_PFN, 7), 0);
    assert_eq!(set_param(&mut xen, &env, D3, D1, HVM_PARAM_STORE_PFN, 8), 0);
}

// ---- x86_64 shared_info layout (Xen::with_layout) ----

/// `Xen` with x86_64's shared_info layout and `env`'s domains, configured
/// as [`TestEnv::xen`] configures them.
fn x86_xen(env: &TestEnv) -> Xen {
    let mut xen = Xen::with_layout(Layout::X86_64);
    for (&id, frames) in &env.ram {
        xen.add_domain(DomainConfig {
            id,
            name: alloc::format!("d{}", id),
            nr_vcpus: 2,
            caps: 0,
            ram_base_gfn: RAM_BASE_GFN,
            ram_pages: frames.len() as u64,
            max_grant_frames: 4,
            max_evtchn_ports: DEFAULT_EVTCHN_PORTS,
            tmem: Default::default(),
        })
        .unwrap();
    }
    xen
}

/// An event-channel operation with `arg` in D1's first RAM frame: the
/// return value and the argument as the call left it.
fn evtchn_op(xen: &mut Xen, env: &TestEnv, cmd: u64, arg: &[u8]) -> (i64, Vec<u8>) {
    let a = TestEnv::addr(0, 0);
    env.poke(a, arg);
    let ret = call(xen, env, D1, HC_EVENT_CHANNEL_OP, [cmd, a, 0, 0, 0]).ret;
    (ret, env.peek(a, arg.len()))
}

/// A loopback channel in D1: (the port events arrive at, the port sent on).
fn loopback(xen: &mut Xen, env: &TestEnv) -> (u32, u32) {
    let mut alloc = [0u8; 8];
    put_u16(&mut alloc, 0, DOMID_SELF);
    put_u16(&mut alloc, 2, DOMID_SELF);
    let (ret, out) = evtchn_op(xen, env, EVTCHNOP_ALLOC_UNBOUND, &alloc);
    assert_eq!(ret, 0);
    let own = get_u32(&out, 4);
    let mut bind = [0u8; 12];
    put_u16(&mut bind, 0, DOMID_SELF);
    put_u32(&mut bind, 4, own);
    let (ret, out) = evtchn_op(xen, env, EVTCHNOP_BIND_INTERDOMAIN, &bind);
    assert_eq!(ret, 0);
    (own, get_u32(&out, 8))
}

/// Whether `port`'s bit is set in the bitmap at `base` of D1's shared_info.
fn bitmap_bit(xen: &Xen, base: usize, port: u32) -> bool {
    xen.domain(D1)
        .unwrap()
        .shared_info
        .load64(base + (port / 64) as usize * 8)
        & 1 << (port % 64)
        != 0
}

fn set_bitmap_bit(xen: &Xen, base: usize, port: u32, on: bool) {
    let si = &xen.domain(D1).unwrap().shared_info;
    let (word, bit) = (base + (port / 64) as usize * 8, 1u64 << (port % 64));
    if on {
        si.fetch_or64(word, bit);
    } else {
        si.fetch_and64(word, !bit);
    }
}

/// What a guest does after an upcall on `vcpu`, and forgetting the
/// upcalls seen so far.
fn acknowledge(xen: &Xen, env: &TestEnv, vcpu: u32) {
    xen.domain(D1).unwrap().with_vcpu_info(env, vcpu, |p, o| {
        p.store8(o + VCPU_INFO_UPCALL_PENDING, 0);
        p.store64(o + VCPU_INFO_PENDING_SEL, 0);
    });
    env.upcalls.borrow_mut().clear();
}

fn selector(xen: &Xen, env: &TestEnv, vcpu: u32) -> u64 {
    xen.domain(D1)
        .unwrap()
        .with_vcpu_info(env, vcpu, |p, o| p.load64(o + VCPU_INFO_PENDING_SEL))
        .unwrap()
}

fn send_on(xen: &mut Xen, env: &TestEnv, port: u32) -> i64 {
    evtchn_op(xen, env, EVTCHNOP_SEND, &port.to_le_bytes()).0
}

#[test]
fn x86_layout_offsets() {
    assert_eq!(Layout::X86_64.evtchn_pending(), 2048);
    assert_eq!(Layout::X86_64.evtchn_mask(), 2560);
    assert_eq!(Layout::ARM64.evtchn_pending(), 48);
    assert_eq!(Layout::ARM64.evtchn_mask(), 560);
    assert_eq!(Layout::ARM64.evtchn_pending(), SHINFO_EVTCHN_PENDING);
    assert_eq!(Layout::ARM64.evtchn_mask(), SHINFO_EVTCHN_MASK);
    assert_eq!(Xen::new().layout, Layout::ARM64);
}

#[test]
fn x86_loopback_event_sets_pending_at_2048() {
    let env = TestEnv::new(&[D1], 16);
    let mut xen = x86_xen(&env);
    assert_eq!(xen.domain(D1).unwrap().layout, Layout::X86_64);
    let (own, sender) = loopback(&mut xen, &env);
    // Binding marked the new end pending, in the x86 bitmap.
    assert!(bitmap_bit(&xen, 2048, sender));
    set_bitmap_bit(&xen, 2048, sender, false);
    acknowledge(&xen, &env, 0);

    assert_eq!(send_on(&mut xen, &env, sender), 0);
    assert!(bitmap_bit(&xen, 2048, own));
    // Nothing at arm's offset, which on x86 is inside vcpu 0's vcpu_info.
    assert!(!bitmap_bit(&xen, 48, own));
    assert_eq!(selector(&xen, &env, 0), 1 << (own / 64));
    let si = &xen.domain(D1).unwrap().shared_info;
    assert_eq!(si.load8(VCPU_INFO_UPCALL_PENDING), 1);
    assert!(xen.domain(D1).unwrap().upcall_pending(&env, 0));
    assert_eq!(*env.upcalls.borrow(), [(D1, 0)]);
}

#[test]
fn x86_mask_at_2560_is_honoured() {
    let env = TestEnv::new(&[D1], 16);
    let mut xen = x86_xen(&env);
    let (own, sender) = loopback(&mut xen, &env);
    set_bitmap_bit(&xen, 2048, sender, false);
    acknowledge(&xen, &env, 0);

    // Masked at 2560: pending, but no selector bit and no upcall.
    set_bitmap_bit(&xen, 2560, own, true);
    assert_eq!(send_on(&mut xen, &env, sender), 0);
    assert!(bitmap_bit(&xen, 2048, own));
    assert_eq!(selector(&xen, &env, 0), 0);
    assert!(env.upcalls.borrow().is_empty());
    assert!(!xen.domain(D1).unwrap().upcall_pending(&env, 0));
    // Unmasking delivers it.
    let (ret, _) = evtchn_op(&mut xen, &env, EVTCHNOP_UNMASK, &own.to_le_bytes());
    assert_eq!(ret, 0);
    assert!(!bitmap_bit(&xen, 2560, own));
    assert_eq!(selector(&xen, &env, 0), 1 << (own / 64));
    assert_eq!(*env.upcalls.borrow(), [(D1, 0)]);

    // A bit at arm's mask offset (560) masks nothing on x86.
    set_bitmap_bit(&xen, 2048, own, false);
    acknowledge(&xen, &env, 0);
    set_bitmap_bit(&xen, SHINFO_EVTCHN_MASK, own, true);
    assert_eq!(send_on(&mut xen, &env, sender), 0);
    assert_eq!(selector(&xen, &env, 0), 1 << (own / 64));
    assert_eq!(*env.upcalls.borrow(), [(D1, 0)]);
}

#[test]
fn x86_vcpu1_info_is_at_offset_64_of_shared_info() {
    let env = TestEnv::new(&[D1], 16);
    let mut xen = x86_xen(&env);
    let d = xen.domain(D1).unwrap();
    let si = d.shared_info.frame();
    for (vcpu, off) in [(0, 0), (1, 64)] {
        assert_eq!(
            d.with_vcpu_info(&env, vcpu, |p, o| (p.frame(), o)),
            Some((si, off)),
            "vcpu {vcpu}"
        );
    }
    // On arm only vcpu 0 has a slot in shared_info.
    let arm = env.xen();
    assert_eq!(
        arm.domain(D1).unwrap().with_vcpu_info(&env, 1, |_, o| o),
        None
    );

    // An event for vcpu 1 lands in its slot, not in vcpu 0's.
    let (own, sender) = loopback(&mut xen, &env);
    set_bitmap_bit(&xen, 2048, sender, false);
    acknowledge(&xen, &env, 0);
    let mut to_vcpu1 = [0u8; 8];
    put_u32(&mut to_vcpu1, 0, own);
    put_u32(&mut to_vcpu1, 4, 1);
    assert_eq!(
        evtchn_op(&mut xen, &env, EVTCHNOP_BIND_VCPU, &to_vcpu1).0,
        0
    );
    assert_eq!(send_on(&mut xen, &env, sender), 0);
    let si = &xen.domain(D1).unwrap().shared_info;
    assert_eq!(si.load8(64 + VCPU_INFO_UPCALL_PENDING), 1);
    assert_eq!(si.load64(64 + VCPU_INFO_PENDING_SEL), 1 << (own / 64));
    assert_eq!(si.load8(VCPU_INFO_UPCALL_PENDING), 0);
    assert_eq!(si.load64(VCPU_INFO_PENDING_SEL), 0);
    assert_eq!(*env.upcalls.borrow(), [(D1, 1)]);
}

/// VCPUOP_register_vcpu_info for vcpu 0 at `offset` of RAM frame 5.
fn register_vcpu_info(xen: &mut Xen, env: &TestEnv, offset: u32) -> i64 {
    let a = TestEnv::addr(0, 0);
    let mut r = [0u8; REGISTER_VCPU_INFO_SIZE];
    put_u64(&mut r, 0, RAM_BASE_GFN + 5);
    put_u32(&mut r, 8, offset);
    env.poke(a, &r);
    call(
        xen,
        env,
        D1,
        HC_VCPU_OP,
        [VCPUOP_REGISTER_VCPU_INFO, 0, a, 0, 0],
    )
    .ret
}

#[test]
fn register_vcpu_info_keeps_the_whole_vcpu_info_in_the_page() {
    // x86: 64 bytes, so the last offset is 4096 - 64; arm64's 4048 is out.
    let env = TestEnv::new(&[D1], 16);
    let mut xen = x86_xen(&env);
    for off in [4096 - 64 + 8, 4096 - 48, 4096 - 8, 4096] {
        assert_eq!(
            register_vcpu_info(&mut xen, &env, off),
            EINVAL_RET,
            "x86 {off}"
        );
    }
    // What vcpu 0's slot held (up to its time info's last word) moves with it.
    let si = &xen.domain(D1).unwrap().shared_info;
    si.store64(56, 0x1122_3344_5566_7788);
    assert_eq!(register_vcpu_info(&mut xen, &env, 4096 - 64), 0);
    let d = xen.domain(D1).unwrap();
    let frame = env.ram_page(D1, RAM_BASE_GFN + 5).unwrap().frame();
    assert_eq!(
        d.with_vcpu_info(&env, 0, |p, o| (p.frame(), o)),
        Some((frame, 4096 - 64))
    );
    let page = env.ram_page(D1, RAM_BASE_GFN + 5).unwrap();
    assert_eq!(page.load64(4096 - 8), 0x1122_3344_5566_7788);

    // arm64: 48 bytes, so the last offset is 4096 - 48.
    let env = TestEnv::new(&[D1], 16);
    let mut xen = env.xen();
    for off in [4096 - 48 + 8, 4096 - 8, 4096] {
        assert_eq!(
            register_vcpu_info(&mut xen, &env, off),
            EINVAL_RET,
            "arm {off}"
        );
    }
    assert_eq!(register_vcpu_info(&mut xen, &env, 4096 - 48), 0);
}
