//! Builds the bare-metal test guest (`tests/guests/testguest`) into a
//! flat arm64 Image, the form in which the hypervisor takes a domain's
//! kernel (a guest-loader boot module).
//!
//! Owns nothing but the guest's build outputs under the target directory;
//! how the guest is booted is the caller's business (`tests/tests/testguest.rs`).

use std::path::PathBuf;
use std::sync::Mutex;

use crate::cargo::Build;
use crate::host::target_dir;
use crate::image::{Built, elf_to_image};

/// Where the guest is linked: guest RAM base + text_offset 0
/// (`armvm::layout::RAM0_BASE`), where the hypervisor puts a domain's kernel.
pub const LOAD_ADDRESS: u64 = 0x4000_0000;
/// Where the `bare-qemu` build is linked: QEMU's `-kernel` puts an Image
/// whose text_offset is below 2 MiB at RAM + 2 MiB + text_offset.
pub const LOAD_ADDRESS_BARE_QEMU: u64 = 0x4020_0000;

/// The `bootargs` the guest expects in its `/chosen` (it checks them).
pub const BOOTARGS: &str = "testguest";

/// The default and the `bare-qemu` build write the same cargo output; hold
/// this across build + copy (threads of one process; a lock file covers
/// processes).
static BUILD: Mutex<()> = Mutex::new(());

/// Builds the test guest (release) and returns the path of its Image.
pub fn build_testguest() -> Result<PathBuf, String> {
    build(false).map(|b| b.image)
}

/// Builds the test guest for `bare_qemu` or for hv-arm's guest map and
/// writes its Image; `bare_qemu` selects QEMU virt's own device addresses,
/// to run the guest on QEMU with no hypervisor.
pub fn build(bare_qemu: bool) -> Result<Built, String> {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target_dir().join("aarch64-unknown-none").join("release");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = dir.join(".testguest-build.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // Released when `lock` is dropped, on every return path.
    lock.lock()
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let features = if bare_qemu {
        vec!["bare-qemu".to_string()]
    } else {
        Vec::new()
    };
    let elf = Build {
        package: "testguest",
        target: "aarch64-unknown-none",
        features,
        no_default_features: false,
        release: true,
    }
    .run()?;
    let name = if bare_qemu {
        "testguest-bare-qemu"
    } else {
        "testguest"
    };
    let kept = dir.join(format!("{name}.elf"));
    let bytes = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    crate::image::replace_file(&kept, &bytes)?;
    let image = dir.join(format!("{name}.img"));
    let info = elf_to_image(&kept, &image)?;
    // The guest runs with the MMU off at its link address: loaded anywhere
    // else it would fail (it says so), so refuse such a build here.
    let want = if bare_qemu {
        LOAD_ADDRESS_BARE_QEMU
    } else {
        LOAD_ADDRESS
    };
    if info.load_address != want {
        return Err(format!(
            "{} starts at {:#x}, but is loaded at {want:#x}",
            kept.display(),
            info.load_address
        ));
    }
    if info.image_size < info.file_size {
        return Err(format!(
            "{}: image_size {:#x} is smaller than the file ({:#x} bytes)",
            kept.display(),
            info.image_size,
            info.file_size
        ));
    }
    Ok(Built {
        elf: kept,
        image,
        info,
    })
}
