//! qemu-virt: the host side of the project's two commands.
//!
//! `cargo run` builds hv-arm for QEMU virt, boots it with two Debian arm64
//! Linux domains (scenarios/two-linux.toml) and hands over their shells
//! (`--scenario FILE`: another scenario; `--guest linux`: one dom0-style
//! guest; `--guest none`: the hypervisor alone); `cargo run -- test` runs the whole suite; `cargo run
//! -- build --board NAME` only builds a flashable Image; `cargo run -- bench
//! linux` measures a guest boot against the same kernel booted directly.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use qemu_virt::image::build_hv_arm;
use qemu_virt::linux::{self, Mode};
use qemu_virt::multi;
use qemu_virt::qemu::{ESCAPE_KEYS, RunConfig, run};
use qemu_virt::scenario::Scenario;

const AFTER_HELP: &str = "\
Without a subcommand, qemu-virt builds hv-arm for QEMU virt (release, Image
in target/aarch64-unknown-none/release/) and boots a scenario
(--scenario FILE, default scenarios/two-linux.toml: two domains, linux1
and linux2, with 2 vCPUs and 256 MiB each on 4 CPUs). It writes a device
tree with the domains as Xen dom0less /chosen nodes (QEMU's own tree plus
the scenario's nodes, merged by dtc, kept in target/cache/scenarios/) and
loads each module file once: Debian's own arm64 kernel
(linux-image-*-arm64, fetched with apt-get download and cached in
target/cache/) and a busybox initramfs it builds:
  qemu-system-aarch64 -M virt,virtualization=on,gic-version=3
      -cpu max,pauth-impdef=on -smp 4 -m 2048 -kernel hv-arm-qemu-virt.img
      -dtb target/cache/scenarios/run-PID-0.dtb
      -device guest-loader,addr=0x41000000,kernel=Image
      -device guest-loader,addr=0x43000000,initrd=initramfs.cpio.gz
Each domain's command line comes from the scenario (--bootargs adds to it;
--hvtest MODE sets its hvtest=). The initramfs's /init prints `HVTEST: ...`
lines (CPUs, interrupt counts) and then, for hvtest=shell (the default when
stdin is a terminal), gives a busybox shell on the domain's console:
`poweroff -f` or `exit` powers that domain off. Other modes: poweroff (the
default otherwise), reboot (reboots once, then powers off), hostile (a
process reads unmapped memory and dies of SIGBUS), panic (a kernel panic
first, then power-off), ticker (prints its timer tick count every second
until a line is typed). --guest linux boots one guest from dom0-style
top-level modules instead (domain d1, 2 vCPUs, 512 MiB, on 2 CPUs);
--guest none boots the hypervisor alone: 4 CPUs, 1 GiB, no guest, and it
powers off after its CPUs have ticked.

qemu-system-arm and device-tree-compiler are installed with apt-get first
if they are missing (it says so).

What the output shows:
  plain lines   the console (the board's PL011 UART), on stdout: the banner
                `hv-arm 0.1.0 (board qemu-virt), entered at EL2 ...`, what the
                device tree described (memory, cpus, gic, timer, uart, smmu),
                each CPU coming up, the domains built (or refused, by
                node), then the domains' consoles, each line prefixed
                `(name) ` (Linux's boot messages, /init's `HVTEST:` lines,
                the shells), and `(hv)` lines when the input focus
                moves. With --guest
                none: `all N cpus up in ...` (counter time from entry to the
                last CPU), 10 EL2 timer ticks per CPU, and `powering off`.
  [hv] lines    the hypervisor's own log, on stderr:
                `[hv] <seconds since entry> <LEVEL> <message>`: defmt frames
                sent over semihosting, decoded with the image's ELF. With
                --text-log hv-arm prints its log as `(hv)` lines on the
                console instead.
  [qemu] lines  QEMU's own error messages.
  qemu-virt:    this tool's own lines (installs, timeout, QEMU's status).

