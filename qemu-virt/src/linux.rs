//! A Linux guest: Debian's own arm64 kernel with a busybox initramfs this
//! module builds, booted as hv-arm's guest or directly by QEMU (the
//! baseline), and the parsers for what its `/init` prints.
//!
//! The initramfs is reproducible byte for byte (sorted names, mtime 0,
//! uid/gid 0, fixed inode numbers, a gzip header without name or mtime), so
//! guest time under `-icount` repeats run after run. Its `/init` prints
//! lines starting `HVTEST: ` and acts on the kernel parameter `hvtest=`
//! (see [`Mode`]); whatever happens, it ends with `poweroff -f`.
//!
//! It also carries the Xen test kit for `hvtest=xen`: `/bin/xentool`
//! (tests/guests/xentool, built here as a static aarch64 musl binary) and
//! Debian's xen-evtchn, xen-gntdev, xen-gntalloc and xen-privcmd modules
//! from the same kernel package, under `/lib/modules/xen/`.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::cargo::Build;
use crate::fixtures::{busybox_static_arm64, debian_arm64_image, debian_arm64_kernel};
use crate::host::cache_dir;
use crate::image::Built;
use crate::qemu::{
    BootModule, CPU_FOR_LINUX, GUEST_INITRD_ADDR, GUEST_KERNEL_ADDR, ModuleKind, RunConfig,
};

/// Host RAM for a hypervisor with a Linux guest (hv-arm gives the guest
/// 512 MiB of it).
pub const HOST_MEMORY_MB: u32 = 2048;
/// RAM of the kernel booted directly: what the guest gets under hv-arm, so
/// the two boots size the same memory map.
pub const NATIVE_MEMORY_MB: u32 = 512;
/// CPUs of the Linux guest (and of the direct boot).
pub const CPUS: u32 = 2;
/// Wall-clock limit of one Linux boot: CI has two slow cores and QEMU is
/// TCG; a healthy boot takes a few seconds to a minute.
pub const TIMEOUT: Duration = Duration::from_secs(240);
/// The marker `/init` prints (on the console and into the kernel log).
pub const MARKER: &str = "HVTEST: init reached";
/// The printk line of the kernel starting `/init`.
pub const RUN_INIT: &str = "Run /init as init process";
/// The prefix of every line `/init` prints.
pub const PREFIX: &str = "HVTEST: ";
/// The unmapped guest-physical address `hvtest=hostile` reads.
pub const HOSTILE_ADDR: u64 = 0x1000_0000;

/// What `/init` does after its checks, chosen by the kernel parameter
/// `hvtest=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `poweroff -f` (PSCI SYSTEM_OFF).
    Poweroff,
    /// First boot (`hv,restart-count` 0 or absent): `reboot -f` (PSCI
    /// SYSTEM_RESET); after a restart: `poweroff -f`.
    Reboot,
    /// Reads [`HOSTILE_ADDR`] with `devmem`: the hypervisor injects an
    /// external abort, the process dies of SIGBUS, the kernel lives on.
    Hostile,
    /// An interactive busybox shell on the console; `poweroff -f` when it
    /// exits.
    Shell,
    /// First boot: a kernel panic (`echo c > /proc/sysrq-trigger`); after
    /// a restart: `poweroff -f`. With `panic=-1 reboot=panic_warm` on the
    /// command line the panic ends in a warm reset, which hv-arm counts as
    /// a crash.
    Panic,
    /// Prints `HVTEST: ticks=N` (arch_timer interrupts, all CPUs) every
    /// second until a line is typed on its console (at most 10 minutes),
    /// then `poweroff -f`.
    Ticker,
    /// Loads the Xen device drivers ([`XEN_MODULES`], xen-privcmd with
    /// `unrestricted=1`), prints `HVTEST: insmod NAME ok|failed`, then
    /// `HVTEST: xen devices ok` when /dev/xen/{evtchn,gntdev,gntalloc,
    /// privcmd} exist (else `HVTEST: xen devices missing: NAME...`), the
    /// kernel log's lines matching `Xen|xen|grant|event` as `HVTEST:
    /// dmesg: ...` (under Xen 4.17: `Xen 4.17 support found`, `xen:grant_table:
    /// Grant tables using version 1 layout`, `xen:events: Using FIFO-based
    /// ABI`, `xen:balloon: Initialising balloon driver`, `xen:xen_evtchn:
    /// Event-channel device installed`), the /proc/interrupts lines matching
    /// `events|xen` (the per-CPU event upcall is named `events`) as `HVTEST:
    /// xen-irq: ...`, and gives a shell as [`Mode::Shell`] does, where a
    /// harness types `xentool` commands.
    Xen,
}

impl Mode {
    /// Every mode, in `--help` order.
    pub const ALL: [Mode; 7] = [
        Mode::Shell,
        Mode::Poweroff,
        Mode::Reboot,
        Mode::Hostile,
        Mode::Panic,
        Mode::Ticker,
        Mode::Xen,
    ];

