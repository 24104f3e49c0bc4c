//! Arm semihosting: the log channel and the exit path under an emulator.
//!
//! Log bytes go out with SYS_WRITE0/SYS_WRITEC, the calls QEMU routes to the
//! chardev named by `-semihosting-config chardev=` (a `:tt` handle would be
//! QEMU's own stdout, mixed with the console). defmt's rzcobs frames contain
//! no zero byte except the frame delimiter, so each run of non-zero bytes is
//! one SYS_WRITE0 and each delimiter one SYS_WRITEC.
//!
//! Semihosting calls are `hlt #0xf000` traps an emulator or debugger
//! services. Without one (a plain QEMU without `-semihosting`, or a board
//! with no debugger) the instruction is undefined; the exception handler
//! recognises that case, marks semihosting absent and skips the call, so the
//! hypervisor keeps running with its console and only the log is lost.

#[cfg(not(feature = "text-log"))]
use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, Ordering};

#[cfg(not(feature = "text-log"))]
use semihosting::sys::arm_compat::{sys_write0, sys_writec};

/// False once a semihosting call trapped as undefined.
static PRESENT: AtomicBool = AtomicBool::new(true);

/// The encoding of `hlt #0xf000`.
pub const HLT_SEMIHOSTING: u32 = 0xd45e_0000;

/// Called by the exception handler when `hlt #0xf000` was undefined.
pub fn mark_absent() {
    PRESENT.store(false, Ordering::SeqCst);
}

/// True while semihosting calls are serviced.
pub fn present() -> bool {
    PRESENT.load(Ordering::SeqCst)
}

/// Writes log bytes. Called only under the log lock.
#[cfg(not(feature = "text-log"))]
pub fn write_log(bytes: &[u8]) {
    let mut run = [0u8; 129];
    for piece in bytes.split_inclusive(|&b| b == 0) {
        let (text, delimiter) = match piece.split_last() {
            Some((0, text)) => (text, true),
            _ => (piece, false),
        };
        for chunk in text.chunks(run.len() - 1) {
            if !present() {
                return;
            }
            run[..chunk.len()].copy_from_slice(chunk);
            run[chunk.len()] = 0;
            if let Ok(s) = CStr::from_bytes_until_nul(&run) {
                sys_write0(s);
            }
        }
        if delimiter && present() {
            sys_writec(0);
        }
    }
}

/// Ends the emulator with `code` if semihosting is serviced; returns if not.
pub fn exit(code: i32) {
    if present() {
        semihosting::process::exit(code);
    }
}