Exit status is QEMU's: 0 after hv-arm's PSCI SYSTEM_OFF (with domains: after
the last one powered off), 3 when a domain was destroyed after a crash, 1
after a panic or an unexpected exception in the hypervisor, 2 when hv-arm
rejected the device tree or the board or could build no domain, 124 when
--timeout stopped it.

Typing: when stdin is a terminal, what you type goes to the console too
(-serial mon:stdio), Ctrl-c included, and from there to the domain with
the input focus; Ctrl-a three times moves the focus to the next domain.
QEMU's escape key is Ctrl-t (-echr 0x14): Ctrl-t x quits QEMU, Ctrl-t c
switches between the console and QEMU's monitor, Ctrl-t h lists the other
Ctrl-t keys. --timeout still applies.

Examples:
  cargo run                              the demo: two Linux domains' shells
  cargo run -- --hvtest poweroff         boot both domains, check, power off
  cargo run -- --scenario scenarios/four-on-two.toml   4 domains on 2 CPUs
  cargo run -- --guest linux             one guest from dom0-style modules
  cargo run -- --bootargs loglevel=4     more guest kernel parameters
  cargo run -- --guest none              the hypervisor alone: 4 CPUs, 1 GiB
  cargo run -- --guest none --cpus 1 --memory 512
  cargo run -- --icount                  repeatable guest time
  cargo run -- -- -append hv.selftest=fault   the hypervisor's command line
  cargo run -- -- -d guest_errors        extra QEMU arguments after --
  cargo run -- build --board rpi4        build only; last line = Image path
  cargo run -- bench linux               guest vs. native Linux boot times
  cargo run -- bench xen                 Xen-ABI hypercall/evtchn/grant figures
  cargo run -- bench tmem                tmem puts/gets (host, guest), compression
  cargo run -- test                      the whole test suite";

/// Builds the hv-arm hypervisor and boots it under QEMU virt with a Linux
/// guest (the default), builds flashable Images for real boards (`build`),
/// measures a guest boot (`bench linux`), or runs the whole test suite
/// (`test`).
#[derive(Parser, Debug)]
#[command(name = "qemu-virt", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Board profile to boot; only qemu-virt can be booted here (the others:
    /// use `build` and flash the Image).
    #[arg(long, default_value = "qemu-virt", value_name = "NAME")]
    board: String,
    /// What runs on the hypervisor instead of a scenario: one Debian arm64
    /// Linux with the runner's busybox initramfs, from top-level /chosen
    /// modules (domain d1), or nothing (the hypervisor ticks and powers off).
    #[arg(long, value_enum, value_name = "GUEST", conflicts_with = "scenario")]
    guest: Option<Guest>,
    /// A scenario file (TOML, see scenarios/README.md): the machine and its
    /// domains, booted as Xen dom0less domains from one device tree
    /// [default: scenarios/two-linux.toml, unless --guest is given].
    #[arg(long, value_name = "FILE")]
    scenario: Option<std::path::PathBuf>,
    /// What the Linux guests' /init does (kernel parameter hvtest=, set in
    /// every domain of a scenario): shell, poweroff, reboot, hostile, panic
    /// or ticker [default: shell when stdin is a terminal, poweroff
    /// otherwise; a scenario keeps its own unless this is given or there is
    /// no terminal].
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    hvtest: Option<Mode>,
    /// More kernel parameters for the Linux guest, after `console=ttyAMA0
    /// hvtest=MODE`.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    bootargs: Option<String>,
    /// CPUs (-smp) [default: 2 with a Linux guest, 4 without].
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,
    /// RAM in MiB (-m) [default: 2048 with a Linux guest, 1024 without].
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// Seconds before QEMU is stopped (exit status 124), 0 for no limit
    /// [default: 60 without a guest, 300 with one, no limit for an
    /// interactive guest shell].
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Repeatable guest time: -icount shift=0,sleep=off (one virtual ns per
    /// instruction), dtb-randomness=off, an RTC on the VM clock and -seed 1
    /// (the guest's random numbers).
    #[arg(long)]
    icount: bool,
    /// Build with the text log: hv-arm's log as plain `(hv)` lines on the
    /// console instead of defmt frames over semihosting.
    #[arg(long)]
    text_log: bool,
    /// Extra -M options, comma separated (e.g. iommu=smmuv3).
    #[arg(long, value_name = "OPTS")]
    machine: Option<String>,
    /// Extra QEMU arguments, after `--` (appended last).
    #[arg(last = true, value_name = "QEMU ARGS")]
    qemu_args: Vec<String>,
}

