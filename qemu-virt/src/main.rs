//! qemu-virt: the host side of the project's two commands.
//!
//! `cargo run` builds hv-arm for QEMU virt, boots it and shows its console
//! and decoded log; `cargo run -- test` runs the whole suite; `cargo run --
//! build --board NAME` only builds a flashable Image.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use qemu_virt::image::build_hv_arm;
use qemu_virt::qemu::{RunConfig, run};

/// Boots the hypervisor under QEMU `-M virt,virtualization=on,gic-version=3
/// -cpu max`, shows its console (plain text) and its own log (defmt frames
/// from semihosting, decoded with the ELF, printed as `[hv]` lines on
/// stderr), and exits with QEMU's status: 0 after the hypervisor's PSCI
/// SYSTEM_OFF, 2 when it refused the device tree or board, 1 after a panic
/// or unexpected exception, 124 when the timeout stopped it.
#[derive(Parser, Debug)]
#[command(name = "qemu-virt", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Board profile to boot (only qemu-virt can be booted here).
    #[arg(long, default_value = "qemu-virt")]
    board: String,
    /// CPUs (-smp).
    #[arg(long, default_value_t = 4)]
    cpus: u32,
    /// RAM in MiB (-m).
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Seconds before QEMU is stopped (exit status 124).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Repeatable guest time: -icount shift=0,sleep=off (one virtual ns per
    /// instruction), dtb-randomness=off and a VM-clock RTC.
    #[arg(long)]
    icount: bool,
    /// Build with the text log (plain `(hv)` lines on the console).
    #[arg(long)]
    text_log: bool,
    /// Extra -M options, comma separated (e.g. iommu=smmuv3).
    #[arg(long)]
    machine: Option<String>,
    /// Extra QEMU arguments, after `--`.
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a flashable Image without booting it; prints its path last.
    Build {
        /// Board profile: qemu-virt, rpi4, zcu102.
        #[arg(long, default_value = "qemu-virt")]
        board: String,
        /// Plain-text log on the console instead of defmt frames.
        #[arg(long)]
        text_log: bool,
    },
    /// Run the whole test suite (fmt, clippy, unit, DT and boot tests, every board's Image).
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
        Some(Cmd::Build { board, text_log }) => match build_hv_arm(&board, text_log) {
            Ok(built) => {
                let profile = boards::by_name(&board);
                println!(
                    "{} Image: {} bytes ({} KiB), loads at {:#x}, {} KiB in memory",
                    board,
                    built.info.file_size,
                    built.info.file_size.div_ceil(1024),
                    built.info.load_address,
                    built.info.image_size.div_ceil(1024)
                );
                if let Some(p) = profile {
                    println!("to flash: {}", p.flashing);
                }
                println!("{}", built.image.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("qemu-virt: {e}");
                ExitCode::FAILURE
            }
        },
        None => boot(cli.run),
    }
}

fn boot(args: RunArgs) -> ExitCode {
    if args.board != "qemu-virt" {
        eprintln!(
            "qemu-virt: board '{}' cannot be booted here; use `cargo run -- build --board {}` and flash the Image",
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
    match run(&cfg) {
        Ok(out) => {
            if out.timed_out {
                eprintln!("qemu-virt: stopped after {} s", args.timeout);
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
