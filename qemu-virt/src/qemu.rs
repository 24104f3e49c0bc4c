//! Boots an image under QEMU `-M virt` and collects what it prints.
//!
//! The console (the board's PL011) is QEMU's stdout: copied to ours as it
//! arrives and kept. The hypervisor's log arrives on the semihosting
//! console chardev (a file QEMU writes, tailed while it runs) and is decoded
//! with the ELF's defmt table; decoded lines go to stderr as `[hv]` lines
//! and are kept too. Owns the QEMU process: none is left running when
//! [`run`] returns, whatever happened.
//!
//! A run may also type into the console ([`RunConfig::console_input`]):
//! QEMU's stdin is then a pipe, and each step's bytes are written to it
//! once the console shows the text the step waits for.
//!
//! Also owns the board's memory map as the runner uses it: where QEMU puts
//! its device tree and where guest boot modules go ([`BootModule`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::log::{LogDecoder, from_text_log};

/// QEMU's exit status when the timeout ended the run.
pub const TIMED_OUT: i32 = 124;

/// The keys of an interactive run (`-serial mon:stdio`), for `--help`.
pub const ESCAPE_KEYS: &str = "Ctrl-t x quits QEMU (Ctrl-c goes to the console), Ctrl-t c \
switches between the console and QEMU's monitor, Ctrl-t h lists the other Ctrl-t keys; \
Ctrl-a three times moves the console input to the next domain";

/// How often the log file and the child are looked at.
const POLL: Duration = Duration::from_millis(20);
/// How long an unfinished console line is held back before it is shown
/// (so log lines do not land inside it, but prompts still appear).
const PARTIAL_LINE_DELAY: Duration = Duration::from_millis(100);
/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long the console pipe may stay open after QEMU exited.
const DRAIN: Duration = Duration::from_secs(2);

/// First byte of RAM on QEMU virt.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Where the guest's kernel is put for the hypervisor (a guest-loader
/// module): above hv-arm's image (0x4020_0000) and below QEMU's DTB.
pub const GUEST_KERNEL_ADDR: u64 = 0x4100_0000;
/// Where the guest's initramfs is put: above QEMU's DTB.
pub const GUEST_INITRD_ADDR: u64 = 0x4900_0000;
/// Room kept for QEMU's device tree (QEMU virt's is well under 1 MiB).
const DTB_ROOM: u64 = 2 << 20;

/// Where QEMU virt puts its device tree for `memory_mb` of RAM: RAM base +
/// min(RAM / 2, 128 MiB), i.e. 0x4800_0000 from 256 MiB up.
pub fn dtb_address(memory_mb: u32) -> u64 {
    RAM_BASE + (u64::from(memory_mb) << 19).min(128 << 20)
}

/// What a boot module is to the hypervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// A guest kernel with its command line (`multiboot,kernel`).
    Kernel {
        /// The guest's command line (the node's `bootargs`).
        bootargs: String,
    },
    /// A guest initramfs (`multiboot,ramdisk`).
    Ramdisk,
    /// Loaded as it is, with no node added (`-device loader`): for
    /// modules a `-dtb` already describes (a partial device tree, say).
    Raw,
}

/// A file QEMU copies into RAM for the hypervisor: rendered as a
/// `-device guest-loader`, which also adds a `/chosen/module@ADDR` node
/// (compatible "multiboot,kernel" or "multiboot,ramdisk", plus
/// "multiboot,module"), the boot protocol Xen's dom0 uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootModule {
    /// Physical address of its first byte.
    pub addr: u64,
    /// The file.
    pub path: PathBuf,
    /// Kernel (with bootargs) or ramdisk.
    pub kind: ModuleKind,
}

impl BootModule {
    /// The `-device` argument's value.
    pub fn device(&self) -> String {
        // QEMU splits device options at commas; a comma in a value is
        // written twice.
        let esc = |s: &str| s.replace(',', ",,");
        let path = esc(&self.path.to_string_lossy());
        match &self.kind {
            ModuleKind::Kernel { bootargs } if bootargs.is_empty() => {
                format!("guest-loader,addr={:#x},kernel={path}", self.addr)
            }
            ModuleKind::Kernel { bootargs } => format!(
                "guest-loader,addr={:#x},kernel={path},bootargs={}",
                self.addr,
                esc(bootargs)
            ),
            ModuleKind::Ramdisk => format!("guest-loader,addr={:#x},initrd={path}", self.addr),
            ModuleKind::Raw => format!("loader,file={path},addr={:#x},force-raw=on", self.addr),
        }
    }
}

