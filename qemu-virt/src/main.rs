//! qemu-virt: the host side of the project's two commands.
//!
//! `cargo run` builds hv-arm for QEMU virt, boots it and shows its console
//! and decoded log; `cargo run -- test` runs the whole suite; `cargo run --
//! build --board NAME` only builds a flashable Image.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use qemu_virt::image::build_hv_arm;
use qemu_virt::qemu::{ESCAPE_KEYS, RunConfig, run};

const AFTER_HELP: &str = "\
Without a subcommand, qemu-virt builds hv-arm for QEMU virt (release, Image
in target/aarch64-unknown-none/release/) and boots it with
  qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max
      -smp CPUS -m MEMORY -kernel hv-arm-qemu-virt.img
installing qemu-system-arm and device-tree-compiler with apt-get first if
they are missing (it says so).

What the output shows:
  plain lines   the console (the board's PL011 UART), on stdout: the banner
                `hv-arm 0.1.0 (board qemu-virt), entered at EL2 ...`, what the
                device tree described (memory, cpus, gic, timer, uart, smmu),
                each CPU coming up, `all N cpus up in ...` (counter time from
                entry to the last CPU), 10 EL2 timer ticks per CPU, and
                `powering off`.
  [hv] lines    the hypervisor's own log, on stderr:
                `[hv] <seconds since entry> <LEVEL> <message>`: defmt frames
                sent over semihosting, decoded with the image's ELF. With
                --text-log hv-arm prints its log as `(hv)` lines on the
                console instead.
  [qemu] lines  QEMU's own error messages.
  qemu-virt:    this tool's own lines (installs, timeout, QEMU's status).

Exit status is QEMU's: 0 after hv-arm's PSCI SYSTEM_OFF, 1 after a panic or
an unexpected exception, 2 when hv-arm rejected the device tree or the
board, 124 when --timeout stopped it.

Typing: when stdin is a terminal, what you type goes to the console too
(-serial mon:stdio), Ctrl-c included. Ctrl-a x quits QEMU, Ctrl-a c
switches between the console and QEMU's monitor, Ctrl-a h lists the other
Ctrl-a keys. --timeout still applies.

Examples:
  cargo run                              the demo: 4 CPUs, 1 GiB
  cargo run -- --cpus 1 --memory 512     another shape of the board
  cargo run -- --icount                  repeatable guest time
  cargo run -- -- -d guest_errors        extra QEMU arguments after --
  cargo run -- build --board rpi4        build only; last line = Image path
  cargo run -- test                      the whole test suite";

/// Builds the hv-arm hypervisor and boots it under QEMU virt (the default),
/// builds flashable Images for real boards (`build`), or runs the whole test
/// suite (`test`).
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
    /// CPUs (-smp).
    #[arg(long, default_value_t = 4, value_name = "N")]
    cpus: u32,
    /// RAM in MiB (-m).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    memory: u32,
    /// Seconds before QEMU is stopped (exit status 124).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
    /// Repeatable guest time: -icount shift=0,sleep=off (one virtual ns per
    /// instruction), dtb-randomness=off and an RTC on the VM clock.
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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a flashable Image without booting it; its path is the last line.
    ///
    /// Prints the Image's size, how to put it on the board, then its path
    /// (target/aarch64-unknown-none/release/hv-arm-BOARD.img) on the last
    /// line. rpi4 and zcu102 boot with U-Boot's `booti`.
    Build {
        /// Board profile: qemu-virt, rpi4 or zcu102.
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
    /// tests, device-tree tests over real board trees, QEMU boot tests); a
    /// short fuzz pass over the device-tree parser when a nightly toolchain
    /// is present (skipped otherwise, and said so). Every step runs even
    /// after a failure; the last line is `suite: N passed, M failed` and the
    /// status is non-zero when a step failed.
    Test,
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
        None => boot(cli.run),
    }
}

fn build(board: &str, text_log: bool) -> ExitCode {
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
    let mut cfg = RunConfig::new(built.image, built.elf);
    cfg.cpus = args.cpus;
    cfg.memory_mb = args.memory;
    cfg.timeout = Duration::from_secs(args.timeout);
    cfg.icount = args.icount;
    cfg.machine_opts = args
        .machine
        .map(|m| m.split(',').map(String::from).collect())
        .unwrap_or_default();
    cfg.extra_args = args.qemu_args;
    cfg.interactive = std::io::stdin().is_terminal();
    if cfg.interactive {
        eprintln!("qemu-virt: typing goes to the console; {ESCAPE_KEYS}");
    }
    match run(&cfg) {
        Ok(out) => {
            if out.timed_out {
                eprintln!("qemu-virt: stopped after {} s (--timeout)", args.timeout);
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
        assert_eq!(cli.run.cpus, 1);
        assert!(cli.run.icount);
        assert_eq!(cli.run.qemu_args, ["-d", "guest_errors"]);
        let cli = Cli::parse_from(["qemu-virt", "build", "--board", "rpi4"]);
        assert!(
            matches!(cli.command, Some(Cmd::Build { board, text_log: false }) if board == "rpi4")
        );
    }

    #[test]
    fn help_explains_the_output_and_the_escape_key() {
        let help = Cli::command().render_long_help().to_string();
        for s in ["[hv] lines", "Exit status", "Ctrl-a x", "build", "test"] {
            assert!(help.contains(s), "{s} missing from --help");
        }
    }
}
