//! `mode=bench`: what a round trip through the hypervisor costs, in TSC
//! ticks per operation, against a CPUID exit measured in the same run (the
//! baseline: the cheapest exit hv-x86 handles completely).
//!
//! Under Bochs with `clock: sync=none` the TSC advances with emulated
//! instructions only, so the figures repeat exactly from run to run; they
//! count the hypervisor's instructions on each path, not real-hardware
//! VM-exit latency. One line per operation:
//! `x86guest: bench NAME TICKS ticks/op (RATIO x cpuid)`.

use crate::boot;
use crate::console::say;
use crate::hypercall::{self, HVM_PARAM_CALLBACK_IRQ, Xen};

/// Operations per measurement.
const ROUNDS: u64 = 256;

fn tsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads the time-stamp counter; no memory is touched.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Ticks per call of `op`, over [`ROUNDS`] calls (the loop's own cost is
/// a few instructions against hundreds per exit).
fn measure(mut op: impl FnMut()) -> u64 {
    op(); // warm: first-time paths (page walks, log lines) are not timed
    let start = tsc();
    for _ in 0..ROUNDS {
        op();
    }
    tsc().wrapping_sub(start) / ROUNDS
}

fn report(name: &str, ticks: u64, base: u64) {
    let ratio_x100 = ticks * 100 / base.max(1);
    say!(
        "x86guest: bench {name} {ticks} ticks/op ({}.{:02} x cpuid)",
        ratio_x100 / 100,
        ratio_x100 % 100
    );
}

/// Runs every measurement; `viridian` adds the Hyper-V MSR read.
pub fn run(xen: Xen, viridian: bool) {
    let base = measure(|| {
        let _ = boot::cpuid(0);
    });
    report("cpuid", base, base);
    report(
        "xen_version",
        measure(|| {
            let _ = xen.version();
        }),
        base,
    );
    report(
        "hvm_get_param",
        measure(|| {
            let _ = xen.get_param(HVM_PARAM_CALLBACK_IRQ);
        }),
        base,
    );
    // A port bound to itself and masked: the send runs the whole delivery
    // path but raises no upcall.
    let mapped = xen.add_to_physmap(
        hypercall::XENMAPSPACE_SHARED_INFO,
        0,
        &hypercall::SHARED_INFO,
    );
    if mapped == 0
        && let Ok(a) = xen.evtchn_alloc_unbound(hypercall::DOMID_SELF)
        && let Ok(b) = xen.evtchn_bind_interdomain(hypercall::DOMID_SELF, a)
        && hypercall::evtchn_mask(b).is_ok()
    {
        report(
            "evtchn_send",
            measure(|| {
                let _ = xen.evtchn_send(a);
            }),
            base,
        );
        xen.evtchn_close(a);
        xen.evtchn_close(b);
    } else {
        say!("x86guest: bench evtchn_send FAIL could not set up a masked loopback channel");
    }
    report(
        "port_out",
        measure(|| {
            // SAFETY: COM1's scratch register (0x3ff): the hypervisor's virtual
            // UART drops the write; no memory is involved.
            unsafe {
                core::arch::asm!("out dx, al", in("dx") 0x3ffu16, in("al") 0u8, options(nomem, nostack))
            };
        }),
        base,
    );
    if viridian {
        report(
            "viridian_rdmsr",
            measure(|| {
                let _ = boot::rdmsr(0x4000_0002);
            }),
            base,
        );
    }
}