/// One step of scripted console input ([`RunConfig::console_input`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleStep {
    /// The text to wait for on the console, searched for only in what
    /// arrived after the previous step's match. The console is matched as
    /// [`RunOutcome::console`] keeps it: without carriage returns. Empty
    /// matches at once.
    pub expect: String,
    /// What is then typed: written to QEMU's stdin, the console UART's
    /// input. End a line with `\r`, as a terminal's Enter does. The UART
    /// holds 32 bytes (hv-arm's vPL011 too): keep each step shorter, or
    /// wait for an answer in between. `${key}` is replaced by the value of
    /// the last `key=VALUE` the console has shown (VALUE ends at a space),
    /// so a step can type what a guest printed (a port, a grant reference).
    pub send: String,
}

impl ConsoleStep {
    /// Waits for `expect`, then types `send`.
    pub fn new(expect: impl Into<String>, send: impl Into<String>) -> Self {
        Self {
            expect: expect.into(),
            send: send.into(),
        }
    }
}

/// One boot.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The flashable Image (`-kernel`).
    pub image: PathBuf,
    /// Its ELF (for the log decoder). Empty when `image` is not a
    /// hypervisor (a Linux kernel booted directly): no log is decoded.
    pub elf: PathBuf,
    /// CPUs (`-smp`).
    pub cpus: u32,
    /// RAM in MiB (`-m`).
    pub memory_mb: u32,
    /// Wall-clock limit; QEMU is stopped after it and the status is [`TIMED_OUT`].
    pub timeout: Duration,
    /// Repeatable guest time: `-icount shift=0,sleep=off`, no DTB randomness,
    /// a VM-clock RTC, and a fixed seed for the guest's random numbers
    /// (`-seed 1`: RNDR of `-cpu max`).
    pub icount: bool,
    /// Extra `-M` options (e.g. `iommu=smmuv3`).
    pub machine_opts: Vec<String>,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<String>,
    /// Echo console and log as they arrive (off in tests that run in parallel).
    pub echo: bool,
    /// Enable semihosting (the log channel and the failure exit codes).
    pub semihosting: bool,
    /// Our stdin goes to the console too (`-serial mon:stdio`, see
    /// [`ESCAPE_KEYS`]); QEMU then stays in our process group so it may
    /// read the terminal.
    pub interactive: bool,
    /// The CPU model and its options (`-cpu`); `max` by default. Linux
    /// guests want `max,pauth-impdef=on` ([`CPU_FOR_LINUX`]).
    pub cpu: String,
    /// EL2 present (`virtualization=on`); off to boot a kernel directly.
    pub virtualization: bool,
    /// The command line of `image` (`-append`, the DTB's
    /// /chosen/bootargs): the hypervisor's own, or the kernel's.
    pub append: Option<String>,
    /// An initramfs for `image` itself (`-initrd`; a kernel booted directly).
    pub initrd: Option<PathBuf>,
    /// Files for the hypervisor's guests (guest-loader devices).
    pub modules: Vec<BootModule>,
    /// A device tree to boot with instead of QEMU's own (`-dtb`; QEMU still
    /// fills in memory, /chosen bootargs and initrd). With it, the nodes
    /// guest-loader would add are dropped: the tree must describe the
    /// modules itself (see [`crate::multi`]).
    pub dtb: Option<PathBuf>,
    /// Typed into the console, step after step, as the console shows what
    /// each step waits for. Empty: QEMU's stdin is /dev/null. Not with
    /// `interactive` (the terminal types then).
    pub console_input: Vec<ConsoleStep>,
}

/// `-cpu` for Linux: everything `max` has, but pointer authentication with
/// QEMU's cheap implementation-defined algorithm (the architected one makes
/// a Linux boot 5x slower under TCG).
pub const CPU_FOR_LINUX: &str = "max,pauth-impdef=on";

impl RunConfig {
    /// Defaults for an image: 4 CPUs, 1 GiB, 60 s, echo on, not interactive.
    pub fn new(image: PathBuf, elf: PathBuf) -> Self {
        Self {
            image,
            elf,
            cpus: 4,
            memory_mb: 1024,
            timeout: Duration::from_secs(60),
            icount: false,
            machine_opts: Vec::new(),
            extra_args: Vec::new(),
            echo: true,
            semihosting: true,
            interactive: false,
            cpu: "max".into(),
            virtualization: true,
            append: None,
            initrd: None,
            modules: Vec::new(),
            dtb: None,
            console_input: Vec::new(),
        }
    }

