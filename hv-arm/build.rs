//! Writes the linker script for the selected board: the image is linked at
//! the profile's load address and starts with the arm64 Image header.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let board = ["rpi4", "zcu102", "qemu-virt"]
        .into_iter()
        .find(|b| {
            env::var_os(format!(
                "CARGO_FEATURE_BOARD_{}",
                b.to_uppercase().replace('-', "_")
            ))
            .is_some()
        })
        .unwrap_or("qemu-virt");
    let profile = boards::by_name(board).expect("board profile exists");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = format!(
        include_str!("image.ld.in"),
        load = profile.load_address(),
        text_offset = profile.text_offset,
    );
    fs::write(out.join("hv-arm.ld"), script).expect("write linker script");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rustc-link-arg-bins=-Thv-arm.ld");
    if env::var_os("CARGO_FEATURE_TEXT_LOG").is_none() {
        println!("cargo::rustc-link-arg-bins=-Tdefmt.x");
    }
    println!("cargo::rerun-if-changed=image.ld.in");
    println!("cargo::rerun-if-changed=../boards/src/lib.rs");
}
