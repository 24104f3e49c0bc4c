//! x86guest: a small bare-metal guest that checks, from the inside, what
//! hv-x86 promises an x86 domain: it starts in real mode, reaches long
//! mode, checks CPUID and the viridian MSRs against the mask it is told to
//! expect, makes Xen-ABI hypercalls (an event channel sent to itself, a
//! grant copy) and provokes the faults a domain must get back as
//! exceptions.
//!
//! The contract with hv-x86 (fixed; both sides are written against it):
//! - Guest RAM is guest-physical 0..N (N >= 4 MiB, 16 MiB by default). The
//!   image is an ELF64 x86-64 ET_EXEC whose PT_LOAD segments the hypervisor
//!   copies to their p_paddr: one segment from 0x8000, ending below
//!   0x9F000; e_entry < 0x10000 (linker.ld).
//! - Start state: real mode (CR0.PE = PG = 0), CS = DS = ES = SS = FS = GS
//!   = 0 with bases 0, IP = e_entry, EFLAGS = 0x2, EAX = 0x36385648
//!   ("HV86"), EBX = guest-physical address of the NUL-terminated command
//!   line (<= 255 bytes), other registers undefined, no stack. The guest
//!   brings its own GDT, page tables (the first 4 GiB identity-mapped in
//!   2 MiB pages, so addresses above RAM are reachable), IDT and stack.
//! - Console: a 16550 at I/O ports 0x3F8..0x3FF (LSR bit 5 reads set);
//!   the hypervisor prefixes each line with "(dN) ". One line per check,
//!   `x86guest: <name> ok` or `x86guest: <name> FAIL <details>`, then
//!   `x86guest: PASS` or `x86guest: FAIL <count>`, then
//!   SCHEDOP_shutdown(SHUTDOWN_poweroff). Other lines are information.
//! - Command line, space-separated tokens: `expect=<mask>` (decimal or
//!   0x-hex; missing = 0) is the HVM_PARAM_VIRIDIAN value this domain is
//!   expected to have (1 = base+freq, 2 = no_freq, 4 = time_ref_count; 0 =
//!   viridian off). `mode=triple` makes the guest print `x86guest:
//!   triple-faulting now` once in long mode and triple-fault: the
//!   hypervisor must crash this domain only. Other tokens are ignored.
//! - Hypercalls are Xen's x86 HVM ABI: Xen's CPUID leaves are found by
//!   signature (at 0x40000100 when viridian holds 0x40000000), the
//!   hypercall page is placed through the MSR of leaf base+2, call N is at
//!   page + 32 * N with arguments in rdi, rsi, rdx, r10, r8 and the result
//!   (negative errno on failure) in rax. Event-channel upcalls arrive on
//!   the vector set with HVM_PARAM_CALLBACK_IRQ (type 2), injected when
//!   vcpu_info.evtchn_upcall_pending is set and IF = 1, no EOI needed.
//! - An access to guest-physical memory nothing is mapped at raises #GP(0)
//!   in the guest; a read of an unassigned I/O port returns all ones.
//!
//! Every wait is bounded, every hypervisor-filled page is checked before
//! the guest jumps into it, and an exception nobody asked for is reported
//! (and ends the run), so a broken hypervisor gives FAIL lines, not a hang.
#![no_std]
#![no_main]

mod bench;
mod boot;
mod console;
mod hypercall;

use core::fmt;
use core::sync::atomic::Ordering::{Relaxed, SeqCst};
use core::sync::atomic::{AtomicBool, AtomicU32, fence};

use boot::{Fault, UPCALL_VECTOR, VECTOR_GP, VECTOR_UD};
use console::{Findings, Msg, msg, say};
use hypercall::{
    DOMID_SELF, EFAULT, EINVAL, ENOSYS, EPERM, GNTCOPY_SOURCE_GREF, GNTST_BAD_GNTREF, GNTST_OKAY,
    GTF_PERMIT_ACCESS, GnttabCopy, GnttabCopyPtr, HVM_PARAM_CALLBACK_IRQ,
    HVM_PARAM_CALLBACK_TYPE_VECTOR, HVM_PARAM_VIRIDIAN, Page, SHUTDOWN_POWEROFF, Viridian,
    XENMAPSPACE_GRANT_TABLE, XENMAPSPACE_SHARED_INFO, XENVER_EXTRAVERSION, Xen, XenLeaves,
};

/// Checks that failed (and unexpected exceptions, and a panic).
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Prints a check's line; the value on success.
fn check<T>(name: &str, result: Result<T, Msg>) -> Option<T> {
    match result {
        Ok(v) => {
            say!("x86guest: {name} ok");
            Some(v)
        }
        Err(m) => {
            FAILED.fetch_add(1, Relaxed);
            say!("x86guest: {name} FAIL {m}");
            None
        }
    }
}

/// `Err` with the message unless `cond`.
fn ensure(cond: bool, m: impl FnOnce() -> Msg) -> Result<(), Msg> {
    if cond { Ok(()) } else { Err(m()) }
}

