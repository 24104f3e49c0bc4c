//! The commands: serve, connect, bench, status-static.

use crate::proto::{self, DONE, HELLO, KIND_CLIENT, KIND_RO, KIND_RW, SharedPage, off};
use crate::stats::{mbps, summarize};
use crate::sys::{Mapping, SysErr, errno_name, now_ns};
use crate::xen::{self, DOMID_SELF, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND};
use crate::xendev::{Evtchn, Gntalloc, Gntdev, Privcmd};

/// How long the server waits for a client to say hello.
const CONNECT_TIMEOUT_MS: i32 = 600_000;
/// How long the server waits for the next event once a client is there.
const IDLE_TIMEOUT_MS: i32 = 60_000;
/// How long the client waits for one pong.
const PONG_TIMEOUT_MS: u64 = 10_000;
/// A grant reference beyond any grant table.
const BAD_GREF: u32 = 0xffff_fff0;
/// A port number the client has not allocated (Xen allocates from 1 up).
const UNALLOCATED_PORT: u32 = 4000;
/// Guest-physical address handed to the raw GNTTABOP_map_grant_ref with a
/// bad reference: never used, since the reference check fails first (and
/// outside the guest's RAM should a broken hypervisor map it anyway).
const UNUSED_GPA: u64 = 0x40_0000_0000;
/// Timed round trips of the gntdev map benchmark.
const MAP_BENCH_COUNT: usize = 1000;
/// Copies of the grant-copy benchmark.
const COPY_BENCH_COUNT: usize = 1000;
/// Calls of the privcmd benchmarks.
const CALL_BENCH_COUNT: usize = 10_000;

/// Prints one result line for the harness.
fn xt(line: impl AsRef<str>) {
    println!("XT: {}", line.as_ref());
}

fn s(e: SysErr) -> String {
    e.to_string()
}

fn ok_fail(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAIL" }
}

// ------------------------------------------------------------------ serve

/// `serve <peer>`: exit status.
pub fn serve(peer: u16) -> i32 {
    match serve_inner(peer) {
        Ok(()) => {
            xt("serve ok");
            0
        }
        Err(why) => {
            xt(format!("serve FAIL {why}"));
            1
        }
    }
}

fn serve_inner(peer: u16) -> Result<(), String> {
    let ev = Evtchn::open().map_err(s)?;
    let port = ev.bind_unbound(peer).map_err(s)?;
    let ga = Gntalloc::open().map_err(s)?;
    let (rw_index, rw_gref) = ga.alloc(peer, true).map_err(s)?;
    let (ro_index, ro_gref) = ga.alloc(peer, false).map_err(s)?;
    let rw_map = ga.mmap(rw_index).map_err(s)?;
    let ro_map = ga.mmap(ro_index).map_err(s)?;
    // SAFETY: each mapping is one writable, page-aligned page that lives
    // until the end of this function, past every use of the SharedPage.
    let (rw, ro) = unsafe { (SharedPage::new(rw_map.ptr()), SharedPage::new(ro_map.ptr())) };
    rw.init_server(peer, KIND_RW);
    ro.init_server(peer, KIND_RO);
    xt(format!("serve port={port} rw={rw_gref} ro={ro_gref}"));

    let result = answer(&ev, port, peer, &rw);

    let mut cleanup = Vec::new();
    for m in [rw_map, ro_map] {
        if let Err(e) = m.unmap() {
            cleanup.push(s(e));
        }
    }
    for index in [rw_index, ro_index] {
        if let Err(e) = ga.dealloc(index) {
            cleanup.push(s(e));
        }
    }
    if let Err(e) = ev.unbind(port) {
        cleanup.push(s(e));
    }
    result?;
    if cleanup.is_empty() {
        Ok(())
    } else {
        Err(format!("cleanup: {}", cleanup.join("; ")))
    }
}

