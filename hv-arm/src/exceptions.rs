//! EL2 exception handlers.
//!
//! IRQs go to [`crate::irq`]. Anything else is unexpected at this stage (no
//! guest runs yet): the handler prints the syndrome, the fault and return
//! addresses and the CPU, then stops the machine with a failure status
//! instead of hanging silently. The one tolerated case is a semihosting
//! call with no emulator behind it (see [`crate::semihost`]).

use aarch64_rt::{ExceptionHandlers, RegisterStateRef, exception_handlers};

use crate::{arch, semihost};

/// ESR_EL2.EC of an instruction the CPU does not recognise.
const EC_UNKNOWN: u64 = 0x00;

struct Handlers;

exception_handlers!(Handlers);

fn unexpected(kind: &str, state: &RegisterStateRef) -> ! {
    let (esr, far, elr) = arch::fault_registers();
    crate::fatal(
        1,
        format_args!(
            "unexpected {} on cpu {}: ESR_EL2={:#x} (EC {:#x}) FAR_EL2={:#x} ELR_EL2={:#x} SPSR={:#x}",
            kind,
            arch::cpu_id(),
            esr,
            esr >> 26,
            far,
            elr,
            state.spsr
        ),
    )
}

impl ExceptionHandlers for Handlers {
    extern "C" fn sync_current(mut state: RegisterStateRef) {
        let (esr, _, elr) = arch::fault_registers();
        if esr >> 26 == EC_UNKNOWN && elr == state.elr as u64 {
            // SAFETY: ELR points at the instruction that just failed to
            // execute in our own text; reading 4 aligned bytes there is fine.
            let insn = unsafe { (elr as *const u32).read_volatile() };
            if insn == semihost::HLT_SEMIHOSTING {
                semihost::mark_absent();
                // SAFETY: skipping the 4-byte HLT and returning -1 (the
                // semihosting error value) is what the call's caller expects
                // from a refused call.
                let regs = unsafe { state.get_mut() };
                regs.elr += 4;
                regs.registers[0] = u64::MAX;
                return;
            }
        }
        unexpected("synchronous exception at EL2", &state)
    }

    extern "C" fn irq_current(_state: RegisterStateRef) {
        crate::irq::handle();
    }

    extern "C" fn fiq_current(state: RegisterStateRef) {
        unexpected("FIQ at EL2", &state)
    }

    extern "C" fn serror_current(state: RegisterStateRef) {
        unexpected("SError at EL2", &state)
    }

    extern "C" fn sync_lower(state: RegisterStateRef) {
        unexpected("synchronous exception from a lower EL", &state)
    }

    extern "C" fn irq_lower(_state: RegisterStateRef) {
        crate::irq::handle();
    }

    extern "C" fn fiq_lower(state: RegisterStateRef) {
        unexpected("FIQ from a lower EL", &state)
    }

    extern "C" fn serror_lower(state: RegisterStateRef) {
        unexpected("SError from a lower EL", &state)
    }
}