    /// The `hvtest=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Poweroff => "poweroff",
            Mode::Reboot => "reboot",
            Mode::Hostile => "hostile",
            Mode::Shell => "shell",
            Mode::Panic => "panic",
            Mode::Ticker => "ticker",
            Mode::Xen => "xen",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown hvtest mode '{s}' (known: {})", names.join(", "))
            })
    }
}

/// The `/init` script. `default` is what it does when the command line
/// has no `hvtest=`.
///
/// Plain POSIX sh for busybox ash. It mounts proc, sysfs and devtmpfs,
/// prints [`MARKER`] (also into /dev/kmsg, so the kernel log stamps it),
/// `HVTEST: nproc=N`, the arch_timer and IPI lines of /proc/interrupts
/// before and after a one-second sleep (`HVTEST: irq1: ...`, `HVTEST:
/// irq2: ...`), `HVTEST: restart-count=N` from the guest tree's
/// /chosen/hv,restart-count (a big-endian cell the hypervisor writes; 0
/// when absent), with the parameter `hvbench` the kernel log's `Run /init`
/// and `HVTEST` lines (`HVTEST: dmesg: [ secs] ...`), then acts on the
/// mode. An EXIT trap makes `poweroff -f` the way out of every path,
/// failures included.
pub fn init_script(default: Mode) -> String {
    let modes: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
    INIT_TEMPLATE
        .replace("@DEFAULT@", default.as_str())
        .replace("@HOSTILE@", &format!("{HOSTILE_ADDR:#x}"))
        .replace("@MODES@", &modes.join(", "))
        .replace("@XEN_MODULES@", &XEN_MODULES.join(" "))
        .replace("@XEN_MODULE_DIR@", XEN_MODULE_DIR)
}

const INIT_TEMPLATE: &str = r#"#!/bin/sh
# /init of qemu-virt's Linux test initramfs (written by qemu-virt/src/linux.rs).
# Lines for the runner start "HVTEST: ". Every way out ends in poweroff -f.
bb=/bin/busybox
PATH=/bin
export PATH

off() {
    $bb poweroff -f
    echo "HVTEST: poweroff -f failed"
}
trap off EXIT
fail() {
    echo "HVTEST: failed: $*"
    exit 1
}

$bb mount -t proc proc /proc || fail "mount /proc"
$bb mount -t sysfs sysfs /sys || fail "mount /sys"
$bb mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
echo "HVTEST: init reached"
echo "HVTEST: init reached" > /dev/kmsg
$bb --install -s /bin || fail "busybox --install"

mode=@DEFAULT@
bench=
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    hvtest=*) mode=${arg#hvtest=} ;;
    hvbench) bench=1 ;;
    esac
done
set +f

echo "HVTEST: nproc=$(nproc)"
irqs() {
    grep -E 'arch_timer|IPI' /proc/interrupts | sed "s/^/HVTEST: $1: /"
}
irqs irq1
sleep 1
irqs irq2

rc=0
f=/proc/device-tree/chosen/hv,restart-count
if [ -r "$f" ]; then
    hex=$(od -An -tx1 "$f" | tr -d ' \n')
    case "$hex" in
    '' | *[!0-9a-f]*) echo "HVTEST: cannot read $f ('$hex')" ;;
    *) rc=$((0x$hex)) ;;
    esac
fi
echo "HVTEST: restart-count=$rc"

if [ -n "$bench" ]; then
    dmesg | grep -E 'Run /init|HVTEST' | sed 's/^/HVTEST: dmesg: /'
fi

case "$mode" in
poweroff) ;;
reboot)
    if [ "$rc" = 0 ]; then
        echo "HVTEST: rebooting"
        reboot -f
        fail "reboot -f returned"
    fi
    echo "HVTEST: back after reboot"
    ;;
hostile)
    # Have the kernel report the signals it sends for faults (arm64 keeps
    # this off by default), so its view of the abort shows in dmesg.
    echo 1 > /proc/sys/debug/exception-trace
    echo "HVTEST: reading unmapped guest-physical @HOSTILE@"
    devmem @HOSTILE@
    echo "HVTEST: devmem status=$?"
    dmesg | grep -E 'external abort|unhandled exception' | sed 's/^/HVTEST: dmesg: /'
    echo "HVTEST: alive after fault"
    echo "HVTEST: nproc=$(nproc)"
    ;;
panic)
    if [ "$rc" = 0 ]; then
        echo "HVTEST: panicking"
        echo c > /proc/sysrq-trigger
        fail "still alive after sysrq c"
    fi
    echo "HVTEST: back after the panic"
    ;;
ticker)
    echo "HVTEST: ticking until a line is typed"
    n=0
    while [ $n -lt 600 ]; do
        t=$(grep arch_timer /proc/interrupts | tr -s ' ' | cut -d' ' -f3-$(( $(nproc) + 2 )) | tr ' ' '+')
        echo "HVTEST: ticks=$(( ${t:-0} ))"
        if read -t 1 line; then
            break
        fi
        n=$((n + 1))
    done
    ;;