/// Answers pings until the client is done; checks what it wrote.
fn answer(ev: &Evtchn, port: u32, peer: u16, rw: &SharedPage) -> Result<(), String> {
    let (mut last, mut answered, mut events, mut spurious) = (0u32, 0u32, 0u64, 0u64);
    loop {
        let hello = rw.load(off::HELLO) == HELLO;
        let timeout = if hello {
            IDLE_TIMEOUT_MS
        } else {
            CONNECT_TIMEOUT_MS
        };
        let Some(ports) = ev.wait(timeout).map_err(s)? else {
            return Err(if hello {
                format!(
                    "no event for {} s after {answered} pings",
                    IDLE_TIMEOUT_MS / 1000
                )
            } else {
                format!("no client within {} s", CONNECT_TIMEOUT_MS / 1000)
            });
        };
        if !ports.contains(&port) {
            return Err(format!("event on ports {ports:?}, not on {port}"));
        }
        events += 1;
        let ping = rw.load(off::PING);
        if ping != last {
            if ping != last.wrapping_add(1) {
                return Err(format!("ping went from {last} to {ping}"));
            }
            last = ping;
            rw.store(off::PONG, ping);
            answered += 1;
            ev.notify(port).map_err(s)?;
        } else if rw.load(off::DONE) != DONE {
            spurious += 1;
        }
        if rw.load(off::DONE) == DONE {
            break;
        }
    }
    xt(format!(
        "serve events={events} spurious={spurious} answered={answered}"
    ));
    let total = rw.load(off::TOTAL);
    if total != answered {
        return Err(format!(
            "the client sent {total} pings, {answered} were answered"
        ));
    }
    rw.check_body(peer, KIND_CLIENT)
        .map_err(|e| format!("the client's bytes in the rw page: {e}"))
}

// ------------------------------------------------------------ the client

/// The client's end of the ping-pong.
struct Link {
    ev: Evtchn,
    local: u32,
    page: SharedPage,
    seq: u32,
    spurious: u64,
}

impl Link {
    /// One ping and its pong: nanoseconds from the notify to seeing the
    /// pong.
    fn round_trip(&mut self) -> Result<u64, String> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let t0 = now_ns();
        self.page.store(off::PING, seq);
        self.ev.notify(self.local).map_err(s)?;
        let deadline = t0 + PONG_TIMEOUT_MS * 1_000_000;
        loop {
            let pong = self.page.load(off::PONG);
            if pong == seq {
                return Ok(now_ns() - t0);
            }
            let now = now_ns();
            if now >= deadline {
                return Err(format!(
                    "no pong {seq} within {PONG_TIMEOUT_MS} ms (pong is {pong})"
                ));
            }
            let left = ((deadline - now) / 1_000_000).max(1) as i32;
            if self.ev.wait(left).map_err(s)?.is_some() && self.page.load(off::PONG) != seq {
                self.spurious += 1;
            }
        }
    }

    /// `n` timed round trips: the samples.
    fn round_trips(&mut self, n: u32) -> Result<Vec<u64>, String> {
        (0..n).map(|_| self.round_trip()).collect()
    }

    /// Tells the server the client is finished.
    fn finish(&self) -> Result<(), String> {
        self.page.store(off::TOTAL, self.seq);
        self.page.store(off::DONE, DONE);
        self.ev.notify(self.local).map_err(s)
    }
}

