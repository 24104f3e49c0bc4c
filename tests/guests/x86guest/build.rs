//! Links the guest with linker.ld as a plain ET_EXEC: one loadable
//! segment at 0x8000, as the hv-x86 domain builder expects. Only the
//! bare-metal build gets link arguments (a host build of this crate is not
//! supported, but should fail for that reason, not a link error).

use std::env;

fn main() {
    println!("cargo::rerun-if-changed=linker.ld");
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-none") {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::rustc-link-arg-bins=-T{dir}/linker.ld");
    // The target defaults to a static PIE; the hypervisor copies segments
    // to their p_paddr and relocates nothing.
    println!("cargo::rustc-link-arg-bins=--no-pie");
}