shell | '')
    echo "HVTEST: shell: busybox sh on the console; exit (or poweroff -f) powers off"
    setsid cttyhack sh
    ;;
xen)
    for m in @XEN_MODULES@; do
        opt=
        # A domU's privcmd otherwise waits for xenstore at open().
        [ "$m" = xen-privcmd ] && opt=unrestricted=1
        if insmod /@XEN_MODULE_DIR@/$m.ko $opt; then
            echo "HVTEST: insmod $m ok"
        else
            echo "HVTEST: insmod $m failed"
        fi
    done
    missing=
    for d in evtchn gntdev gntalloc privcmd; do
        [ -c /dev/xen/$d ] || missing="$missing $d"
    done
    if [ -z "$missing" ]; then
        echo "HVTEST: xen devices ok"
    else
        echo "HVTEST: xen devices missing:$missing"
    fi
    dmesg | grep -E 'Xen|xen|grant|event' | sed 's/^/HVTEST: dmesg: /'
    grep -E 'events|xen' /proc/interrupts | sed 's/^/HVTEST: xen-irq: /'
    echo "HVTEST: shell: busybox sh on the console, /bin/xentool; exit (or poweroff -f) powers off"
    setsid cttyhack sh
    ;;
*)
    echo "HVTEST: unknown hvtest=$mode (known: @MODES@)"
    ;;
esac
echo "HVTEST: powering off"
exit 0
"#;

/// What one cpio entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioKind {
    /// A directory.
    Dir,
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device node.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// One archive member: path without a leading `/`, permission bits, kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpioEntry {
    /// Path inside the archive (`bin/busybox`).
    pub name: String,
    /// Permission bits (`0o755`); the file type comes from `kind`.
    pub perm: u32,
    /// What it is.
    pub kind: CpioKind,
}

impl CpioEntry {
    fn new(name: &str, perm: u32, kind: CpioKind) -> Self {
        Self {
            name: name.into(),
            perm,
            kind,
        }
    }
}

/// The "newc" cpio archive (the format the kernel unpacks as initramfs)
/// of `entries`: sorted by name, inodes numbered from 1 in that order,
/// mtime 0, uid and gid 0, then the `TRAILER!!!` entry. The same entries
/// always give the same bytes.
pub fn newc_archive(entries: &[CpioEntry]) -> Vec<u8> {
    let mut sorted: Vec<&CpioEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    for (i, e) in sorted.iter().enumerate() {
        let (ty, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &e.kind {
            CpioKind::Dir => (0o040000, 2, &[], (0, 0)),
            CpioKind::File(d) => (0o100000, 1, d, (0, 0)),
            CpioKind::Symlink(t) => (0o120000, 1, t.as_bytes(), (0, 0)),
            CpioKind::CharDev { major, minor } => (0o020000, 1, &[], (*major, *minor)),
        };
        let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
        newc_member(
            &mut out,
            &e.name,
            ino,
            ty | (e.perm & 0o7777),
            nlink,
            rdev,
            data,
        );
    }
    newc_member(&mut out, "TRAILER!!!", 0, 0, 1, (0, 0), &[]);
    out
}

fn newc_member(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).unwrap_or(u32::MAX),
        0, // dev major
        0, // dev minor
        rdev.0,
        rdev.1,
        u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
        0, // check (newc has none)
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Gzip as `gzip -n` writes it: no file name, mtime 0, OS Unix.
pub fn gzip_n(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data).map_err(|e| format!("gzip: {e}"))?;
    enc.finish().map_err(|e| format!("gzip: {e}"))
}

/// The Linux modules `hvtest=xen` loads, in order (file names without
/// `.ko`), from Debian's kernel package.
pub const XEN_MODULES: [&str; 4] = ["xen-evtchn", "xen-gntdev", "xen-gntalloc", "xen-privcmd"];
/// Where the initramfs keeps them (no leading `/`).
pub const XEN_MODULE_DIR: &str = "lib/modules/xen";
/// The target xentool is built for.
pub const XENTOOL_TARGET: &str = "aarch64-unknown-linux-musl";

/// The Xen test kit of the initramfs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XenKit {
    /// The static arm64 `xentool` binary.
    pub xentool: Vec<u8>,
    /// [`XEN_MODULES`] as (name, bytes of `NAME.ko`).
    pub modules: Vec<(String, Vec<u8>)>,
}

/// Builds xentool (tests/guests/xentool) as a static
/// aarch64-unknown-linux-musl release binary, symbols stripped: its path
/// (`target/aarch64-unknown-linux-musl/release/xentool`).
pub fn build_xentool() -> Result<PathBuf, String> {
    Build {
        package: "xentool",
        target: XENTOOL_TARGET,
        features: Vec::new(),
        no_default_features: false,
        release: true,
    }
    .run_with_env(&[("CARGO_PROFILE_RELEASE_STRIP", "symbols")])
    .map_err(|e| {
        format!(
            "cannot build xentool, the Linux initramfs's Xen test tool, for \
             {XENTOOL_TARGET} ({e}); rust-toolchain.toml lists the target \
             (`rustup target add {XENTOOL_TARGET}`), and .cargo/config.toml \
             links it statically with rust-lld"
        )
    })
}