/// Binds to the server's port and maps its rw grant (checking it): the
/// link after the handshake round trip, with the rw mapping.
fn attach(
    ev: Evtchn,
    gd: &Gntdev,
    peer: u16,
    port: u32,
    rw_gref: u32,
) -> Result<(Link, u64, Mapping), String> {
    let local = ev.bind_interdomain(peer, port).map_err(s)?;
    let rw_index = gd.map_grant(peer, rw_gref).map_err(s)?;
    let rw_map = match gd.mmap(rw_index, libc::PROT_READ | libc::PROT_WRITE) {
        Ok(m) => m,
        Err(e) => {
            let _ = gd.unmap_grant(rw_index);
            return Err(s(e));
        }
    };
    // SAFETY: the mapping is one writable, page-aligned page; every Link
    // use ends before the caller unmaps it.
    let page = unsafe { SharedPage::new(rw_map.ptr()) };
    let me = page
        .check_server(KIND_RW)
        .map_err(|e| format!("rw page {rw_gref} of domain {peer}: {e}"))?;
    xt(format!(
        "mapped rw gref={rw_gref} local_port={local} granted_to={me} ok"
    ));
    page.fill_body(me, KIND_CLIENT);
    page.store(off::HELLO, HELLO);
    let mut link = Link {
        ev,
        local,
        page,
        seq: page.load(off::PING),
        spurious: 0,
    };
    link.round_trip().map_err(|e| format!("handshake: {e}"))?;
    Ok((link, rw_index, rw_map))
}

/// Failures collected along the way.
#[derive(Default)]
struct Verdict(Vec<String>);

impl Verdict {
    fn fail(&mut self, what: impl Into<String>) {
        self.0.push(what.into());
    }

    fn line(&self, cmd: &str) -> i32 {
        if self.0.is_empty() {
            xt(format!("{cmd} ok"));
            0
        } else {
            xt(format!("{cmd} FAIL {}", self.0.join("; ")));
            1
        }
    }
}

/// Prints a refusal line: `XT: refuse <what> errno=<n> (<name>) ok|FAIL`.
fn refusal(v: &mut Verdict, what: &str, errno: i32, ok: bool, note: &str) {
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(" {note}")
    };
    xt(format!(
        "refuse {what} errno={errno} ({}) {}{note}",
        errno_name(errno),
        ok_fail(ok)
    ));
    if !ok {
        v.fail(format!("refuse {what}"));
    }
}

/// Maps `gref` of `peer` through gntdev with `prot`, expecting a refusal
/// somewhere: which call refused and with which errno.
fn refuse_gntdev_map(v: &mut Verdict, gd: &Gntdev, what: &str, peer: u16, gref: u32, prot: i32) {
    let index = match gd.map_grant(peer, gref) {
        Ok(i) => i,
        Err(e) => return refusal(v, &format!("{what}@ioctl"), e.errno, true, ""),
    };
    match gd.mmap(index, prot) {
        Err(e) => refusal(v, &format!("{what}@mmap"), e.errno, true, ""),
        Ok(m) => {
            refusal(v, &format!("{what}@mmap"), 0, false, "mapped");
            if let Err(e) = m.unmap() {
                v.fail(s(e));
            }
        }
    }
    if let Err(e) = gd.unmap_grant(index) {
        xt(format!("note {what}: {e}"));
        v.fail(s(e));
    }
}