    /// A Linux `kernel` (raw arm64 Image) booted by QEMU directly, without
    /// EL2 and without a hypervisor: 2 CPUs, 512 MiB, no semihosting,
    /// [`CPU_FOR_LINUX`].
    pub fn kernel_alone(kernel: PathBuf) -> Self {
        let mut c = Self::new(kernel, PathBuf::new());
        c.cpus = 2;
        c.memory_mb = 512;
        c.semihosting = false;
        c.virtualization = false;
        c.cpu = CPU_FOR_LINUX.into();
        c
    }

    /// True when a hypervisor runs (there is an ELF with its log table).
    pub fn has_hypervisor(&self) -> bool {
        !self.elf.as_os_str().is_empty()
    }

    /// Checks that the boot modules fit the board: inside RAM, clear of
    /// the hypervisor's image (its arm64 header's `image_size`, bss
    /// included), of QEMU's device tree and of each other.
    pub fn check_layout(&self) -> Result<(), String> {
        let ram_end = RAM_BASE + (u64::from(self.memory_mb) << 20);
        let mut taken: Vec<(u64, u64, String)> = Vec::new();
        if !self.modules.is_empty() {
            let load = boards::by_name("qemu-virt")
                .map(|p| p.load_address())
                .unwrap_or(RAM_BASE + (2 << 20));
            taken.push((
                load,
                load + image_footprint(&self.image)?,
                format!("the hypervisor ({})", self.image.display()),
            ));
            let dtb = dtb_address(self.memory_mb);
            taken.push((dtb, dtb + DTB_ROOM, "QEMU's device tree".into()));
        }
        for m in &self.modules {
            let size = std::fs::metadata(&m.path)
                .map_err(|e| format!("{}: {e}", m.path.display()))?
                .len();
            let (start, end) = (m.addr, m.addr.saturating_add(size));
            let what = format!("module {} at {start:#x}", m.path.display());
            if start < RAM_BASE || end > ram_end {
                return Err(format!(
                    "{what} ({size} bytes) does not fit in RAM {RAM_BASE:#x}-{ram_end:#x}"
                ));
            }
            if let Some((s, e, other)) = taken.iter().find(|(s, e, _)| start < *e && *s < end) {
                return Err(format!(
                    "{what} ({size} bytes, up to {end:#x}) overlaps {other} at {s:#x}-{e:#x}"
                ));
            }
            taken.push((start, end, what));
        }
        Ok(())
    }

