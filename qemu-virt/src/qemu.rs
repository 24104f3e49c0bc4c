//! Boots an image under QEMU `-M virt` and collects what it prints.
//!
//! The console (the board's PL011) is QEMU's stdout: copied to ours as it
//! arrives and kept. The hypervisor's log arrives on the semihosting
//! console chardev (a file QEMU appends to), is tailed while QEMU runs and
//! decoded with the ELF's defmt table; decoded lines go to stderr prefixed
//! `[hv]` and are kept too.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::log::LogDecoder;

/// QEMU's exit status when the timeout ended the run.
pub const TIMED_OUT: i32 = 124;

/// One boot.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The flashable Image.
    pub image: PathBuf,
    /// Its ELF (for the log decoder).
    pub elf: PathBuf,
    /// CPUs (`-smp`).
    pub cpus: u32,
    /// RAM in MiB (`-m`).
    pub memory_mb: u32,
    /// Wall-clock limit.
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
}

impl RunConfig {
    /// Defaults for an image: 4 CPUs, 1 GiB, 60 s.
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
        }
    }

    /// The QEMU command line (without the program name).
    pub fn args(&self, log_file: &str) -> Vec<String> {
        let mut machine = String::from("virt,virtualization=on,gic-version=3");
        if self.icount {
            machine.push_str(",dtb-randomness=off");
        }
        for o in &self.machine_opts {
            machine.push(',');
            machine.push_str(o);
        }
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
            "stdio",
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
                format!("file,id=hvlog,path={log_file}"),
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
    /// QEMU's exit status ([`TIMED_OUT`] if the timeout ended it).
    pub status: i32,
    /// Everything the console printed.
    pub console: String,
    /// The decoded hypervisor log, one entry per line.
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
    std::fs::write(&log_path, b"").map_err(|e| format!("{}: {e}", log_path.display()))?;

    let mut child = Command::new("qemu-system-aarch64")
        .args(cfg.args(&log_path.to_string_lossy()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?;

    let console = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let echo = cfg.echo;
    let sink = Arc::clone(&console);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let bytes: Vec<u8> = buf[..n].iter().copied().filter(|&b| b != b'\r').collect();
            if echo {
                let _ = std::io::stdout().write_all(&bytes);
                let _ = std::io::stdout().flush();
            }
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&bytes);
        }
    });
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let started = Instant::now();
    let mut log = Vec::new();
    let mut offset = 0usize;
    let mut tail = |log: &mut Vec<String>| {
        if let Ok(bytes) = std::fs::read(&log_path)
            && bytes.len() > offset
        {
            for line in decoder.feed(&bytes[offset..]) {
                if echo {
                    eprintln!("{line}");
                }
                log.push(line);
            }
            offset = bytes.len();
        }
    };
    let (status, timed_out) = loop {
        tail(&mut log);
        match child.try_wait() {
            Ok(Some(st)) => break (st.code().unwrap_or(-1), false),
            Ok(None) if started.elapsed() > cfg.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break (TIMED_OUT, true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for qemu: {e}")),
        }
    };
    tail(&mut log);
    let _ = reader.join();
    let qemu_errors = errors.join().unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    let mut console =
        String::from_utf8_lossy(&console.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let noise =
        |l: &&str| l.contains("terminating on signal") || l.contains("icount sleep disabled");
    let qemu_errors: Vec<&str> = qemu_errors.lines().filter(|l| !noise(l)).collect();
    if !qemu_errors.is_empty() {
        console.push_str("\n[qemu] ");
        console.push_str(&qemu_errors.join("\n[qemu] "));
        if echo {
            eprintln!("[qemu] {}", qemu_errors.join("\n[qemu] "));
        }
    }
    Ok(RunOutcome {
        status,
        console,
        log,
        timed_out,
    })
}