/// The privcmd refusals (and the controls showing privcmd works).
fn refuse_privcmd(v: &mut Verdict, pc: &Privcmd, peer: u16, port: u32, local: u32) {
    // Controls: hypercalls that must work, so a refusal below is the
    // hypervisor's and not a restricted privcmd file's.
    match pc.xen_version() {
        Ok(ver) if ver > 0 => xt(format!(
            "control xen_version={}.{} ok",
            ver >> 16,
            ver & 0xffff
        )),
        Ok(ver) => {
            xt(format!("control xen_version={ver:#x} FAIL"));
            v.fail("xen_version");
        }
        Err(e) => {
            let why = if e.errno == libc::EPERM {
                " (privcmd restricted: load xen-privcmd with unrestricted=1)"
            } else {
                ""
            };
            xt(format!("control xen_version FAIL {e}{why}"));
            v.fail("xen_version");
        }
    }
    match pc.evtchn_status(DOMID_SELF, local) {
        Ok(st) => {
            let ok = st.status == EVTCHNSTAT_INTERDOMAIN
                && st.remote_dom == peer
                && st.remote_port == port;
            xt(format!(
                "control evtchn_status_self port={local} status={} remote_dom={} remote_port={} {}",
                st.status,
                st.remote_dom,
                st.remote_port,
                ok_fail(ok)
            ));
            if !ok {
                v.fail("evtchn_status of the own port");
            }
        }
        Err(e) => {
            xt(format!("control evtchn_status_self port={local} FAIL {e}"));
            v.fail("evtchn_status of the own port");
        }
    }
    // An event the server counts as spurious.
    match pc.evtchn_send(local) {
        Ok(()) => xt(format!("control evtchn_send_own port={local} ok")),
        Err(e) => {
            xt(format!("control evtchn_send_own port={local} FAIL {e}"));
            v.fail("EVTCHNOP_send on the own port");
        }
    }

    // c) Another domain's port: Xen's XSM_TARGET check answers -EPERM
    //    (after checking the port exists: -EINVAL otherwise).
    match pc.evtchn_status(peer, port) {
        Err(e) => refusal(
            v,
            "evtchn_status_peer",
            e.errno,
            e.errno == libc::EPERM,
            "expect=EPERM",
        ),
        Ok(st) => refusal(
            v,
            "evtchn_status_peer",
            0,
            false,
            &format!("status={} expect=EPERM", st.status),
        ),
    }
    // c) A port this domain never allocated: -EINVAL (evtchn_send: not a
    //    valid port, or a free one).
    match pc.evtchn_send(UNALLOCATED_PORT) {
        Err(e) => refusal(
            v,
            "evtchn_send_unallocated",
            e.errno,
            e.errno == libc::EINVAL,
            &format!("port={UNALLOCATED_PORT} expect=EINVAL"),
        ),
        Ok(()) => refusal(
            v,
            "evtchn_send_unallocated",
            0,
            false,
            &format!("port={UNALLOCATED_PORT} expect=EINVAL"),
        ),
    }
    // d) GNTTABOP_map_grant_ref of a bad reference: the hypercall succeeds
    //    and the op's status is GNTST_bad_gntref.
    let flags = xen::GNTMAP_HOST_MAP | xen::GNTMAP_READONLY;
    match pc.gnttab_map(peer, BAD_GREF, UNUSED_GPA, flags) {
        Ok(op) => {
            let ok = op.status == xen::GNTST_BAD_GNTREF;
            xt(format!(
                "refuse gnttab_map_bad_gref status={} ({}) {}",
                op.status,
                xen::gntst_name(op.status),
                ok_fail(ok)
            ));
            if !ok {
                v.fail("refuse gnttab_map_bad_gref");
            }
            if op.status == xen::GNTST_OKAY {
                match pc.gnttab_unmap(UNUSED_GPA, op.handle) {
                    Ok(st) => xt(format!(
                        "note unmapped the wrongly mapped grant: status={st}"
                    )),
                    Err(e) => xt(format!("note unmap of the wrongly mapped grant: {e}")),
                }
            }
        }
        Err(e) => {
            xt(format!(
                "refuse gnttab_map_bad_gref status=none (hypercall {e}) FAIL"
            ));
            v.fail("refuse gnttab_map_bad_gref");
        }
    }
}

/// `connect <peer> <port> <rw> <ro> [count]`: exit status.
pub fn connect(peer: u16, port: u32, rw_gref: u32, ro_gref: u32, count: u32) -> i32 {
    let mut v = Verdict::default();
    if let Err(why) = connect_inner(&mut v, peer, port, rw_gref, ro_gref, count) {
        v.fail(why);
    }
    v.line("connect")
}