/// Called by boot.rs in long mode with what the hypervisor handed over.
extern "C" fn guest_main(entry_eax: u32, entry_ebx: u32, entry_cr0: u32, entry_eflags: u32) -> ! {
    say!(
        "x86guest: in long mode; at entry eax {entry_eax:#x} ebx {entry_ebx:#x} \
         cr0 {entry_cr0:#x} eflags {entry_eflags:#x}"
    );
    let line = read_cmdline(u64::from(entry_ebx));
    if let Ok(line) = &line {
        say!("x86guest: command line \"{line}\"");
    }
    let options = line.and_then(|l| parse_cmdline(l.as_bytes()));
    check(
        "boot",
        boot_state(entry_eax, entry_cr0, entry_eflags, &options),
    );
    let options = options.unwrap_or_default();
    check("long-mode", long_mode());
    check("idt", idt());
    if options.triple {
        triple_fault_now();
    }

    check("cpuid", cpuid_leaf1());
    let mask = options.expect;
    check("viridian-cpuid", viridian_cpuid(mask));
    if mask == 0 {
        check("viridian-msrs", viridian_absent());
    } else {
        check("viridian-msrs", viridian_msrs());
        check("viridian-hypercall", viridian_hypercall());
        check("viridian-freq", viridian_freq(mask));
        check("viridian-time-ref", viridian_time_ref(mask));
    }

    let leaves = hypercall::find_xen_leaves();
    check("xen-cpuid", xen_cpuid(leaves, mask != 0));
    let placed = leaves.map_or_else(|| Err(msg!("no Xen leaves")), |l| Xen::install(l.msr));
    let xen = check("hypercall-page", placed);
    match xen {
        Some(xen) if options.bench => bench::run(xen, mask != 0),
        Some(xen) => {
            check("xen-version", xen_version(xen));
            check("refusals", refusals(xen, mask));
            check("evtchn-self", evtchn_self(xen));
            check("grant-copy", grant_copy(xen, leaves.and_then(|l| l.domid)));
        }
        None => {
            for name in ["xen-version", "refusals", "evtchn-self", "grant-copy"] {
                check::<()>(name, Err(msg!("no hypercall page")));
            }
        }
    }
    check("hostile", hostile());
    check("ept-fault", ept_fault());
    check("io-unknown", io_unknown());
    finish();
}

/// The verdict, then SCHEDOP_shutdown(poweroff). Without a hypercall page
/// there is no shutdown: a triple fault ends the domain instead, so a
/// harness does not wait on a halted vCPU.
fn finish() -> ! {
    match FAILED.load(SeqCst) {
        0 => say!("x86guest: PASS"),
        n => say!("x86guest: FAIL {n}"),
    }
    match Xen::get() {
        Some(xen) => {
            xen.shutdown(SHUTDOWN_POWEROFF);
            say!("x86guest: shutdown returned");
        }
        None => {
            say!("x86guest: no hypercall page to shut down with: triple-faulting");
            boot::triple_fault();
        }
    }
    boot::halt_forever()
}

/// Set by the first fatal path. A second one (a fault while reporting,
/// or in the shutdown call) ends the domain by triple fault: the vCPU
/// must not sit halted with a harness waiting on it.
static DYING: AtomicBool = AtomicBool::new(false);

fn die_again() -> ! {
    boot::triple_fault();
    boot::halt_forever()
}

/// An exception nothing armed a recovery for (boot.rs, IF clear).
extern "C" fn unexpected_exception(vector: u64, error: u64, rip: u64, cr2: u64) -> ! {
    if DYING.swap(true, SeqCst) {
        die_again();
    }
    FAILED.fetch_add(1, SeqCst);
    say!(
        "x86guest: exception FAIL unexpected vector {vector} ({}) error {error:#x} \
         rip {rip:#x} cr2 {cr2:#x}",
        boot::vector_name(vector)
    );
    finish()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    boot::interrupts_off();
    if DYING.swap(true, SeqCst) {
        die_again();
    }
    FAILED.fetch_add(1, SeqCst);
    // Through Msg: the message stays on one line, printable.
    let what = msg!("{}", info.message());
    match info.location() {
        Some(at) => say!("x86guest: panic FAIL {what} at {}:{}", at.file(), at.line()),
        None => say!("x86guest: panic FAIL {what}"),
    }
    finish()
}

// ------------------------------------------------------------ the command line

/// "HV86" in EAX at entry.
const ENTRY_MAGIC: u32 = 0x3638_5648;
/// EFLAGS at entry: only the always-one bit 1.
const ENTRY_EFLAGS: u32 = 0x2;
const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
/// The command line is read only from RAM every domain has (N >= 4 MiB).
const LOW_RAM_END: u64 = 4 << 20;
/// 255 bytes and the NUL.
const CMDLINE_MAX: usize = 256;

unsafe extern "C" {
    /// The image's bounds (linker.ld): its code, data, bss and stack.
    safe static x86guest_image_start: u8;
    safe static x86guest_image_end: u8;
}

/// Why the command line could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmdlineError {
    /// EBX was 0.
    Null,
    /// A byte before the NUL lies at or above 4 MiB.
    OutsideLowRam(u64),
    /// A byte before the NUL lies in this image.
    InImage(u64),
    /// No NUL within 256 bytes.
    Unterminated,
    /// `expect=` with no number (or one that does not fit 64 bits).
    BadExpect,
    /// `expect=` given twice.
    ExpectTwice,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => write!(f, "command line address (EBX) is 0"),
            Self::OutsideLowRam(a) => write!(f, "command line byte at {a:#x} is above 4 MiB"),
            Self::InImage(a) => write!(f, "command line byte at {a:#x} is inside the image"),
            Self::Unterminated => write!(f, "command line has no NUL within 256 bytes"),
            Self::BadExpect => write!(f, "expect= is not a decimal or 0x-hex number"),
            Self::ExpectTwice => write!(f, "expect= given twice"),
        }
    }
}