/// The directory of Debian's Xen driver modules in the unpacked kernel
/// package (`lib/modules/VERSION/kernel/drivers/xen`).
pub fn xen_module_dir() -> Result<PathBuf, String> {
    let root = debian_arm64_kernel()?;
    let modules = root.join("lib/modules");
    std::fs::read_dir(&modules)
        .map_err(|e| format!("{}: {e}", modules.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .map(|p| p.join("kernel/drivers/xen"))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            format!(
                "no lib/modules/*/kernel/drivers/xen in {}",
                modules.display()
            )
        })
}

/// Builds xentool and reads [`XEN_MODULES`].
pub fn xen_kit() -> Result<XenKit, String> {
    let tool = build_xentool()?;
    let xentool = std::fs::read(&tool).map_err(|e| format!("{}: {e}", tool.display()))?;
    let dir = xen_module_dir()?;
    let modules = XEN_MODULES
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.ko"));
            std::fs::read(&path)
                .map(|bytes| (name.to_string(), bytes))
                .map_err(|e| {
                    format!(
                        "{}: {e} (hvtest=xen needs the module uncompressed)",
                        path.display()
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(XenKit { xentool, modules })
}

/// The members of the initramfs around `busybox` (the static arm64
/// binary's bytes) and the Xen test kit.
pub fn initramfs_entries(busybox: Vec<u8>, xen: XenKit, default: Mode) -> Vec<CpioEntry> {
    use CpioKind::*;
    let mut entries = vec![
        CpioEntry::new("bin", 0o755, Dir),
        CpioEntry::new("bin/busybox", 0o755, File(busybox)),
        CpioEntry::new("bin/sh", 0o777, Symlink("busybox".into())),
        CpioEntry::new("bin/xentool", 0o755, File(xen.xentool)),
        CpioEntry::new("dev", 0o755, Dir),
        CpioEntry::new("dev/console", 0o600, CharDev { major: 5, minor: 1 }),
        CpioEntry::new("init", 0o755, File(init_script(default).into_bytes())),
        CpioEntry::new("lib", 0o755, Dir),
        CpioEntry::new("lib/modules", 0o755, Dir),
        CpioEntry::new(XEN_MODULE_DIR, 0o755, Dir),
        CpioEntry::new("proc", 0o555, Dir),
        CpioEntry::new("root", 0o700, Dir),
        CpioEntry::new("sys", 0o555, Dir),
        CpioEntry::new("tmp", 0o1777, Dir),
    ];
    for (name, bytes) in xen.modules {
        let path = format!("{XEN_MODULE_DIR}/{name}.ko");
        entries.push(CpioEntry::new(&path, 0o644, File(bytes)));
    }
    entries
}

/// 64-bit FNV-1a: names cached archives after their content.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The gzip'ed newc initramfs: Debian's static busybox as /bin/busybox
/// (/bin/sh links to it; /init runs `busybox --install -s /bin` for the
/// rest), /dev/console (5,1), empty /proc, /sys, /tmp, /root, the Xen test
/// kit ([`xen_kit`]: /bin/xentool and /lib/modules/xen/*.ko), and the
/// [`init_script`] whose mode without `hvtest=` is `default` (pass
/// [`Mode::Shell`] for the behaviour the runner documents).
///
/// Cached under `target/cache/linux/` named after its content (so a new
/// xentool or kernel gives a new file): parallel builders write the same
/// bytes and rename them into place.
pub fn initramfs(default: Mode) -> Result<PathBuf, String> {
    let bb_path = busybox_static_arm64()?;
    let busybox = std::fs::read(&bb_path).map_err(|e| format!("{}: {e}", bb_path.display()))?;
    let cpio = newc_archive(&initramfs_entries(busybox, xen_kit()?, default));
    let dir = cache_dir().join("linux");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("initramfs-{default}-{:016x}.cpio.gz", fnv1a(&cpio)));
    if path.is_file() {
        return Ok(path);
    }
    crate::image::replace_file(&path, &gzip_n(&cpio)?)?;
    Ok(path)
}

/// The kernel and initramfs of a Linux boot.
#[derive(Clone, Debug)]
pub struct LinuxFiles {
    /// Debian's raw arm64 Image ([`debian_arm64_image`]).
    pub kernel: PathBuf,
    /// [`initramfs`]`(Mode::Shell)`.
    pub initrd: PathBuf,
}

/// Fetches (or finds cached) the kernel and builds the initramfs.
pub fn files() -> Result<LinuxFiles, String> {
    Ok(LinuxFiles {
        kernel: debian_arm64_image()?,
        initrd: initramfs(Mode::Shell)?,
    })
}

/// The guest's command line: `console=ttyAMA0 hvtest=MODE`, then `extra`.
/// No earlycon: every byte of it would trap, and the guest's PL011 (the
/// hypervisor's vPL011 at 0x2200_0000) is not at QEMU's 0x0900_0000.
pub fn bootargs(mode: Mode, extra: &str) -> String {
    let mut s = format!("console=ttyAMA0 hvtest={mode}");
    let extra = extra.trim();
    if !extra.is_empty() {
        s.push(' ');
        s.push_str(extra);
    }
    s
}

/// hv-arm (`hv`) with `files` as its guest: kernel at
/// [`GUEST_KERNEL_ADDR`] with `guest_bootargs`, initramfs at
/// [`GUEST_INITRD_ADDR`], [`CPUS`] CPUs, [`HOST_MEMORY_MB`], `-cpu
/// max,pauth-impdef=on`, [`TIMEOUT`]. The hypervisor's own command line
/// (`append`) is left empty.
pub fn guest_config(hv: &Built, files: &LinuxFiles, guest_bootargs: &str) -> RunConfig {
    let mut c = RunConfig::new(hv.image.clone(), hv.elf.clone());
    c.cpus = CPUS;
    c.memory_mb = HOST_MEMORY_MB;
    c.cpu = CPU_FOR_LINUX.into();
    c.timeout = TIMEOUT;
    c.modules = vec![
        BootModule {
            addr: GUEST_KERNEL_ADDR,
            path: files.kernel.clone(),
            kind: ModuleKind::Kernel {
                bootargs: guest_bootargs.into(),
            },
        },
        BootModule {
            addr: GUEST_INITRD_ADDR,
            path: files.initrd.clone(),
            kind: ModuleKind::Ramdisk,
        },
    ];
    c
}

/// The same kernel and initramfs booted by QEMU directly (no EL2, no
/// hypervisor): [`CPUS`] CPUs, [`NATIVE_MEMORY_MB`], `-kernel`, `-initrd`,
/// `-append bootargs`, [`TIMEOUT`].
pub fn native_config(files: &LinuxFiles, bootargs: &str) -> RunConfig {
    let mut c = RunConfig::kernel_alone(files.kernel.clone());
    c.cpus = CPUS;
    c.memory_mb = NATIVE_MEMORY_MB;
    c.initrd = Some(files.initrd.clone());
    c.append = Some(bootargs.into());
    c.timeout = TIMEOUT;
    c
}

// ---------------------------------------------------------------------
// Reading what the boots printed.

/// Splits off the hypervisor's console timestamp (`[hv 1.234567] `, with
/// `hv.console_timestamps=1`): seconds since hypervisor entry, and the
/// rest, without the domain's `(name) ` prefix when there is one.
pub fn hv_stamp(line: &str) -> (Option<f64>, &str) {
    let (t, rest) = strip_stamp(line);
    (t, domain_of(rest).map_or(rest, |(_, r)| r))
}

/// The hypervisor's timestamp of a console line, and the rest as it is.
fn strip_stamp(line: &str) -> (Option<f64>, &str) {
    let Some(rest) = line.trim_start().strip_prefix("[hv ") else {
        return (None, line);
    };
    let Some(end) = rest.find(']') else {
        return (None, line);
    };
    match rest[..end].trim().parse::<f64>() {
        Ok(t) => (
            Some(t),
            rest[end + 1..]
                .strip_prefix(' ')
                .unwrap_or(&rest[end + 1..]),
        ),
        Err(_) => (None, line),
    }
}

/// The domain name of a guest console line (`(name) text`) and its text.
pub fn domain_of(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('(')?;
    let end = rest.find(") ")?;
    let name = &rest[..end];
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'@');
    ok.then(|| (name, &rest[end + 2..]))
}

/// The console lines of domain `name`, without their prefix (and without
/// hypervisor timestamps), one per line.
pub fn domain_console(console: &str, name: &str) -> String {
    let mut out = String::new();
    for line in console.lines() {
        if let Some((n, text)) = domain_of(strip_stamp(line.trim_start()).1)
            && n == name
        {
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// A printk timestamp (`[    0.858123] text`): seconds and the text.
pub fn printk(line: &str) -> Option<(f64, &str)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let end = rest.find(']')?;
    let t = rest[..end].trim().parse::<f64>().ok()?;
    Some((t, rest[end + 1..].trim_start()))
}

/// The `/init` lines of a console (text after [`PREFIX`]), each with the
/// hypervisor's timestamp when there is one. A kernel message glued in
/// front of a line (two CPUs share the console) does not hide it.
pub fn hvtest_lines(console: &str) -> Vec<(Option<f64>, &str)> {
    console
        .lines()
        .filter_map(|l| {
            let (t, rest) = hv_stamp(l);
            let at = rest.find(PREFIX)?;
            Some((t, &rest[at + PREFIX.len()..]))
        })
        .collect()
}

/// The values of `HVTEST: key=value` lines, in order.
pub fn values<'a>(console: &'a str, key: &str) -> Vec<&'a str> {
    hvtest_lines(console)
        .into_iter()
        .filter_map(|(_, l)| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

/// One /proc/interrupts line: its label (`11` or `IPI0`), the count per
/// CPU, and the rest (controller, hwirq, trigger, name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqLine {
    /// The first column without its colon.
    pub label: String,
    /// One count per CPU column.
    pub counts: Vec<u64>,
    /// What follows the counts.
    pub desc: String,
}

impl IrqLine {
    /// Parses one line of /proc/interrupts; `None` for the CPU header and
    /// lines without counts.
    pub fn parse(line: &str) -> Option<IrqLine> {
        let mut words = line.split_whitespace().peekable();
        let label = words.next()?.strip_suffix(':')?.to_string();
        let mut counts = Vec::new();
        while let Some(n) = words.peek().and_then(|w| w.parse::<u64>().ok()) {
            counts.push(n);
            words.next();
        }
        if counts.is_empty() {
            return None;
        }
        Some(IrqLine {
            label,
            counts,
            desc: words.collect::<Vec<_>>().join(" "),
        })
    }

    /// An IPI line.
    pub fn is_ipi(&self) -> bool {
        self.label.starts_with("IPI")
    }

    /// The architected timer's line.
    pub fn is_arch_timer(&self) -> bool {
        self.desc.split_whitespace().any(|w| w == "arch_timer")
    }
}

/// The /proc/interrupts lines `/init` printed under `tag` (`irq1`, `irq2`).
pub fn irq_lines(console: &str, tag: &str) -> Vec<IrqLine> {
    let prefix = format!("{tag}:");
    hvtest_lines(console)
        .into_iter()
        .filter_map(|(_, l)| IrqLine::parse(l.strip_prefix(&prefix)?))
        .collect()
}

/// Checks the interrupt lines of a `/init` run with `cpus` CPUs: the
/// arch_timer count rose on every CPU across the one-second sleep, and
/// every CPU took IPIs. Returns a one-line summary.
pub fn check_interrupts(console: &str, cpus: usize) -> Result<String, String> {
    let before = irq_lines(console, "irq1");
    let after = irq_lines(console, "irq2");
    let timer = |lines: &[IrqLine], tag: &str| -> Result<Vec<u64>, String> {
        let t = lines
            .iter()
            .find(|l| l.is_arch_timer())
            .ok_or(format!("no arch_timer line under {tag}"))?;
        if t.counts.len() != cpus {
            return Err(format!(
                "arch_timer line under {tag} has {} CPU columns, not {cpus}",
                t.counts.len()
            ));
        }
        Ok(t.counts.clone())
    };
    let (t1, t2) = (timer(&before, "irq1")?, timer(&after, "irq2")?);
    for cpu in 0..cpus {
        if t2[cpu] <= t1[cpu] {
            return Err(format!(
                "CPU{cpu}'s arch_timer count did not rise over 1 s: {} then {}",
                t1[cpu], t2[cpu]
            ));
        }
    }
    let ipis: Vec<&IrqLine> = after.iter().filter(|l| l.is_ipi()).collect();
    if ipis.is_empty() {
        return Err("no IPI lines under irq2".into());
    }
    let per_cpu: Vec<u64> = (0..cpus)
        .map(|c| ipis.iter().filter_map(|l| l.counts.get(c)).sum())
        .collect();
    if let Some(cpu) = per_cpu.iter().position(|&n| n == 0) {
        return Err(format!("CPU{cpu} took no IPIs: {per_cpu:?}"));
    }
    Ok(format!(
        "arch_timer {t1:?} -> {t2:?}, IPIs per CPU {per_cpu:?}"
    ))
}

/// The printk time of the first kernel-log line containing `needle` among
/// the `HVTEST: dmesg:` lines (`hvbench`), else among the console's own
/// printk lines.
pub fn printk_time(console: &str, needle: &str) -> Option<f64> {
    let from_dmesg = hvtest_lines(console)
        .into_iter()
        .filter_map(|(_, l)| printk(l.strip_prefix("dmesg:")?))
        .find(|(_, text)| text.contains(needle))
        .map(|(t, _)| t);
    from_dmesg.or_else(|| {
        console
            .lines()
            .filter_map(|l| printk(hv_stamp(l).1))
            .find(|(_, text)| text.contains(needle))
            .map(|(t, _)| t)
    })
}

/// The hypervisor's console timestamp of the first console line
/// containing `needle`.
pub fn console_time(console: &str, needle: &str) -> Option<f64> {
    console
        .lines()
        .map(hv_stamp)
        .find(|(t, rest)| t.is_some() && rest.contains(needle))
        .and_then(|(t, _)| t)
}

/// The time of the first hypervisor log line containing `needle`: the
/// line's own timestamp (`[hv] 0.012345 INFO  ...`), else the first number
/// with a unit in its message (`... at 12345 us`, `... 0.0123 s`).
pub fn log_time(log: &[String], needle: &str) -> Option<f64> {
    let line = log.iter().find(|l| l.contains(needle))?;
    let rest = line.strip_prefix(crate::log::PREFIX).unwrap_or(line);
    let mut words = rest.split_whitespace();
    if let Some(t) = words.next().and_then(|w| w.parse::<f64>().ok()) {
        return Some(t);
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let n = w[0].trim_end_matches(',').parse::<f64>().ok()?;
        let scale = match w[1].trim_end_matches([',', ')', ';']) {
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        Some(n * scale)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One member read back: name, mode, rdev, data.
    type Member = (String, u32, (u32, u32), Vec<u8>);

    /// Reads a newc archive back.
    fn read_newc(mut a: &[u8]) -> Vec<Member> {
        let mut out = Vec::new();
        let mut consumed = 0usize;
        loop {
            assert_eq!(&a[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            assert_eq!((field(2), field(3), field(5)), (0, 0, 0), "uid gid mtime");
            let rdev = (field(9), field(10));
            let name = std::str::from_utf8(&a[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(a[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = a[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            consumed += next;
            assert_eq!(consumed % 4, 0);
            a = &a[next..];
            if name == "TRAILER!!!" {
                assert!(a.is_empty());
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    fn fake_kit() -> XenKit {
        XenKit {
            xentool: b"\x7fELF xentool".to_vec(),
            modules: XEN_MODULES
                .iter()
                .map(|m| (m.to_string(), format!("{m} bytes").into_bytes()))
                .collect(),
        }
    }

    #[test]
    fn newc_archive_is_sorted_aligned_and_repeatable() {
        let entries = initramfs_entries(b"\x7fELF busybox".to_vec(), fake_kit(), Mode::Shell);
        let mut shuffled = entries.clone();
        shuffled.reverse();
        let a = newc_archive(&entries);
        assert_eq!(a, newc_archive(&shuffled));
        let members = read_newc(&a);
        let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let get = |n: &str| members.iter().find(|m| m.0 == n).unwrap();
        assert_eq!(get("bin/busybox").1, 0o100755);
        assert_eq!(get("bin/busybox").3, b"\x7fELF busybox");
        assert_eq!(get("bin/sh").1, 0o120777);
        assert_eq!(get("bin/sh").3, b"busybox");
        assert_eq!(get("dev/console").1, 0o020600);
        assert_eq!(get("dev/console").2, (5, 1));
        assert_eq!(get("tmp").1, 0o041777);
        assert_eq!(get("bin/xentool").1, 0o100755);
        assert_eq!(get("bin/xentool").3, b"\x7fELF xentool");
        assert_eq!(get("lib/modules/xen").1, 0o040755);
        for m in XEN_MODULES {
            let ko = get(&format!("lib/modules/xen/{m}.ko"));
            assert_eq!(ko.1, 0o100644);
            assert_eq!(ko.3, format!("{m} bytes").as_bytes());
        }
        let init = String::from_utf8(get("init").3.clone()).unwrap();
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(init.contains("mode=shell\n"));
        assert!(init.contains("devmem 0x10000000\n"));
        assert!(!init.contains('@'), "a placeholder was left");
    }

    #[test]
    fn gzip_header_has_no_name_and_no_mtime() {
        let z = gzip_n(b"hello hello hello").unwrap();
        assert_eq!(&z[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(z[3], 0, "no FNAME/FCOMMENT/FEXTRA flags");
        assert_eq!(&z[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(z[9], 3, "OS Unix");
        assert_eq!(z, gzip_n(b"hello hello hello").unwrap());
        let mut back = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"hello hello hello");
    }

    #[test]
    fn modes_round_trip() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
            assert!(
                init_script(Mode::Shell).contains(&format!("\n{m})"))
                    || init_script(Mode::Shell).contains(&format!("\n{m} |"))
            );
        }
        assert!("nope".parse::<Mode>().unwrap_err().contains("hostile"));
        assert!(
            init_script(Mode::Shell)
                .contains("(known: shell, poweroff, reboot, hostile, panic, ticker, xen)")
        );
        assert_eq!(bootargs(Mode::Reboot, ""), "console=ttyAMA0 hvtest=reboot");
        assert_eq!(
            bootargs(Mode::Poweroff, " quiet hvbench "),
            "console=ttyAMA0 hvtest=poweroff quiet hvbench"
        );
    }

    #[test]
    fn xen_mode_loads_the_drivers_and_gives_a_shell() {
        let init = init_script(Mode::Xen);
        assert!(init.contains("mode=xen\n"));
        let xen = &init[init.find("\nxen)").unwrap()..];
        let xen = &xen[..xen.find(";;").unwrap()];
        assert!(xen.contains("for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd; do"));
        assert!(xen.contains("insmod /lib/modules/xen/$m.ko $opt"));
        assert!(xen.contains("[ \"$m\" = xen-privcmd ] && opt=unrestricted=1"));
        assert!(xen.contains("for d in evtchn gntdev gntalloc privcmd; do"));
        assert!(xen.contains("echo \"HVTEST: xen devices ok\""));
        assert!(xen.contains("grep -E 'Xen|xen|grant|event' | sed 's/^/HVTEST: dmesg: /'"));
        assert!(xen.contains("/proc/interrupts | sed 's/^/HVTEST: xen-irq: /'"));
        assert!(xen.contains("setsid cttyhack sh"));
        assert!(!init.contains('@'), "a placeholder was left");
    }

    const NATIVE: &str = "\
[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]
[    0.858123] Run /init as init process
HVTEST: init reached
[    0.901234] HVTEST: init reached
HVTEST: nproc=2
HVTEST: irq1:  11:        412        398     GICv3  27 Level     arch_timer
HVTEST: irq1: IPI0:        31         44       Rescheduling interrupts
HVTEST: irq1: IPI1:         5          9       Function call interrupts
HVTEST: irq2:  11:        663        650     GICv3  27 Level     arch_timer
HVTEST: irq2: IPI0:        35         47       Rescheduling interrupts
HVTEST: irq2: IPI1:         5          9       Function call interrupts
HVTEST: restart-count=0
HVTEST: dmesg: [    0.858123] Run /init as init process
HVTEST: dmesg: [    0.901234] HVTEST: init reached
";

    #[test]
    fn reads_interrupt_lines() {
        let l = IrqLine::parse(" 11:        412        398     GICv3  27 Level     arch_timer")
            .unwrap();
        assert_eq!(l.label, "11");
        assert_eq!(l.counts, [412, 398]);
        assert!(l.is_arch_timer() && !l.is_ipi());
        let l = IrqLine::parse("IPI5:  0  0   IRQ work interrupts").unwrap();
        assert!(l.is_ipi());
        assert_eq!(l.desc, "IRQ work interrupts");
        assert!(IrqLine::parse("           CPU0       CPU1").is_none());
        assert!(IrqLine::parse("Err:          0").is_some());
        assert_eq!(irq_lines(NATIVE, "irq2").len(), 3);
        let summary = check_interrupts(NATIVE, 2).unwrap();
        assert!(summary.contains("[412, 398] -> [663, 650]"), "{summary}");
        assert!(summary.contains("[40, 56]"), "{summary}");
        assert!(check_interrupts(NATIVE, 4).unwrap_err().contains("columns"));
        let stuck = NATIVE.replace("663        650", "663        398");
        assert!(check_interrupts(&stuck, 2).unwrap_err().contains("CPU1"));
        let no_ipi = NATIVE
            .replace("35         47", "0 47")
            .replace("5          9", "0 9");
        assert!(
            check_interrupts(&no_ipi, 2)
                .unwrap_err()
                .contains("CPU0 took no IPIs")
        );
        assert!(check_interrupts("", 2).is_err());
    }

    #[test]
    fn reads_values_and_times() {
        assert_eq!(values(NATIVE, "nproc"), ["2"]);
        assert_eq!(values(NATIVE, "restart-count"), ["0"]);
        assert_eq!(printk_time(NATIVE, RUN_INIT), Some(0.858123));
        assert_eq!(printk_time(NATIVE, MARKER), Some(0.901234));
        // Without hvbench the console's own printk lines serve.
        let plain = "[    1.5] Run /init as init process\n";
        assert_eq!(printk_time(plain, RUN_INIT), Some(1.5));
        assert_eq!(printk_time(plain, MARKER), None);

        let guest = "\
[hv 0.031000] [    0.000000] Booting Linux
[hv 1.204000] random: crng init doneHVTEST: init reached
[hv 1.300500] HVTEST: restart-count=1
[hv 1.4] HVTEST: dmesg: [    0.950000] Run /init as init process
";
        assert_eq!(
            hv_stamp("[hv 1.300500] HVTEST: x"),
            (Some(1.3005), "HVTEST: x")
        );
        assert_eq!(hv_stamp("[hvx] y"), (None, "[hvx] y"));
        assert_eq!(console_time(guest, MARKER), Some(1.204));
        assert_eq!(values(guest, "restart-count"), ["1"]);
        assert_eq!(printk_time(guest, RUN_INIT), Some(0.95));
        assert_eq!(console_time(NATIVE, MARKER), None);

        let log: Vec<String> = [
            "[hv] 0.001000 INFO  entered at EL2",
            "[hv] 0.012345 INFO  first guest instruction at 0x41000000",
            "[hv] INFO  PSCI SYSTEM_OFF after 12345 us",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(log_time(&log, "first guest instruction"), Some(0.012345));
        let t = log_time(&log, "SYSTEM_OFF").unwrap();
        assert!((t - 0.012345).abs() < 1e-12, "{t}");
        assert_eq!(log_time(&log, "missing"), None);
    }
}