fn connect_inner(
    v: &mut Verdict,
    peer: u16,
    port: u32,
    rw_gref: u32,
    ro_gref: u32,
    count: u32,
) -> Result<(), String> {
    let ev = Evtchn::open().map_err(s)?;
    let gd = Gntdev::open().map_err(s)?;
    let (mut link, rw_index, rw_map) = attach(ev, &gd, peer, port, rw_gref)?;

    // The read-only grant, mapped read-only.
    let ro_index = gd.map_grant(peer, ro_gref).map_err(s)?;
    let ro_map = gd.mmap(ro_index, libc::PROT_READ).map_err(s)?;
    // SAFETY: a readable page-aligned page, alive until unmapped below;
    // nothing is stored through this SharedPage.
    let ro = unsafe { SharedPage::new(ro_map.ptr()) };
    match ro.check_server(KIND_RO) {
        Ok(_) => xt(format!("mapped ro gref={ro_gref} ok")),
        Err(e) => v.fail(format!("ro page {ro_gref}: {e}")),
    }

    let mut samples = link.round_trips(count)?;
    let sum = summarize(&mut samples);
    xt(format!(
        "pingpong n={} median_ns={} p90_ns={} min_ns={}",
        sum.n, sum.median, sum.p90, sum.min
    ));
    xt(format!(
        "info max_ns={} spurious_events={}",
        sum.max, link.spurious
    ));

    // a) A grant reference the peer never issued.
    refuse_gntdev_map(v, &gd, "bad_gref", peer, BAD_GREF, libc::PROT_READ);
    // b) The read-only grant mapped writable.
    refuse_gntdev_map(
        v,
        &gd,
        "ro_write",
        peer,
        ro_gref,
        libc::PROT_READ | libc::PROT_WRITE,
    );
    // c, d) Through privcmd.
    match Privcmd::open() {
        Ok(pc) => refuse_privcmd(v, &pc, peer, port, link.local),
        Err(e) => {
            xt(format!("control privcmd FAIL {e}"));
            v.fail("privcmd");
        }
    }

    // Still alive after all that?
    alive_and_close(v, &mut link, &gd, [(rw_map, rw_index), (ro_map, ro_index)]);
    Ok(())
}

/// One more round trip (`XT: alive`), then the end of the session: the
/// server told we are done, the mapped pages unmapped and their gntdev
/// grants released, the channel end unbound. Failures go to `v`.
fn alive_and_close(
    v: &mut Verdict,
    link: &mut Link,
    gd: &Gntdev,
    maps: impl IntoIterator<Item = (Mapping, u64)>,
) {
    match link.round_trip() {
        Ok(ns) => xt(format!("alive ok ns={ns}")),
        Err(e) => {
            xt(format!("alive FAIL {e}"));
            v.fail("alive");
        }
    }
    if let Err(e) = link.finish() {
        v.fail(format!("done: {e}"));
    }
    for (m, index) in maps {
        if let Err(e) = m.unmap() {
            v.fail(s(e));
        }
        if let Err(e) = gd.unmap_grant(index) {
            v.fail(s(e));
        }
    }
    if let Err(e) = link.ev.unbind(link.local) {
        v.fail(s(e));
    }
}

// ------------------------------------------------------------------ bench

/// Times `n` calls of `f` (each must succeed): the samples.
/// Samples in ns, or why there are none.
type Times = Result<Vec<u64>, String>;

