//! Boots an image under QEMU `-M virt` and collects what it prints.
//!
//! The console (the board's PL011) is QEMU's stdout: copied to ours as it
//! arrives and kept. The hypervisor's log arrives on the semihosting
//! console chardev (a file QEMU writes, tailed while it runs) and is decoded
//! with the ELF's defmt table; decoded lines go to stderr as `[hv]` lines
//! and are kept too. Owns the QEMU process: none is left running when
//! [`run`] returns, whatever happened.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::log::{LogDecoder, from_text_log};

/// QEMU's exit status when the timeout ended the run.
pub const TIMED_OUT: i32 = 124;

/// The keys of an interactive run (`-serial mon:stdio`), for `--help`.
pub const ESCAPE_KEYS: &str = "Ctrl-a x quits QEMU (Ctrl-c goes to the console), Ctrl-a c \
switches between the console and QEMU's monitor, Ctrl-a h lists the other Ctrl-a keys";

/// How often the log file and the child are looked at.
const POLL: Duration = Duration::from_millis(20);
/// How long an unfinished console line is held back before it is shown
/// (so log lines do not land inside it, but prompts still appear).
const PARTIAL_LINE_DELAY: Duration = Duration::from_millis(100);
/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long the console pipe may stay open after QEMU exited.
const DRAIN: Duration = Duration::from_secs(2);

/// One boot.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The flashable Image (`-kernel`).
    pub image: PathBuf,
    /// Its ELF (for the log decoder).
    pub elf: PathBuf,
    /// CPUs (`-smp`).
    pub cpus: u32,
    /// RAM in MiB (`-m`).
    pub memory_mb: u32,
    /// Wall-clock limit; QEMU is stopped after it and the status is [`TIMED_OUT`].
    pub timeout: Duration,
    /// Repeatable guest time: `-icount shift=0,sleep=off`, no DTB randomness,
    /// a VM-clock RTC.
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
}

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
        }
    }

    /// The QEMU command line (without the program name); the hypervisor log
    /// goes to `log_file`.
    pub fn args(&self, log_file: &Path) -> Vec<String> {
        let mut machine = String::from("virt,virtualization=on,gic-version=3");
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
            "max",
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
    /// QEMU's own error lines prefixed `[qemu]`.
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

/// Boots `cfg` and waits for QEMU to exit or the timeout.
pub fn run(cfg: &RunConfig) -> Result<RunOutcome, String> {
    crate::host::ensure_qemu_arm()?;
    let elf = std::fs::read(&cfg.elf).map_err(|e| format!("{}: {e}", cfg.elf.display()))?;
    let mut decoder = LogDecoder::for_elf(&elf)?;
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
    decoder: &mut LogDecoder,
) -> Result<RunOutcome, String> {
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(cfg.args(log_path))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if cfg.interactive {
        cmd.stdin(Stdio::inherit());
    } else {
        // A group of its own, so a timeout stops everything it started.
        cmd.stdin(Stdio::null()).process_group(0);
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
    let mut take_console = |chunk: Vec<u8>, screen: &mut Screen| {
        let bytes: Vec<u8> = chunk.into_iter().filter(|&b| b != b'\r').collect();
        screen.console(&bytes);
        console.extend_from_slice(&bytes);
    };
    let mut tail_log = |screen: &mut Screen, log: &mut Vec<String>| {
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
    while qemu.status.is_none() {
        match rx.recv_timeout(POLL) {
            Ok(chunk) => take_console(chunk, &mut screen),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                pipe_open = false;
                std::thread::sleep(POLL);
            }
        }
        tail_log(&mut screen, &mut log);
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
            Ok(chunk) => take_console(chunk, &mut screen),
            Err(_) => pipe_open = false,
        }
    }
    tail_log(&mut screen, &mut log);
    if let Some(line) = decoder.finish() {
        screen.log(&line);
        log.push(line);
    }
    screen.finish();

    let mut console = String::from_utf8_lossy(&console).into_owned();
    if !decoder.is_defmt() {
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
    let qemu_errors: Vec<&str> = qemu_errors.lines().filter(|l| !noise(l)).collect();
    if !qemu_errors.is_empty() {
        let lines = format!("[qemu] {}", qemu_errors.join("\n[qemu] "));
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
        assert!(a.contains(" -icount shift=0,sleep=off -rtc base=2024-01-01T00:00:00,clock=vm"));
        assert!(!a.contains("semihosting"));
        assert!(a.ends_with(" -append x"));
    }

    #[test]
    fn signals_read_as_the_shell_does() {
        assert_eq!(exit_code(ExitStatus::from_raw(2 << 8)), 2);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 128 + 9);
    }
}