    /// The QEMU command line (without the program name); the hypervisor log
    /// goes to `log_file`.
    pub fn args(&self, log_file: &Path) -> Vec<String> {
        let mut machine = String::from(if self.virtualization {
            "virt,virtualization=on,gic-version=3"
        } else {
            "virt,gic-version=3"
        });
        if self.icount {
            machine.push_str(",dtb-randomness=off");
        }
        for o in &self.machine_opts {
            machine.push(',');
            machine.push_str(o);
        }
        let serial = if self.interactive {
            "mon:stdio"
        } else {
            "stdio"
        };
        let mut a: Vec<String> = [
            "-M",
            &machine,
            "-cpu",
            &self.cpu,
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &self.memory_mb.to_string(),
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            serial,
            "-no-reboot",
            "-kernel",
            &self.image.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(initrd) = &self.initrd {
            a.extend(["-initrd".into(), initrd.to_string_lossy().into_owned()]);
        }
        if let Some(append) = &self.append {
            a.extend(["-append".into(), append.clone()]);
        }
        if let Some(dtb) = &self.dtb {
            a.extend(["-dtb".into(), dtb.to_string_lossy().into_owned()]);
        }
        if self.interactive {
            // QEMU's escape key becomes Ctrl-t, so Ctrl-a reaches the
            // hypervisor's console switch.
            a.extend(["-echr".into(), "0x14".into()]);
        }
        for m in &self.modules {
            a.extend(["-device".into(), m.device()]);
        }
        if self.semihosting {
            a.extend([
                "-semihosting-config".into(),
                "enable=on,target=native,chardev=hvlog".into(),
                "-chardev".into(),
                // QEMU splits chardev options at commas; a comma in the path
                // is written twice.
                format!(
                    "file,id=hvlog,path={}",
                    log_file.to_string_lossy().replace(',', ",,")
                ),
            ]);
        }
        if self.icount {
            a.extend(
                [
                    "-icount",
                    "shift=0,sleep=off",
                    "-rtc",
                    "base=2024-01-01T00:00:00,clock=vm",
                    // `-cpu max` has FEAT_RNG: RNDR draws from the host
                    // unless seeded, and Linux's boot path depends on it.
                    "-seed",
                    "1",
                ]
                .map(String::from),
            );
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// What a boot produced.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// QEMU's exit status ([`TIMED_OUT`] if the timeout ended it, 128 + N
    /// if signal N did).
    pub status: i32,
    /// Everything the console printed (carriage returns dropped), then
    /// QEMU's own error lines prefixed `[qemu]`, and an `[input]` line
    /// naming the step a console script still waited for
    /// ([`RunConfig::console_input`]).
    pub console: String,
    /// The hypervisor log, one `[hv] ...` entry per line: decoded defmt
    /// frames, or the console's `(hv)` lines of a `text-log` build.
    pub log: Vec<String>,
    /// True when the timeout ended the run.
    pub timed_out: bool,
}

impl RunOutcome {
    /// The console and the log, for a failing test's message.
    pub fn transcript(&self) -> String {
        format!(
            "--- status {} (timed out: {}) ---\n--- console ---\n{}\n--- log ---\n{}\n",
            self.status,
            self.timed_out,
            self.console,
            self.log.join("\n")
        )
    }
}

static RUN_ID: AtomicUsize = AtomicUsize::new(0);

/// Bytes an image occupies once loaded: its arm64 header's `image_size`
/// (file, bss and stacks) when larger than the file.
fn image_footprint(image: &Path) -> Result<u64, String> {
    let data = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let header = if crate::fixtures::is_arm64_image(&data) {
        data.get(16..24)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    } else {
        0
    };
    Ok(header.max(data.len() as u64))
}

/// Boots `cfg` and waits for QEMU to exit or the timeout.
pub fn run(cfg: &RunConfig) -> Result<RunOutcome, String> {
    if cfg.interactive && !cfg.console_input.is_empty() {
        return Err("console input is scripted or typed, not both: \
                    an interactive run has no console_input"
            .into());
    }
    crate::host::ensure_qemu_arm()?;
    cfg.check_layout()?;
    let mut decoder = if cfg.has_hypervisor() {
        let elf = std::fs::read(&cfg.elf).map_err(|e| format!("{}: {e}", cfg.elf.display()))?;
        Some(LogDecoder::for_elf(&elf)?)
    } else {
        None
    };
    let dir = crate::host::target_dir().join("qemu-runs");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log_path = dir.join(format!(
        "hvlog-{}-{}.bin",
        std::process::id(),
        RUN_ID.fetch_add(1, Ordering::Relaxed)
    ));
    // QEMU truncates the file when it opens it, which keeps it the same
    // file: this handle reads what QEMU appends.
    let mut log_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;

    let result = boot(cfg, &log_path, &mut log_file, &mut decoder);
    let _ = std::fs::remove_file(&log_path);
    result
}

fn boot(
    cfg: &RunConfig,
    log_path: &Path,
    log_file: &mut File,
    decoder: &mut Option<LogDecoder>,
) -> Result<RunOutcome, String> {
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(cfg.args(log_path))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if cfg.interactive {
        cmd.stdin(Stdio::inherit());
    } else {
        // `-serial stdio`: what is written to QEMU's stdin reaches the
        // console UART's receiver. Nothing without a script.
        cmd.stdin(if cfg.console_input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        });
        // A group of its own, so a timeout stops everything it started.
        cmd.process_group(0);
    }
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl, which is async-signal-safe and touches no memory of ours.
    // It makes the kernel kill QEMU if this thread dies first (a test
    // harness killed mid-run), so no QEMU outlives its runner.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut qemu = Qemu {
        child: cmd
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?,
        group: !cfg.interactive,
        status: None,
    };

    // Some only when scripted; kept open until the run ends, so the
    // console never sees end-of-file while the guest still works.
    let mut stdin = qemu.child.stdin.take();
    let mut typist = Typist::new(&cfg.console_input);
    let mut stdout = qemu.child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stderr = qemu.child.stderr.take().ok_or("no stderr pipe")?;
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut screen = Screen::new(cfg.echo);
    let mut console = Vec::new();
    let mut log = Vec::new();
    let take_console = |chunk: Vec<u8>, screen: &mut Screen, console: &mut Vec<u8>| {
        let bytes: Vec<u8> = chunk.into_iter().filter(|&b| b != b'\r').collect();
        screen.console(&bytes);
        console.extend_from_slice(&bytes);
    };
    let mut tail_log =
        |decoder: &mut Option<LogDecoder>, screen: &mut Screen, log: &mut Vec<String>| {
            let Some(decoder) = decoder else {
                return;
            };
            let mut buf = [0u8; 4096];
            while let Ok(n) = log_file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                for line in decoder.feed(&buf[..n]) {
                    screen.log(&line);
                    log.push(line);
                }
            }
        };