/// MAP_BENCH_COUNT raw map/unmap pairs of `gref` of `peer` at
/// [`UNUSED_GPA`]: (map times, unmap times), or the first failure.
fn raw_map_times(pc: &Privcmd, peer: u16, gref: u32) -> (Times, Times) {
    let flags = xen::GNTMAP_HOST_MAP | xen::GNTMAP_READONLY;
    let mut maps = Vec::with_capacity(MAP_BENCH_COUNT);
    let mut unmaps = Vec::with_capacity(MAP_BENCH_COUNT);
    for _ in 0..MAP_BENCH_COUNT {
        let t0 = now_ns();
        let op = match pc.gnttab_map(peer, gref, UNUSED_GPA, flags) {
            Ok(op) => op,
            Err(e) => return (Err(e.to_string()), Err("map failed".into())),
        };
        let t1 = now_ns();
        if op.status != xen::GNTST_OKAY {
            let e = format!("map status {} ({})", op.status, xen::gntst_name(op.status));
            return (Err(e), Err("map failed".into()));
        }
        let st = match pc.gnttab_unmap(UNUSED_GPA, op.handle) {
            Ok(st) => st,
            Err(e) => return (Ok(maps), Err(e.to_string())),
        };
        let t2 = now_ns();
        if st != xen::GNTST_OKAY {
            return (Ok(maps), Err(format!("unmap status {st}")));
        }
        maps.push(t1 - t0);
        unmaps.push(t2 - t1);
    }
    (Ok(maps), Ok(unmaps))
}

/// MAP_BENCH_COUNT gntdev map/unmap cycles of `gref` of `peer`: the map
/// half, the unmap half and the whole cycle of each. A failure ends all
/// three series.
fn gntdev_map_times(gd: &Gntdev, peer: u16, gref: u32) -> (Times, Times, Times) {
    let mut maps = Vec::with_capacity(MAP_BENCH_COUNT);
    let mut unmaps = Vec::with_capacity(MAP_BENCH_COUNT);
    let mut run = || -> Result<(), String> {
        for _ in 0..MAP_BENCH_COUNT {
            let t0 = now_ns();
            let index = gd.map_grant(peer, gref).map_err(s)?;
            let m = gd.mmap(index, libc::PROT_READ).map_err(s)?;
            // SAFETY: the mapping is one readable, page-aligned page.
            let magic = unsafe { SharedPage::new(m.ptr()) }.load(off::MAGIC);
            let t1 = now_ns();
            m.unmap().map_err(s)?;
            gd.unmap_grant(index).map_err(s)?;
            let t2 = now_ns();
            if magic != proto::MAGIC {
                return Err(format!("mapped page has magic {magic:#x}"));
            }
            maps.push(t1 - t0);
            unmaps.push(t2 - t1);
        }
        Ok(())
    };
    if let Err(e) = run() {
        return (Err(e.clone()), Err(e.clone()), Err(e));
    }
    let cycles = maps.iter().zip(&unmaps).map(|(a, b)| a + b).collect();
    (Ok(maps), Ok(unmaps), Ok(cycles))
}

fn time_each(n: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = now_ns();
        f()?;
        out.push(now_ns() - t0);
    }
    Ok(out)
}

fn bench_line(
    v: &mut Verdict,
    name: &str,
    r: Result<Vec<u64>, String>,
    extra: impl Fn(u64) -> String,
) {
    match r {
        Ok(mut samples) => {
            let sum = summarize(&mut samples);
            xt(format!(
                "bench {name} median_ns={}{}",
                sum.median,
                extra(sum.total)
            ));
        }
        Err(e) => {
            xt(format!("bench {name} FAIL {e}"));
            v.fail(name);
        }
    }
}

/// A page-aligned page buffer.
#[repr(C, align(4096))]
struct PageBuf([u8; proto::PAGE]);

/// `bench <peer> <port> <rw> [count]`: exit status.
pub fn bench(peer: u16, port: u32, rw_gref: u32, count: u32) -> i32 {
    let mut v = Verdict::default();
    if let Err(why) = bench_inner(&mut v, peer, port, rw_gref, count) {
        v.fail(why);
    }
    v.line("bench")
}

