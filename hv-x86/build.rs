//! Passes hv-x86's linker script: one loadable segment at 1 MiB, so the
//! Multiboot1 a.out-kludge addresses describe the file exactly.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo::rustc-link-arg-bins=--no-pie");
    println!("cargo::rerun-if-changed=linker.ld");
}