    let deadline = Instant::now() + cfg.timeout;
    let mut timed_out = false;
    let mut pipe_open = true;
    type_into(&mut stdin, &typist.due(&console));
    while qemu.status.is_none() {
        match rx.recv_timeout(POLL) {
            Ok(chunk) => {
                take_console(chunk, &mut screen, &mut console);
                type_into(&mut stdin, &typist.due(&console));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                pipe_open = false;
                std::thread::sleep(POLL);
            }
        }
        tail_log(decoder, &mut screen, &mut log);
        screen.tick();
        qemu.poll()?;
        if qemu.status.is_none() && Instant::now() > deadline {
            qemu.stop();
            timed_out = true;
        }
    }
    // What QEMU wrote just before it exited.
    let drain_until = Instant::now() + DRAIN;
    while pipe_open {
        match rx.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
            Ok(chunk) => {
                take_console(chunk, &mut screen, &mut console);
                // Too late to type, but a step that matched did not wait.
                typist.due(&console);
            }
            Err(_) => pipe_open = false,
        }
    }
    drop(stdin);
    tail_log(decoder, &mut screen, &mut log);
    if let Some(line) = decoder.as_mut().and_then(LogDecoder::finish) {
        screen.log(&line);
        log.push(line);
    }
    screen.finish();

    let mut console = String::from_utf8_lossy(&console).into_owned();
    if decoder.as_ref().is_some_and(|d| !d.is_defmt()) {
        // A text-log build: its log lines are on the console.
        log.extend(console.lines().filter_map(from_text_log));
    }
    // QEMU's stderr closes when it exits; wait a little for the last words,
    // but never for a pipe something else may still hold open.
    let drain_until = Instant::now() + DRAIN;
    while !errors.is_finished() && Instant::now() < drain_until {
        std::thread::sleep(POLL);
    }
    let qemu_errors = if errors.is_finished() {
        errors.join().unwrap_or_default()
    } else {
        String::new()
    };
    let noise =
        |l: &&str| l.contains("terminating on signal") || l.contains("icount sleep disabled");
    let mut qemu_errors: Vec<String> = qemu_errors
        .lines()
        .filter(|l| !noise(l))
        .map(|l| format!("[qemu] {l}"))
        .collect();
    if let Some(waiting) = typist.waiting() {
        qemu_errors.push(format!("[input] {waiting}"));
    }
    if !qemu_errors.is_empty() {
        let lines = qemu_errors.join("\n");
        if cfg.echo {
            eprintln!("{lines}");
        }
        if !console.is_empty() && !console.ends_with('\n') {
            console.push('\n');
        }
        console.push_str(&lines);
    }
    let status = match (timed_out, qemu.status) {
        (true, _) => TIMED_OUT,
        (false, Some(st)) => exit_code(st),
        (false, None) => return Err("QEMU's status was lost".into()),
    };
    Ok(RunOutcome {
        status,
        console,
        log,
        timed_out,
    })
}

/// Plays [`RunConfig::console_input`] against the console as it grows.
struct Typist<'a> {
    steps: &'a [ConsoleStep],
    /// The step waiting for its text.
    next: usize,
    /// Where that step's search starts: just past the previous match.
    from: usize,
}

impl<'a> Typist<'a> {
    fn new(steps: &'a [ConsoleStep]) -> Self {
        Self {
            steps,
            next: 0,
            from: 0,
        }
    }