fn bench_inner(
    v: &mut Verdict,
    peer: u16,
    port: u32,
    rw_gref: u32,
    count: u32,
) -> Result<(), String> {
    let ev = Evtchn::open().map_err(s)?;
    let gd = Gntdev::open().map_err(s)?;
    let pc = Privcmd::open().map_err(s)?;
    let (mut link, rw_index, rw_map) = attach(ev, &gd, peer, port, rw_gref)?;
    let no_extra = |_| String::new();

    // (1) An ioctl that stops in privcmd.
    let r = time_each(CALL_BENCH_COUNT, || pc.unknown_ioctl().map_err(s));
    bench_line(v, "privcmd_ioctl", r, no_extra);
    // (2) The null hypercall.
    let r = time_each(CALL_BENCH_COUNT, || pc.xen_version().map(drop).map_err(s));
    bench_line(v, "null_hypercall", r, no_extra);
    // (3) Event-channel round trips.
    let r = link.round_trips(count);
    bench_line(v, "evtchn_roundtrip", r, no_extra);
    // (4) gntdev, timed in two halves: map (IOCTL_GNTDEV_MAP_GRANT_REF,
    //     mmap, which makes the hypercall, and a first read) and unmap
    //     (munmap and IOCTL_GNTDEV_UNMAP_GRANT_REF, which makes the
    //     unmap hypercall), plus the whole cycle.
    let (maps, unmaps, cycles) = gntdev_map_times(&gd, peer, rw_gref);
    bench_line(v, "gntdev_map", maps, no_extra);
    bench_line(v, "gntdev_unmap", unmaps, no_extra);
    bench_line(v, "gntdev_cycle", cycles, no_extra);
    // (4b) Raw GNTTABOP_map_grant_ref and unmap_grant_ref of the same
    //      grant through privcmd, at a guest-physical address Linux does
    //      not use (the top of the extended region), timed apart.
    let (maps, unmaps) = raw_map_times(&pc, peer, rw_gref);
    bench_line(v, "raw_map", maps, no_extra);
    bench_line(v, "raw_unmap", unmaps, no_extra);
    // (5) Grant copy of the peer's page into a local one.
    let mut buf = Box::new(PageBuf([0; proto::PAGE]));
    let mut first = true;
    let r = time_each(COPY_BENCH_COUNT, || {
        let st = gd.copy_from_grant(peer, rw_gref, &mut buf.0).map_err(s)?;
        if st != xen::GNTST_OKAY {
            return Err(format!("segment status {st} ({})", xen::gntst_name(st)));
        }
        if first {
            first = false;
            // SAFETY: `buf` is a page-aligned PAGE-byte buffer alive for
            // this check.
            let copy = unsafe { SharedPage::new(buf.0.as_mut_ptr()) };
            copy.check_body(link.page.load(off::GRANTED_TO) as u16, KIND_CLIENT)
                .map_err(|e| format!("copied bytes: {e}"))?;
        }
        Ok(())
    });
    let bytes = (proto::PAGE * COPY_BENCH_COUNT) as u64;
    bench_line(v, "grant_copy", r, |total| {
        format!(" mbps={}", mbps(bytes, total))
    });

    alive_and_close(v, &mut link, &gd, [(rw_map, rw_index)]);
    Ok(())
}

// ---------------------------------------------------------- status-static

/// `status-static <port>...`: exit status.
pub fn status_static(ports: &[u32]) -> i32 {
    let pc = match Privcmd::open() {
        Ok(pc) => pc,
        Err(e) => {
            xt(format!("static FAIL {e}"));
            return 1;
        }
    };
    let mut rc = 0;
    for &port in ports {
        match pc.evtchn_status(DOMID_SELF, port) {
            Ok(st) => {
                let (dom, rport) = match st.status {
                    EVTCHNSTAT_INTERDOMAIN => (st.remote_dom, st.remote_port),
                    EVTCHNSTAT_UNBOUND => (st.remote_dom, 0),
                    _ => (0, 0),
                };
                xt(format!(
                    "static port={port} status={} remote_dom={dom} remote_port={rport}",
                    st.status
                ));
            }
            Err(e) => {
                xt(format!(
                    "static port={port} FAIL errno={} ({})",
                    e.errno,
                    errno_name(e.errno)
                ));
                rc = 1;
            }
        }
    }
    rc
}
