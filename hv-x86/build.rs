//! Links the bare-metal binary with linker.ld at the pc profile's load
//! address: one loadable segment, so the Multiboot1 a.out-kludge addresses
//! describe the file exactly. Host builds (the library's unit tests) get no
//! link arguments.

use std::env;

fn main() {
    println!("cargo::rerun-if-changed=linker.ld");
    println!("cargo::rerun-if-changed=../boards/src/lib.rs");
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-none") {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::rustc-link-arg-bins=-T{dir}/linker.ld");
    println!(
        "cargo::rustc-link-arg-bins=--defsym=hv_load_address={:#x}",
        boards::PC.load_address()
    );
    // The target defaults to a static PIE, whose absolute addresses wait for
    // a relocating loader; Multiboot loaders copy the image as it is.
    println!("cargo::rustc-link-arg-bins=--no-pie");
}