    /// What to type now that the console reads `console` (carriage returns
    /// dropped): the `send` of every step whose text has appeared, in order.
    fn due(&mut self, console: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(step) = self.steps.get(self.next) {
            let want = step.expect.as_bytes();
            let rest = console.get(self.from..).unwrap_or_default();
            let found = if want.is_empty() {
                Some(0)
            } else {
                rest.windows(want.len()).position(|w| w == want)
            };
            let Some(at) = found else {
                break;
            };
            self.from += at + want.len();
            self.next += 1;
            out.extend_from_slice(expand(&step.send, console).as_bytes());
        }
        out
    }

    /// The step still waiting, described; `None` when all were typed.
    fn waiting(&self) -> Option<String> {
        let step = self.steps.get(self.next)?;
        Some(format!(
            "console input step {} of {} never saw {:?} (so {:?} was not typed)",
            self.next + 1,
            self.steps.len(),
            step.expect,
            step.send
        ))
    }
}

/// `send` with each `${key}` replaced by the value of the last `key=VALUE`
/// in `console` (left as it is when the console has none).
fn expand(send: &str, console: &[u8]) -> String {
    let text = String::from_utf8_lossy(console);
    let mut out = String::new();
    let mut rest = send;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let key = &after[..j];
        let needle = format!("{key}=");
        let value = text.rfind(&needle).map(|at| {
            text[at + needle.len()..]
                .split(|c: char| c.is_whitespace())
                .next()
                .unwrap_or("")
        });
        match value {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[i..i + 3 + j]),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

/// Writes `bytes` to QEMU's stdin; a failed write (QEMU gone) closes it.
fn type_into(stdin: &mut Option<ChildStdin>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Some(pipe) = stdin
        && pipe.write_all(bytes).and_then(|()| pipe.flush()).is_err()
    {
        *stdin = None;
    }
}

/// The shell's view of a status: the exit code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The QEMU child; stopped on drop if still running.
struct Qemu {
    child: Child,
    /// QEMU leads a process group of its own.
    group: bool,
    status: Option<ExitStatus>,
}

impl Qemu {
    fn poll(&mut self) -> Result<(), String> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|e| format!("waiting for qemu: {e}"))?;
        }
        Ok(())
    }

    fn signal(&self, sig: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // Only a group QEMU leads: in interactive mode it shares ours.
        let target = if self.group { -pid } else { pid };
        // SAFETY: kill(2) takes plain integers and touches no memory; the
        // child is not reaped yet, so its pid (and group id) is still ours.
        unsafe {
            libc::kill(target, sig);
        }
    }

    /// SIGTERM (QEMU exits cleanly and restores the terminal), then SIGKILL
    /// after a grace period.
    fn stop(&mut self) {
        if self.status.is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        let until = Instant::now() + TERM_GRACE;
        while Instant::now() < until {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                return;
            }
            std::thread::sleep(POLL);
        }
        self.signal(libc::SIGKILL);
        self.status = self.child.wait().ok();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where console bytes and log lines meet the terminal: console on stdout,
/// log lines on stderr, and no log line inside an unfinished console line.
struct Screen {
    echo: bool,
    /// Console bytes after the last newline, not shown yet.
    partial: Vec<u8>,
    partial_since: Option<Instant>,
    /// The terminal shows an unfinished console line.
    mid_line: bool,
    /// Log lines waiting for that console line to end.
    held: Vec<String>,
}

impl Screen {
    fn new(echo: bool) -> Self {
        Self {
            echo,
            partial: Vec::new(),
            partial_since: None,
            mid_line: false,
            held: Vec::new(),
        }
    }