/// The command line, copied out of guest memory.
struct CommandLine {
    bytes: [u8; CMDLINE_MAX],
    len: usize,
}

impl CommandLine {
    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

/// Shows the first 100 bytes, anything unprintable as `?`.
impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 100;
        for &b in self.as_bytes().iter().take(SHOWN) {
            let c = if b == b' ' || b.is_ascii_graphic() {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        if self.len > SHOWN {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// Copies the NUL-terminated line at `addr`, every byte checked to lie in
/// low RAM and outside the image before it is read.
fn read_cmdline(addr: u64) -> Result<CommandLine, CmdlineError> {
    if addr == 0 {
        return Err(CmdlineError::Null);
    }
    let image = (&raw const x86guest_image_start) as u64..(&raw const x86guest_image_end) as u64;
    let mut line = CommandLine {
        bytes: [0; CMDLINE_MAX],
        len: 0,
    };
    for (i, slot) in line.bytes.iter_mut().enumerate() {
        let at = addr
            .checked_add(i as u64)
            .ok_or(CmdlineError::OutsideLowRam(addr))?;
        if at >= LOW_RAM_END {
            return Err(CmdlineError::OutsideLowRam(at));
        }
        if image.contains(&at) {
            return Err(CmdlineError::InImage(at));
        }
        // SAFETY: `at` is below 4 MiB, RAM every domain has, identity
        // mapped; it is outside this image, so no Rust object lives there.
        let b = unsafe { core::ptr::read_volatile(at as *const u8) };
        if b == 0 {
            line.len = i;
            return Ok(line);
        }
        *slot = b;
    }
    Err(CmdlineError::Unterminated)
}

/// What the command line asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Options {
    /// HVM_PARAM_VIRIDIAN as the test configured it (0 = off).
    expect: u64,
    /// `mode=triple`.
    triple: bool,
    /// `mode=bench`: measure instead of checking (bench.rs).
    bench: bool,
}

fn parse_cmdline(line: &[u8]) -> Result<Options, CmdlineError> {
    let mut options = Options::default();
    let mut expect_seen = false;
    for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
        if let Some(value) = token.strip_prefix(b"expect=") {
            if expect_seen {
                return Err(CmdlineError::ExpectTwice);
            }
            expect_seen = true;
            options.expect = parse_number(value).ok_or(CmdlineError::BadExpect)?;
        } else if token == b"mode=triple" {
            options.triple = true;
        } else if token == b"mode=bench" {
            options.bench = true;
        }
    }
    Ok(options)
}

/// Decimal, or hex after `0x`; digits only (no sign), must fit 64 bits.
fn parse_number(text: &[u8]) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix(b"0x").or(text.strip_prefix(b"0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.iter().all(|b| (*b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(core::str::from_utf8(digits).ok()?, radix).ok()
}

// ------------------------------------------------------------ boot and long mode

/// EAX magic, real mode and EFLAGS at entry, and a usable command line.
fn boot_state(
    eax: u32,
    cr0: u32,
    eflags: u32,
    options: &Result<Options, CmdlineError>,
) -> Result<(), Msg> {
    let mut f = Findings::new();
    f.require(
        eax == ENTRY_MAGIC,
        format_args!("EAX {eax:#x}, want {ENTRY_MAGIC:#x} (HV86)"),
    );
    let cr0 = u64::from(cr0);
    f.require(
        cr0 & (CR0_PE | CR0_PG) == 0,
        format_args!("CR0 {cr0:#x}: not real mode"),
    );
    f.require(
        eflags == ENTRY_EFLAGS,
        format_args!("EFLAGS {eflags:#x}, want {ENTRY_EFLAGS:#x}"),
    );
    if let Err(e) = options {
        f.fail(format_args!("{e}"));
    }
    f.done()
}

const MSR_EFER: u32 = 0xC000_0080;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const CR4_PAE: u64 = 1 << 5;
/// boot.rs's 64-bit code segment.
const CODE64_SELECTOR: u16 = 0x18;

fn long_mode() -> Result<(), Msg> {
    let mut f = Findings::new();
    match boot::rdmsr(MSR_EFER) {
        Ok(efer) => {
            f.require(
                efer & (EFER_LME | EFER_LMA) == EFER_LME | EFER_LMA,
                format_args!("EFER {efer:#x}: LME/LMA clear"),
            );
        }
        Err(e) => f.fail(format_args!("rdmsr EFER: {e}")),
    }
    let cr0 = boot::read_cr0();
    f.require(
        cr0 & (CR0_PE | CR0_PG) == CR0_PE | CR0_PG,
        format_args!("CR0 {cr0:#x}: PE/PG clear"),
    );
    let cr4 = boot::read_cr4();
    f.require(cr4 & CR4_PAE != 0, format_args!("CR4 {cr4:#x}: PAE clear"));
    let cs = boot::read_cs();
    f.require(
        cs == CODE64_SELECTOR,
        format_args!("CS {cs:#x}, want {CODE64_SELECTOR:#x}"),
    );
    f.done()
}

/// Our IDT works: `ud2` reaches the #UD handler, RIP at the `ud2`, and
/// execution resumes after it.
fn idt() -> Result<(), Msg> {
    match boot::ud2() {
        Ok(()) => Err(msg!("ud2 raised nothing")),
        Err(f) if f.is(VECTOR_UD, 0) => Ok(()),
        Err(f) => Err(msg!("ud2 gave {f}, want #UD at the ud2")),
    }
}

fn triple_fault_now() -> ! {
    say!("x86guest: triple-faulting now");
    boot::triple_fault();
    FAILED.fetch_add(1, SeqCst);
    say!("x86guest: triple-fault FAIL the vCPU ran on after a triple fault");
    finish()
}

// ------------------------------------------------------------------- CPUID

/// Leaf 1 ECX: bit 31 = running under a hypervisor; bit 5 = VMX.
const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;
const CPUID1_ECX_VMX: u32 = 1 << 5;

fn cpuid_leaf1() -> Result<(), Msg> {
    let [_, _, ecx, _] = boot::cpuid(1);
    let mut f = Findings::new();
    f.require(
        ecx & CPUID1_ECX_HYPERVISOR != 0,
        format_args!("leaf 1 ECX {ecx:#x}: hypervisor bit clear"),
    );
    f.require(
        ecx & CPUID1_ECX_VMX == 0,
        format_args!("leaf 1 ECX {ecx:#x}: VMX offered"),
    );
    f.done()
}

/// A 12-byte CPUID signature, shown with anything unprintable as `?`.
struct Signature([u8; 12]);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// HVM_PARAM_VIRIDIAN bits (hvm/params.h).
const HVMPV_NO_FREQ: u64 = 1 << 1;
const HVMPV_TIME_REF_COUNT: u64 = 1 << 2;

/// Viridian's leaves are there exactly when `mask` says so, with the
/// features it selects.
fn viridian_cpuid(mask: u64) -> Result<(), Msg> {
    use hypercall::{
        HV_ACCESS_FREQUENCY_MSRS, HV_APIC_ACCESS_AVAILABLE, HV_CPUID_FEATURES, HV_CPUID_INTERFACE,
        HV_CPUID_VENDOR, HV_HYPERCALL_AVAILABLE, HV_INTERFACE_HV1, HV_MIN_MAX_LEAF, HV_SIGNATURE,
        HV_TIME_REF_COUNT_AVAILABLE, HV_VP_INDEX_AVAILABLE, XEN_SIGNATURE,
    };
    let sig = hypercall::cpuid_signature(HV_CPUID_VENDOR);
    let mut f = Findings::new();
    if mask == 0 {
        f.require(
            sig == XEN_SIGNATURE,
            format_args!(
                "leaf {HV_CPUID_VENDOR:#x} is \"{}\", want XenVMMXenVMM (viridian off)",
                Signature(sig)
            ),
        );
        return f.done();
    }
    if !f.require(
        sig == HV_SIGNATURE,
        format_args!(
            "leaf {HV_CPUID_VENDOR:#x} is \"{}\", want Microsoft Hv",
            Signature(sig)
        ),
    ) {
        return f.done();
    }
    let max = boot::cpuid(HV_CPUID_VENDOR)[0];
    f.require(
        max >= HV_MIN_MAX_LEAF,
        format_args!("highest leaf {max:#x}, want >= {HV_MIN_MAX_LEAF:#x}"),
    );
    let interface = boot::cpuid(HV_CPUID_INTERFACE)[0];
    f.require(
        interface == HV_INTERFACE_HV1,
        format_args!("interface {interface:#x}, want Hv#1"),
    );
    let features = boot::cpuid(HV_CPUID_FEATURES)[0];
    let always = HV_HYPERCALL_AVAILABLE | HV_VP_INDEX_AVAILABLE | HV_APIC_ACCESS_AVAILABLE;
    f.require(
        features & always == always,
        format_args!("features {features:#x}: hypercall, VP index or APIC MSRs missing"),
    );
    let freq = mask & HVMPV_NO_FREQ == 0;
    f.require(
        (features & HV_ACCESS_FREQUENCY_MSRS != 0) == freq,
        format_args!("features {features:#x}: frequency MSRs bit, want {freq}"),
    );
    let time_ref = mask & HVMPV_TIME_REF_COUNT != 0;
    f.require(
        (features & HV_TIME_REF_COUNT_AVAILABLE != 0) == time_ref,
        format_args!("features {features:#x}: time reference counter bit, want {time_ref}"),
    );
    f.done()
}

// --------------------------------------------------------------- viridian MSRs

/// The guest OS id written to HV_X64_MSR_GUEST_OS_ID: bit 63 marks an
/// open-source OS; the rest is arbitrary but non-zero.
const GUEST_OS_ID: u64 = 1 << 63 | 0x0086_0001;
/// What the TPR check writes.
const TPR_VALUE: u64 = 0x20;

/// Records unless `result` is #GP(0) raised by the instruction itself.
fn require_gp<T: fmt::LowerHex>(
    f: &mut Findings,
    what: fmt::Arguments<'_>,
    result: Result<T, Fault>,
) {
    match result {
        Ok(v) => f.fail(format_args!("{what} gave {v:#x}, want #GP")),
        Err(e) if e.is(VECTOR_GP, 0) => {}
        Err(e) => f.fail(format_args!("{what}: {e}, want #GP(0)")),
    }
}

/// Viridian off: its MSRs are not there.
fn viridian_absent() -> Result<(), Msg> {
    let mut f = Findings::new();
    require_gp(
        &mut f,
        format_args!("rdmsr VP_INDEX"),
        boot::rdmsr(hypercall::HV_X64_MSR_VP_INDEX),
    );
    f.done()
}

/// Writes a viridian MSR.
fn viridian_wrmsr(msr: u32, value: u64) -> Result<(), Fault> {
    // SAFETY: callers pass only viridian's synthetic MSRs other than
    // HV_X64_MSR_HYPERCALL: they hold hypervisor state (guest OS id, the
    // virtual APIC's TPR and EOI) and make it write no guest memory.
    unsafe { boot::wrmsr(msr, value) }
}

fn viridian_msrs() -> Result<(), Msg> {
    use hypercall::{HV_X64_MSR_EOI, HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_TPR, HV_X64_MSR_VP_INDEX};
    let mut f = Findings::new();
    match viridian_wrmsr(HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID) {
        Ok(()) => match boot::rdmsr(HV_X64_MSR_GUEST_OS_ID) {
            Ok(v) => {
                f.require(
                    v == GUEST_OS_ID,
                    format_args!("GUEST_OS_ID reads {v:#x}, wrote {GUEST_OS_ID:#x}"),
                );
            }
            Err(e) => f.fail(format_args!("rdmsr GUEST_OS_ID: {e}")),
        },
        Err(e) => f.fail(format_args!("wrmsr GUEST_OS_ID: {e}")),
    }
    match boot::rdmsr(HV_X64_MSR_VP_INDEX) {
        Ok(v) => {
            f.require(v == 0, format_args!("VP_INDEX {v}, want 0"));
        }
        Err(e) => f.fail(format_args!("rdmsr VP_INDEX: {e}")),
    }
    match viridian_wrmsr(HV_X64_MSR_TPR, TPR_VALUE) {
        Ok(()) => {
            match boot::rdmsr(HV_X64_MSR_TPR) {
                Ok(v) => {
                    f.require(
                        v == TPR_VALUE,
                        format_args!("TPR reads {v:#x}, wrote {TPR_VALUE:#x}"),
                    );
                }
                Err(e) => f.fail(format_args!("rdmsr TPR: {e}")),
            }
            if let Err(e) = viridian_wrmsr(HV_X64_MSR_TPR, 0) {
                f.fail(format_args!("wrmsr TPR = 0: {e}"));
            }
        }
        Err(e) => f.fail(format_args!("wrmsr TPR: {e}")),
    }
    if let Err(e) = viridian_wrmsr(HV_X64_MSR_EOI, 0) {
        f.fail(format_args!("wrmsr EOI: {e}"));
    }
    require_gp(
        &mut f,
        format_args!("wrmsr VP_INDEX"),
        viridian_wrmsr(HV_X64_MSR_VP_INDEX, 1).map(|()| 0u8),
    );
    f.done()
}

/// The viridian hypercall page: enabled, holding the expected stub, and
/// answering a known and an unknown call code.
fn viridian_hypercall() -> Result<(), Msg> {
    use hypercall::{
        HV_STATUS_INVALID_HYPERCALL_CODE, HV_STATUS_SUCCESS, HVCALL_NOTIFY_LONG_SPIN_WAIT,
        HVCALL_UNDEFINED,
    };
    let hv = Viridian::enable()?;
    let mut f = Findings::new();
    let status = hv.call(HVCALL_NOTIFY_LONG_SPIN_WAIT);
    f.require(
        status == HV_STATUS_SUCCESS,
        format_args!("NotifyLongSpinWait gave {status:#x}, want 0"),
    );
    let status = hv.call(HVCALL_UNDEFINED);
    f.require(
        status == HV_STATUS_INVALID_HYPERCALL_CODE,
        format_args!("call code {HVCALL_UNDEFINED:#x} gave {status:#x}, want 2"),
    );
    f.done()
}

/// The frequency MSRs: readable and non-zero unless `no_freq`.
fn viridian_freq(mask: u64) -> Result<(), Msg> {
    use hypercall::{HV_X64_MSR_APIC_FREQUENCY, HV_X64_MSR_TSC_FREQUENCY};
    let mut f = Findings::new();
    for (name, msr) in [
        ("TSC_FREQUENCY", HV_X64_MSR_TSC_FREQUENCY),
        ("APIC_FREQUENCY", HV_X64_MSR_APIC_FREQUENCY),
    ] {
        let read = boot::rdmsr(msr);
        if mask & HVMPV_NO_FREQ != 0 {
            require_gp(&mut f, format_args!("rdmsr {name} (no_freq)"), read);
        } else {
            match read {
                Ok(v) => {
                    f.require(v != 0, format_args!("{name} reads 0"));
                }
                Err(e) => f.fail(format_args!("rdmsr {name}: {e}")),
            }
        }
    }
    f.done()
}

/// Consecutive reads of the time reference counter.
const TIME_REF_READS: u32 = 1000;

/// The partition reference counter: there and never going back iff
/// `time_ref_count`.
fn viridian_time_ref(mask: u64) -> Result<(), Msg> {
    use hypercall::HV_X64_MSR_TIME_REF_COUNT;
    let mut f = Findings::new();
    if mask & HVMPV_TIME_REF_COUNT == 0 {
        require_gp(
            &mut f,
            format_args!("rdmsr TIME_REF_COUNT"),
            boot::rdmsr(HV_X64_MSR_TIME_REF_COUNT),
        );
        return f.done();
    }
    let mut last = 0;
    for i in 0..TIME_REF_READS {
        match boot::rdmsr(HV_X64_MSR_TIME_REF_COUNT) {
            Ok(now) if now < last => {
                f.fail(format_args!("read {i}: {now:#x} after {last:#x}"));
                break;
            }
            Ok(now) => last = now,
            Err(e) => {
                f.fail(format_args!("rdmsr TIME_REF_COUNT: {e}"));
                break;
            }
        }
    }
    f.done()
}

// ------------------------------------------------------------- Xen hypercalls

/// Where Xen's leaves must be: after viridian's when it is on.
const XEN_LEAVES_PLAIN: u32 = 0x4000_0000;
const XEN_LEAVES_WITH_VIRIDIAN: u32 = 0x4000_0100;
/// What xen_version must say: 4.17.
const XEN_VERSION: i64 = 4 << 16 | 17;

fn xen_cpuid(leaves: Option<XenLeaves>, viridian: bool) -> Result<(), Msg> {
    let l = leaves.ok_or_else(|| msg!("no XenVMMXenVMM leaves at 0x40000000..=0x40010000"))?;
    say!(
        "x86guest: Xen leaves at {:#x}: version {}.{}, {} hypercall page(s) via MSR {:#x}, \
         domain {:?}, vcpu {:?}",
        l.base,
        l.version >> 16,
        l.version & 0xffff,
        l.pages,
        l.msr,
        l.domid,
        l.vcpu_id
    );
    let mut f = Findings::new();
    let want = if viridian {
        XEN_LEAVES_WITH_VIRIDIAN
    } else {
        XEN_LEAVES_PLAIN
    };
    f.require(
        l.base == want,
        format_args!("leaves at {:#x}, want {want:#x}", l.base),
    );
    f.require(
        l.max_leaf >= l.base + 4,
        format_args!("highest leaf {:#x}, want >= base+4", l.max_leaf),
    );
    f.require(l.pages >= 1, format_args!("{} hypercall pages", l.pages));
    f.require(l.domid.is_some(), format_args!("base+4 gives no domain id"));
    // The vCPU id is optional in the leaf; if given, this is vCPU 0.
    f.require(
        l.vcpu_id.is_none_or(|v| v == 0),
        format_args!("base+4 vcpu id {:?}, want 0", l.vcpu_id),
    );
    f.done()
}

fn xen_version(xen: Xen) -> Result<(), Msg> {
    let v = xen.version();
    say!("x86guest: xen_version {v:#x} ({}.{})", v >> 16, v & 0xffff);
    ensure(v == XEN_VERSION, || msg!("{v:#x}, want {XEN_VERSION:#x}"))
}

/// A guest-virtual address the page tables map but no RAM backs.
const UNBACKED: u64 = 0x8000_0000;

/// What Xen refuses a domain: an undefined hypercall, a buffer nothing
/// backs, and its own viridian setting.
fn refusals(xen: Xen, mask: u64) -> Result<(), Msg> {
    let mut f = Findings::new();
    match xen.undefined() {
        Ok(rc) => {
            f.require(rc == -ENOSYS, format_args!("hypercall 60 = {rc}, want -38"));
        }
        Err(m) => f.fail(format_args!("{m}")),
    }
    // SAFETY: nothing backs UNBACKED, so the hypervisor has nothing of ours
    // to write.
    let rc = unsafe { xen.version_into(XENVER_EXTRAVERSION, UNBACKED) };
    f.require(
        rc == -EFAULT,
        format_args!("extraversion into {UNBACKED:#x} = {rc}, want -14"),
    );
    // The value is the one the domain has: accepting it wrongly changes
    // nothing later checks see.
    let rc = xen.set_param(HVM_PARAM_VIRIDIAN, mask);
    f.require(
        rc == -EPERM,
        format_args!("set_param(VIRIDIAN) = {rc}, want -1"),
    );
    match xen.get_param(HVM_PARAM_VIRIDIAN) {
        Ok(v) => f.fail(format_args!("get_param(VIRIDIAN) gave {v:#x}, want -1")),
        Err(e) => {
            f.require(
                e == -EPERM,
                format_args!("get_param(VIRIDIAN) = {e}, want -1"),
            );
        }
    }
    f.done()
}

/// Pause-loop iterations a wait may take: far more than an injection on
/// the next VM entry needs, and bounded, so a hypervisor that never
/// delivers gives a FAIL line.
const WAIT_SPINS: u32 = 1_000_000;
/// After the first upcall, how long a duplicate has to show.
const SETTLE_SPINS: u32 = 10_000;

/// Polls `done` up to `spins` times; true if it held.
fn spin_until(spins: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..spins {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

/// An event channel from this domain to itself: a send on one end must
/// raise the upcall once, with the other end pending.
fn evtchn_self(xen: Xen) -> Result<(), Msg> {
    let rc = xen.add_to_physmap(XENMAPSPACE_SHARED_INFO, 0, &hypercall::SHARED_INFO);
    ensure(rc == 0, || msg!("add_to_physmap(shared_info) = {rc}"))?;
    let via = HVM_PARAM_CALLBACK_TYPE_VECTOR | u64::from(UPCALL_VECTOR);
    let rc = xen.set_param(HVM_PARAM_CALLBACK_IRQ, via);
    ensure(rc == 0, || msg!("set_param(CALLBACK_IRQ, {via:#x}) = {rc}"))?;
    let a = xen
        .evtchn_alloc_unbound(DOMID_SELF)
        .map_err(|e| msg!("alloc_unbound(self) = {e}"))?;
    let b = match xen.evtchn_bind_interdomain(DOMID_SELF, a) {
        Ok(b) => b,
        Err(e) => {
            xen.evtchn_close(a);
            return Err(msg!("bind_interdomain(self, {a}) = {e}"));
        }
    };
    say!("x86guest: event channel {a} <-> {b}");
    let mut f = Findings::new();
    deliver(xen, a, b, &mut f);
    tpr_holds_upcall(xen, a, b, &mut f);
    let (close_a, close_b) = (xen.evtchn_close(a), xen.evtchn_close(b));
    f.require(
        close_a == 0 && close_b == 0,
        format_args!("close({a}) = {close_a}, close({b}) = {close_b}"),
    );
    let rc = xen.evtchn_send(a);
    f.require(
        rc == -EINVAL,
        format_args!("send on closed port {a} = {rc}, want -22"),
    );
    f.done()
}

/// Sends on `a` with interrupts on and records what arrived at `b`.
fn deliver(xen: Xen, a: u32, b: u32, f: &mut Findings) {
    use hypercall::{EVTCHN_2L_PORTS, LAST_PORT, PORTS_SEEN, UPCALLS};
    if !f.require(a != b, format_args!("both ends are port {a}"))
        || !f.require(
            a < EVTCHN_2L_PORTS && b < EVTCHN_2L_PORTS,
            format_args!("ports {a}, {b} beyond the 2-level ABI"),
        )
    {
        return;
    }
    if let Err(m) = hypercall::evtchn_prepare(b) {
        f.fail(format_args!("{m}"));
        return;
    }
    boot::interrupts_on();
    let rc = xen.evtchn_send(a);
    let arrived = spin_until(WAIT_SPINS, || UPCALLS.load(SeqCst) != 0);
    spin_until(SETTLE_SPINS, || false);
    boot::interrupts_off();
    f.require(rc == 0, format_args!("send({a}) = {rc}"));
    if !f.require(arrived, format_args!("no upcall after send({a})")) {
        return;
    }
    let upcalls = UPCALLS.load(SeqCst);
    f.require(upcalls == 1, format_args!("{upcalls} upcalls, want 1"));
    let (seen, last) = (PORTS_SEEN.load(SeqCst), LAST_PORT.load(SeqCst));
    f.require(
        seen == 1 && last == u64::from(b),
        format_args!("{seen} ports pending (last {last}), want port {b} alone"),
    );
}

/// With the task priority (CR8) at 15 the upcall vector (0xF3) must wait;
/// lowering CR8 delivers it.
fn tpr_holds_upcall(xen: Xen, a: u32, b: u32, f: &mut Findings) {
    use hypercall::UPCALLS;
    if let Err(m) = hypercall::evtchn_prepare(b) {
        f.fail(format_args!("{m}"));
        return;
    }
    let raised = boot::write_cr8(15);
    boot::interrupts_on();
    let rc = xen.evtchn_send(a);
    let early = spin_until(WAIT_SPINS / 4, || UPCALLS.load(SeqCst) != 0);
    let lowered = boot::write_cr8(0);
    let arrived = spin_until(WAIT_SPINS, || UPCALLS.load(SeqCst) != 0);
    boot::interrupts_off();
    f.require(
        raised.is_ok() && lowered.is_ok() && rc == 0,
        format_args!("cr8 15: {raised:?}, send({a}) = {rc}, cr8 0: {lowered:?}"),
    );
    f.require(!early, format_args!("upcall taken with CR8 = 15"));
    f.require(arrived, format_args!("no upcall after CR8 went back to 0"));
}

/// Grant frame 0, and the two pages a grant copy goes between.
static GRANT_FRAME: Page = Page::new();
static GRANT_SOURCE: Page = Page::new();
static GRANT_DEST: Page = Page::new();
/// The grant entry this guest fills (frame 0 holds entries 0..512).
const GRANT_REF: usize = 8;
/// Far beyond frame 0, the only one this domain has mapped.
const BAD_GRANT_REF: u64 = 5000;
const PAGE_SIZE: u16 = 4096;

/// Word `i` of the copied page: distinct per word, so a shifted or
/// partial copy shows.
fn pattern(i: usize) -> u64 {
    (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A page granted to ourselves and copied by GNTTABOP_copy; then a copy
/// from a grant reference that does not exist.
fn grant_copy(xen: Xen, domid: Option<u16>) -> Result<(), Msg> {
    let domid = domid.ok_or_else(|| msg!("no domain id (CPUID base+4) for the grant"))?;
    let rc = xen.add_to_physmap(XENMAPSPACE_GRANT_TABLE, 0, &GRANT_FRAME);
    ensure(rc == 0, || msg!("add_to_physmap(grant_table 0) = {rc}"))?;
    for (i, w) in GRANT_SOURCE.words().iter().enumerate() {
        w.store(pattern(i), Relaxed);
    }
    for w in GRANT_DEST.words() {
        w.store(0, Relaxed);
    }
    let frame = u32::try_from(GRANT_SOURCE.gfn()).map_err(|_| msg!("source frame too high"))?;
    let entry = GRANT_FRAME
        .word(GRANT_REF)
        .ok_or_else(|| msg!("grant ref {GRANT_REF} outside frame 0"))?;
    // grant_entry_v1 {flags: u16, domid: u16, frame: u32}: frame and domid
    // first, the flags that make it valid last.
    entry.store(u64::from(frame) << 32 | u64::from(domid) << 16, SeqCst);
    fence(SeqCst);
    entry.fetch_or(GTF_PERMIT_ACCESS, SeqCst);

    let mut f = Findings::new();
    let good = GnttabCopy::new(
        GnttabCopyPtr::new(GRANT_REF as u64, DOMID_SELF, 0),
        GnttabCopyPtr::new(GRANT_DEST.gfn(), DOMID_SELF, 0),
        PAGE_SIZE,
        GNTCOPY_SOURCE_GREF,
    );
    let mut ops = [good];
    // SAFETY: the only destination is GRANT_DEST, only ever accessed
    // through atomics.
    let rc = unsafe { xen.grant_copy(&mut ops) };
    let status = ops[0].status;
    f.require(
        rc == 0 && status == GNTST_OKAY,
        format_args!("copy = {rc}, status {status}, want 0, 0"),
    );
    let wrong = GRANT_DEST
        .words()
        .iter()
        .enumerate()
        .map(|(i, w)| (i, w.load(Relaxed)))
        .find(|&(i, v)| v != pattern(i));
    if let Some((i, v)) = wrong {
        f.fail(format_args!(
            "dest word {i} is {v:#x}, want {:#x}",
            pattern(i)
        ));
    }

    let mut bad = good;
    bad.source.ref_or_gmfn = BAD_GRANT_REF;
    let mut ops = [bad];
    // SAFETY: as above.
    let rc = unsafe { xen.grant_copy(&mut ops) };
    let status = ops[0].status;
    f.require(
        rc == 0 && status == GNTST_BAD_GNTREF,
        format_args!("copy from ref {BAD_GRANT_REF} = {rc}, status {status}, want 0, -3"),
    );
    entry.store(0, SeqCst);
    f.done()
}

// ------------------------------------------------------------- hostile acts

/// Things a guest may try that must neither reach the hardware nor hurt
/// another domain: each must fault (#GP) or be emulated, and the guest
/// must run on.
fn hostile() -> Result<(), Msg> {
    let mut f = Findings::new();
    // CR4 bits whose state nobody switches: OSXSAVE (18), PKE (22), and
    // VMXE (13, no nested VMX).
    let cr4 = boot::read_cr4();
    for bit in [13u32, 18, 22] {
        // SAFETY: every one of these must be refused, so CR4 stays as it is.
        let r = unsafe { boot::write_cr4(cr4 | (1 << bit)) };
        f.require(
            r.as_ref().is_err_and(|e| e.is(VECTOR_GP, 0)),
            format_args!("mov cr4 with bit {bit}: {r:?}, want #GP(0)"),
        );
    }
    f.require(boot::read_cr4() == cr4, format_args!("CR4 changed"));
    // The task priority is this domain's own (its vLAPIC), not the CPU's.
    let r = boot::write_cr8(5);
    let back = boot::read_cr8();
    let reset = boot::write_cr8(0);
    f.require(
        r.is_ok() && back == 5 && reset.is_ok() && boot::read_cr8() == 0,
        format_args!("cr8: write {r:?}, read back {back}, reset {reset:?}"),
    );
    let r = boot::write_cr8(16);
    f.require(
        r.as_ref().is_err_and(|e| e.is(VECTOR_GP, 0)),
        format_args!("mov cr8 of 16: {r:?}, want #GP(0)"),
    );
    // Reserved bits of SFMASK and of EFER.
    // SAFETY: both writes must be refused (no state changes).
    let r = unsafe { boot::wrmsr(0xc000_0084, 1 << 40) };
    f.require(
        r.as_ref().is_err_and(|e| e.is(VECTOR_GP, 0)),
        format_args!("SFMASK with bit 40: {r:?}, want #GP(0)"),
    );
    let efer = boot::rdmsr(0xc000_0080).unwrap_or(0);
    // SAFETY: as above; bit 15 of EFER is reserved.
    let r = unsafe { boot::wrmsr(0xc000_0080, efer | (1 << 15)) };
    f.require(
        r.as_ref().is_err_and(|e| e.is(VECTOR_GP, 0)),
        format_args!("EFER with bit 15: {r:?}, want #GP(0)"),
    );
    // MONITOR/MWAIT must not put the CPU to sleep.
    static WATCHED: AtomicU32 = AtomicU32::new(0);
    boot::monitor_mwait(core::ptr::from_ref(&WATCHED) as u64);
    f.done()
}

/// A read of guest-physical memory nothing backs comes back as #GP(0) on
/// the load.
fn ept_fault() -> Result<(), Msg> {
    // SAFETY: nothing backs UNBACKED (RAM ends far below 2 GiB), so the
    // read reaches no Rust object and no device.
    match unsafe { boot::load_u64(UNBACKED) } {
        Ok(v) => Err(msg!("read of {UNBACKED:#x} gave {v:#x}, want #GP(0)")),
        Err(e) if e.is(VECTOR_GP, 0) => Ok(()),
        Err(e) => Err(msg!("read of {UNBACKED:#x}: {e}, want #GP(0) at the load")),
    }
}

/// An I/O port nothing is assigned to in the domain's machine.
const UNASSIGNED_PORT: u16 = 0x510;

fn io_unknown() -> Result<(), Msg> {
    // SAFETY: no device of the domain sits at UNASSIGNED_PORT.
    match unsafe { boot::inb(UNASSIGNED_PORT) } {
        Ok(0xff) => Ok(()),
        Ok(v) => Err(msg!("in from {UNASSIGNED_PORT:#x} gave {v:#x}, want 0xff")),
        Err(e) => Err(msg!("in from {UNASSIGNED_PORT:#x}: {e}")),
    }
}
