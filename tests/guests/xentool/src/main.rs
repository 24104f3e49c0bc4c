//! xentool: an in-guest test of the Xen guest ABI as an unmodified Linux
//! (Debian's arm64 6.1) uses it from user space, through the device nodes
//! of xen-evtchn, xen-gntalloc, xen-gntdev and xen-privcmd.
//!
//! Two domains run it against each other: `serve` in one allocates an
//! event channel and two granted pages (one writable, one read-only) and
//! prints them; `connect` in the other binds the channel, maps the grants,
//! runs an event-channel ping-pong over the writable page, then checks
//! that the hypervisor refuses what it must (a bad grant reference, a
//! write mapping of a read-only grant, another domain's port, a port never
//! allocated, a raw map of a bad grant) and still works afterwards.
//! `bench` measures the same paths; `status-static` reports the state of
//! event channels the device tree set up. Results are lines starting
//! `XT: ` (see the README of each command in [`args::USAGE`] and the
//! report formats in `cmd.rs`).

mod args;
mod cmd;
mod proto;
mod stats;
mod sys;
mod uapi;
mod xen;
mod xendev;

use args::Command;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match args::parse(&argv) {
        Ok(Command::Serve { peer }) => cmd::serve(peer),
        Ok(Command::Connect {
            peer,
            port,
            rw,
            ro,
            count,
        }) => cmd::connect(peer, port, rw, ro, count),
        Ok(Command::Bench {
            peer,
            port,
            rw,
            count,
        }) => cmd::bench(peer, port, rw, count),
        Ok(Command::StatusStatic { ports }) => cmd::status_static(&ports),
        Ok(Command::Help) => {
            println!("{}", args::USAGE);
            0
        }
        Err(e) => {
            eprintln!("xentool: {e}\n{}", args::USAGE);
            2
        }
    };
    std::process::exit(code);
}