    fn console(&mut self, mut bytes: &[u8]) {
        if !self.echo {
            return;
        }
        let mut out = std::io::stdout().lock();
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let _ = out.write_all(&self.partial);
            let _ = out.write_all(&bytes[..=nl]);
            self.partial.clear();
            self.partial_since = None;
            self.mid_line = false;
            bytes = &bytes[nl + 1..];
            if !self.held.is_empty() {
                let _ = out.flush();
                for line in self.held.drain(..) {
                    eprintln!("{line}");
                }
            }
        }
        if !bytes.is_empty() {
            self.partial.extend_from_slice(bytes);
            self.partial_since.get_or_insert_with(Instant::now);
        }
        let _ = out.flush();
    }

    /// Shows an unfinished console line that has waited long enough.
    fn tick(&mut self) {
        if self
            .partial_since
            .is_some_and(|t| t.elapsed() >= PARTIAL_LINE_DELAY)
        {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&self.partial);
            let _ = out.flush();
            self.partial.clear();
            self.partial_since = None;
            self.mid_line = true;
        }
    }

    fn log(&mut self, line: &str) {
        if !self.echo {
            return;
        }
        if self.mid_line {
            self.held.push(line.to_string());
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&mut self) {
        if !self.echo {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&self.partial);
        if self.mid_line || !self.partial.is_empty() {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
        self.partial.clear();
        self.mid_line = false;
        for line in self.held.drain(..) {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn steps_type_values_the_console_showed() {
        let c = b"XT: serve port=5 rw=9\nXT: serve port=7 rw=10 ro=11\n";
        assert_eq!(
            super::expand("connect ${port} ${rw} ${ro} ${none}", c),
            "connect 7 10 11 ${none}"
        );
    }

    use super::*;

    fn cfg() -> RunConfig {
        RunConfig::new("/i/hv.img".into(), "/i/hv.elf".into())
    }

    fn joined(c: &RunConfig) -> String {
        c.args(Path::new("/t/log,1.bin")).join(" ")
    }

    #[test]
    fn default_command_line() {
        assert_eq!(
            joined(&cfg()),
            "-M virt,virtualization=on,gic-version=3 -cpu max -smp 4 -m 1024 \
             -display none -monitor none -serial stdio -no-reboot -kernel /i/hv.img \
             -semihosting-config enable=on,target=native,chardev=hvlog \
             -chardev file,id=hvlog,path=/t/log,,1.bin"
        );
    }

    #[test]
    fn icount_interactive_and_extras() {
        let mut c = cfg();
        c.icount = true;
        c.interactive = true;
        c.semihosting = false;
        c.cpus = 1;
        c.machine_opts = vec!["iommu=smmuv3".into()];
        c.extra_args = vec!["-append".into(), "x".into()];
        let a = joined(&c);
        assert!(a.starts_with(
            "-M virt,virtualization=on,gic-version=3,dtb-randomness=off,iommu=smmuv3 "
        ));
        assert!(a.contains(" -smp 1 "));
        assert!(a.contains(" -serial mon:stdio "));
        assert!(
            a.contains(" -icount shift=0,sleep=off -rtc base=2024-01-01T00:00:00,clock=vm -seed 1")
        );
        assert!(!a.contains("semihosting"));
        assert!(a.ends_with(" -append x"));
    }

    #[test]
    fn guest_modules_become_guest_loader_devices() {
        let mut c = cfg();
        c.cpus = 2;
        c.memory_mb = 2048;
        c.cpu = CPU_FOR_LINUX.into();
        c.append = Some("hv.console_timestamps=1".into());
        c.modules = vec![
            BootModule {
                addr: GUEST_KERNEL_ADDR,
                path: "/k/Image".into(),
                kind: ModuleKind::Kernel {
                    bootargs: "console=ttyAMA0 hvtest=poweroff x=a,b".into(),
                },
            },
            BootModule {
                addr: GUEST_INITRD_ADDR,
                path: "/k/init,rd.gz".into(),
                kind: ModuleKind::Ramdisk,
            },
        ];
        let a = c.args(Path::new("/t/l"));
        let joined = a.join(" ");
        assert!(joined.contains(" -cpu max,pauth-impdef=on -smp 2 -m 2048 "));
        assert!(joined.contains(" -kernel /i/hv.img -append hv.console_timestamps=1 "));
        // One argument each, spaces and all; commas doubled.
        assert!(a.iter().any(|x| x
            == "guest-loader,addr=0x41000000,kernel=/k/Image,\
                bootargs=console=ttyAMA0 hvtest=poweroff x=a,,b"));
        assert!(
            a.iter()
                .any(|x| x == "guest-loader,addr=0x49000000,initrd=/k/init,,rd.gz")
        );
        assert!(a.iter().filter(|x| *x == "-device").count() == 2);
    }

    #[test]
    fn a_kernel_alone_has_no_el2_no_semihosting_and_its_initrd() {
        let mut c = RunConfig::kernel_alone("/k/Image".into());
        c.initrd = Some("/k/initrd".into());
        c.append = Some("console=ttyAMA0".into());
        c.icount = true;
        assert!(!c.has_hypervisor());
        let a = joined(&c);
        assert!(
            a.starts_with(
                "-M virt,gic-version=3,dtb-randomness=off -cpu max,pauth-impdef=on -smp 2 -m 512 "
            ),
            "{a}"
        );
        assert!(a.contains(" -kernel /k/Image -initrd /k/initrd -append console=ttyAMA0 "));
        assert!(!a.contains("semihosting") && !a.contains("guest-loader"));
    }

    #[test]
    fn dtb_address_follows_qemu() {
        assert_eq!(dtb_address(2048), 0x4800_0000);
        assert_eq!(dtb_address(256), 0x4800_0000);
        assert_eq!(dtb_address(128), 0x4400_0000);
    }

    #[test]
    fn module_layout_is_checked() {
        let dir = crate::host::cache_dir().join(format!("layout-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A hypervisor Image claiming 1 MiB in memory.
        let mut hv = vec![0u8; 4096];
        hv[16..24].copy_from_slice(&(1u64 << 20).to_le_bytes());
        hv[0x38..0x3c].copy_from_slice(b"ARM\x64");
        let hv_path = dir.join("hv.img");
        std::fs::write(&hv_path, &hv).unwrap();
        let file = |name: &str, len: usize| {
            let p = dir.join(name);
            std::fs::write(&p, vec![0u8; len]).unwrap();
            p
        };
        let mut c = RunConfig::new(hv_path, "/i/hv.elf".into());
        c.memory_mb = 2048;
        let kernel = |path: PathBuf, addr: u64| BootModule {
            addr,
            path,
            kind: ModuleKind::Kernel {
                bootargs: String::new(),
            },
        };
        c.modules = vec![
            kernel(file("k", 4096), GUEST_KERNEL_ADDR),
            BootModule {
                addr: GUEST_INITRD_ADDR,
                path: file("r", 4096),
                kind: ModuleKind::Ramdisk,
            },
        ];
        c.check_layout().unwrap();
        // Running into QEMU's DTB at 0x4800_0000.
        c.modules[0] = kernel(file("big", 0x700_0001), GUEST_KERNEL_ADDR);
        let e = c.check_layout().unwrap_err();
        assert!(e.contains("QEMU's device tree"), "{e}");
        // Onto the hypervisor's bss.
        c.modules[0] = kernel(file("k", 4096), 0x4020_8000);
        let e = c.check_layout().unwrap_err();
        assert!(e.contains("the hypervisor"), "{e}");
        // Past the end of RAM.
        c.memory_mb = 128;
        c.modules[0] = kernel(file("k", 4096), GUEST_KERNEL_ADDR);
        let e = c.check_layout().unwrap_err();
        assert!(e.contains("does not fit in RAM"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn console_input_waits_for_each_step_after_the_last() {
        let steps = [
            ConsoleStep::new("", "a\r"),
            ConsoleStep::new("/ # ", "echo $((6*7))\r"),
            ConsoleStep::new("42", "x\r"),
            ConsoleStep::new("/ # ", "poweroff -f\r"),
        ];
        let mut t = Typist::new(&steps);
        assert_eq!(t.due(b""), b"a\r");
        assert_eq!(t.due(b"boot\n/ "), b"");
        let mut console = b"boot\n/ # ".to_vec();
        assert_eq!(t.due(&console), b"echo $((6*7))\r");
        // The text the previous step matched does not count again; a
        // match may arrive split across reads.
        console.extend_from_slice(b"echo $((6*7))\n4");
        assert_eq!(t.due(&console), b"");
        assert!(t.waiting().unwrap().contains("step 3 of 4"));
        console.extend_from_slice(b"2\n/ # ");
        assert_eq!(t.due(&console), b"x\rpoweroff -f\r");
        assert_eq!(t.waiting(), None);
        assert_eq!(t.due(&console), b"");
        assert_eq!(Typist::new(&[]).waiting(), None);
    }

    #[test]
    fn a_scripted_run_cannot_be_interactive() {
        let mut c = cfg();
        c.interactive = true;
        c.console_input = vec![ConsoleStep::new("x", "y")];
        assert!(run(&c).unwrap_err().contains("not both"));
    }

    #[test]
    fn signals_read_as_the_shell_does() {
        assert_eq!(exit_code(ExitStatus::from_raw(2 << 8)), 2);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 128 + 9);
    }
}