/// What runs on the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Guest {
    /// Debian's arm64 kernel with the busybox initramfs.
    Linux,
    /// No guest: the hypervisor alone.
    None,
}

/// What `bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BenchWhat {
    /// A Linux boot as hv-arm's guest against the same kernel booted directly.
    Linux,
    /// Xen's ABI: two Linux domains on one CPU, xentool's benchmark.
    Xen,
    /// tmem: the store on the host (criterion), compression on real
    /// pages, and puts/gets in the test guest under icount.
    Tmem,
    /// hv-x86 under Bochs: VM-exit round trips (hypercalls, MSRs, ports)
    /// in the x86 test guest against a CPUID exit of the same run.
    X86,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a flashable Image without booting it; its path is the last line.
    ///
    /// Prints the Image's size, how to put it on the board, then its path
    /// (target/aarch64-unknown-none/release/hv-arm-BOARD.img) on the last
    /// line. rpi4 and zcu102 boot with U-Boot's `booti`.
    Build {
        /// Board profile: qemu-virt, rpi4, zcu102 or pc (hv-x86).
        #[arg(long, default_value = "qemu-virt", value_name = "NAME")]
        board: String,
        /// Plain-text log on the console instead of defmt frames.
        #[arg(long)]
        text_log: bool,
    },
    /// Run the whole test suite (what CI runs).
    ///
    /// Steps, in order, each under a `=== suite:` header: install the
    /// emulators if missing; rustfmt; clippy on the host crates, on hv-arm
    /// for every board (and with text-log) and on hv-x86; every board's
    /// flashable Image, with its size; `cargo test` over the workspace (unit
    /// tests, device-tree tests over real board trees, QEMU boot tests,
    /// Debian's Linux as hv-arm's guest and booted directly); a short fuzz
    /// pass over the device-tree parser when a nightly toolchain is present
    /// (skipped otherwise, and said so). Every step runs even after a
    /// failure; the last line is `suite: N passed, M failed` and the status
    /// is non-zero when a step failed.
    Test,
    /// Measure: `bench linux` boots Debian's kernel natively and as hv-arm's
    /// guest, under -icount, and prints a table of boot times.
    ///
    /// Both runs use -icount shift=0,sleep=off, dtb-randomness=off, an RTC
    /// on the VM clock and -seed 1 (guest time repeats exactly; one virtual
    /// ns is one instruction), 2 CPUs, and the guest command line `console=ttyAMA0
    /// hvtest=poweroff hvbench quiet`. The table gives, per run, the printk
    /// times of "Run /init as init process" and of /init's marker, and for
    /// the guest the hypervisor's times from entry to the first guest
    /// instruction and to the marker line (hv-arm runs with
    /// hv.console_timestamps=1), in µs and instructions, with guest/native
    /// ratios. Missing figures print n/a.
    Bench {
        /// What to measure.
        #[arg(value_enum)]
        what: BenchWhat,
        /// Show both runs' consoles and logs as they run.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Test) => {
            if qemu_virt::suite::run_all() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some(Cmd::Build { board, text_log }) => build(&board, text_log),
        Some(Cmd::Bench {
            what: BenchWhat::Linux,
            verbose,
        }) => match qemu_virt::bench::linux(verbose) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("qemu-virt: bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::Bench {
            what: BenchWhat::Xen,
            verbose,
        }) => match qemu_virt::bench::xen(verbose) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("qemu-virt: bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::Bench {
            what: BenchWhat::Tmem,
            verbose,
        }) => match qemu_virt::tmembench::tmem(verbose) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("qemu-virt: bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::Bench {
            what: BenchWhat::X86,
            verbose,
        }) => match qemu_virt::bochs::bench(verbose) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("qemu-virt: bench: {e}");
                ExitCode::FAILURE
            }
        },
        None => boot(cli.run),
    }
}

fn build(board: &str, text_log: bool) -> ExitCode {
    if board == boards::PC.name {
        return build_pc();
    }
    match build_hv_arm(board, text_log) {
        Ok(built) => {
            println!(
                "{board} Image: {} bytes ({} KiB), loads at {:#x}, {} KiB in memory",
                built.info.file_size,
                built.info.file_size.div_ceil(1024),
                built.info.load_address,
                built.info.image_size.div_ceil(1024)
            );
            if let Some(p) = boards::by_name(board) {
                println!("to flash: {}", p.flashing);
            }
            println!("{}", built.image.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qemu-virt: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The pc profile: hv-x86, a Multiboot2/Multiboot1 ELF (its log is on
/// COM1 and port 0xE9 already, so `--text-log` changes nothing).
fn build_pc() -> ExitCode {
    let built = qemu_virt::cargo::Build {
        package: "hv-x86",
        target: "x86_64-unknown-none",
        features: vec![],
        no_default_features: false,
        release: true,
    }
    .run();
    match built {
        Ok(elf) => {
            let bytes = std::fs::metadata(&elf).map(|m| m.len()).unwrap_or(0);
            println!("pc ELF: {bytes} bytes with debug info");
            println!("to boot: {}", boards::PC.flashing);
            println!("{}", elf.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qemu-virt: {e}");
            ExitCode::FAILURE
        }
    }
}

/// "No limit" for an interactive session: a week.
const NO_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

fn boot(args: RunArgs) -> ExitCode {
    if args.board != "qemu-virt" {
        eprintln!(
            "qemu-virt: board '{}' cannot be booted here (only qemu-virt can); \
             build its Image with `cargo run -- build --board {}` and flash it",
            args.board, args.board
        );
        return ExitCode::FAILURE;
    }
    let built = match build_hv_arm(&args.board, args.text_log) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("qemu-virt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let interactive = std::io::stdin().is_terminal();
    let mut cfg = match args.guest {
        Some(Guest::None) => {
            let mut cfg = RunConfig::new(built.image, built.elf);
            cfg.timeout = Duration::from_secs(60);
            cfg
        }
        Some(Guest::Linux) => {
            let mode = args.hvtest.unwrap_or(if interactive {
                Mode::Shell
            } else {
                Mode::Poweroff
            });
            let files = match linux::files() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("qemu-virt: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let bootargs = linux::bootargs(mode, args.bootargs.as_deref().unwrap_or(""));
            eprintln!(
                "qemu-virt: guest: {} + {}, command line \"{bootargs}\"",
                files.kernel.display(),
                files.initrd.display()
            );
            let mut cfg = linux::guest_config(&built, &files, &bootargs);
            cfg.timeout = if mode == Mode::Shell && interactive {
                NO_LIMIT
            } else {
                Duration::from_secs(300)
            };
            cfg
        }
        None => {
            if args.cpus.is_some() || args.memory.is_some() {
                eprintln!(
                    "qemu-virt: a scenario sets its own CPUs and memory ([machine] in the file); \
                     --cpus and --memory go with --guest"
                );
                return ExitCode::FAILURE;
            }
            let path = args
                .scenario
                .clone()
                .unwrap_or_else(multi::default_scenario);
            let mut s = match Scenario::load(&path) {
                Ok(s) => s,
                Err(errors) => {
                    for e in errors {
                        eprintln!("qemu-virt: {e}");
                    }
                    eprintln!("qemu-virt: the scenario was not booted");
                    return ExitCode::FAILURE;
                }
            };
            // Without a terminal nobody can type into a shell.
            let mode = args.hvtest.or((!interactive).then_some(Mode::Poweroff));
            if let Some(mode) = mode {
                multi::set_hvtest(&mut s, mode);
            }
            if let Some(extra) = &args.bootargs {
                for d in &mut s.domains {
                    d.bootargs = format!("{} {extra}", d.bootargs);
                }
            }
            for d in &s.domains {
                eprintln!(
                    "qemu-virt: domain {}: {} MiB, {} vcpus, command line \"{}\"",
                    d.name, d.memory_mb, d.cpus, d.bootargs
                );
            }
            let mut cfg = match multi::prepare(&s, &built, "", "run") {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("qemu-virt: {e}");
                    return ExitCode::FAILURE;
                }
            };
            eprintln!(
                "qemu-virt: scenario {} ({} domains), device tree {}",
                path.display(),
                s.domains.len(),
                cfg.dtb
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            let shells = s
                .domains
                .iter()
                .any(|d| d.bootargs.contains("hvtest=shell"));
            cfg.timeout = if shells && interactive {
                NO_LIMIT
            } else {
                Duration::from_secs(600)
            };
            cfg
        }
    };
    if let Some(cpus) = args.cpus {
        cfg.cpus = cpus;
    }
    if let Some(memory) = args.memory {
        cfg.memory_mb = memory;
    }
    match args.timeout {
        Some(0) => cfg.timeout = NO_LIMIT,
        Some(secs) => cfg.timeout = Duration::from_secs(secs),
        None => {}
    }
    cfg.icount = args.icount;
    cfg.machine_opts = args
        .machine
        .map(|m| m.split(',').map(String::from).collect())
        .unwrap_or_default();
    cfg.extra_args = args.qemu_args;
    cfg.interactive = interactive;
    if cfg.interactive {
        eprintln!("qemu-virt: typing goes to the console; {ESCAPE_KEYS}");
    }
    match run(&cfg) {
        Ok(out) => {
            if out.timed_out {
                eprintln!(
                    "qemu-virt: stopped after {} s (--timeout)",
                    cfg.timeout.as_secs()
                );
            }
            eprintln!("qemu-virt: QEMU exited with status {}", out.status);
            ExitCode::from(u8::try_from(out.status).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("qemu-virt: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_options_and_trailing_qemu_args() {
        let cli = Cli::parse_from([
            "qemu-virt",
            "--cpus",
            "1",
            "--icount",
            "--",
            "-d",
            "guest_errors",
        ]);
        assert!(cli.command.is_none());
        assert_eq!(cli.run.cpus, Some(1));
        assert!(cli.run.icount);
        assert_eq!(cli.run.guest, None);
        assert_eq!(cli.run.hvtest, None);
        assert_eq!(cli.run.qemu_args, ["-d", "guest_errors"]);
        let cli = Cli::parse_from(["qemu-virt", "build", "--board", "rpi4"]);
        assert!(
            matches!(cli.command, Some(Cmd::Build { board, text_log: false }) if board == "rpi4")
        );
    }

    #[test]
    fn parses_guest_options_and_bench() {
        let cli = Cli::parse_from([
            "qemu-virt",
            "--guest",
            "none",
            "--hvtest",
            "reboot",
            "--bootargs",
            "loglevel=4 x=a,b",
        ]);
        assert_eq!(cli.run.guest, Some(Guest::None));
        assert_eq!(cli.run.hvtest, Some(Mode::Reboot));
        assert_eq!(cli.run.bootargs.as_deref(), Some("loglevel=4 x=a,b"));
        assert!(Cli::try_parse_from(["qemu-virt", "--hvtest", "nope"]).is_err());
        assert!(Cli::try_parse_from(["qemu-virt", "--guest", "xen"]).is_err());
        let cli = Cli::parse_from(["qemu-virt", "bench", "linux"]);
        assert!(matches!(
            cli.command,
            Some(Cmd::Bench {
                what: BenchWhat::Linux,
                verbose: false
            })
        ));
        assert!(Cli::try_parse_from(["qemu-virt", "bench"]).is_err());
    }

    #[test]
    fn help_explains_the_output_and_the_escape_key() {
        let help = Cli::command().render_long_help().to_string();
        for s in [
            "[hv] lines",
            "Exit status",
            "Ctrl-t x",
            "scenario",
            "build",
            "test",
            "bench",
            "--guest none",
            "hvtest",
        ] {
            assert!(help.contains(s), "{s} missing from --help");
        }
    }
}
