//! hv-x86 under QEMU q35 (TCG): the banner on COM1, and the Multiboot2
//! header that GRUB and Bochs will look for.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qemu_virt::cargo::Build;

fn build() -> std::path::PathBuf {
    Build {
        package: "hv-x86",
        target: "x86_64-unknown-none",
        features: vec![],
        no_default_features: false,
        release: true,
    }
    .run()
    .expect("hv-x86 builds")
}

#[test]
fn banner_on_com1_under_qemu_q35() {
    qemu_virt::host::ensure_qemu_x86().unwrap();
    let elf = build();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M", "q35", "-accel", "tcg", "-cpu", "max", "-m", "128", "-display", "none",
        ])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel",
        ])
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("hv-x86 did not stop within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let out = out.replace('\r', "");
    assert!(out.starts_with("hv-x86 0.1.0 (board pc)\n"), "{out}");
    assert!(out.contains("loader: qemu (Multiboot1)"), "{out}");
    assert!(out.contains("memory: 127 MiB"), "{out}");
    // QEMU's TCG does not emulate VMX.
    assert!(out.contains("vmx: absent"), "{out}");
    // isa-debug-exit: (0x10 << 1) | 1 is success; a panic writes 0x11.
    assert_eq!(status.code(), Some(33), "{out}");
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn multiboot_headers_are_where_loaders_look() {
    let elf = std::fs::read(build()).unwrap();
    // Multiboot2: 8-byte aligned in the first 32 KiB, checksummed, ending
    // with an end tag (type 0, size 8).
    let mb2 = (0..32768 - 16)
        .step_by(8)
        .find(|&o| le32(&elf, o) == 0xe852_50d6)
        .expect("Multiboot2 header in the first 32 KiB");
    let (arch, len) = (le32(&elf, mb2 + 4), le32(&elf, mb2 + 8) as usize);
    assert_eq!(arch, 0, "i386 protected-mode entry");
    assert_eq!(
        0xe852_50d6u32
            .wrapping_add(arch)
            .wrapping_add(len as u32)
            .wrapping_add(le32(&elf, mb2 + 12)),
        0
    );
    assert!(len >= 24 && len % 8 == 0);
    assert_eq!(&elf[mb2 + len - 8..mb2 + len], &[0, 0, 0, 0, 8, 0, 0, 0]);
    // Multiboot1 (for QEMU -kernel): 4-byte aligned in the first 8 KiB,
    // with the a.out-kludge addresses (flag 16) inside the image.
    let mb1 = (0..8192 - 32)
        .step_by(4)
        .find(|&o| le32(&elf, o) == 0x1bad_b002)
        .expect("Multiboot1 header");
    let flags = le32(&elf, mb1 + 4);
    assert_eq!(
        0x1bad_b002u32
            .wrapping_add(flags)
            .wrapping_add(le32(&elf, mb1 + 8)),
        0
    );
    assert!(flags & (1 << 16) != 0);
    let (header, load, load_end, bss_end, entry) = (
        le32(&elf, mb1 + 12),
        le32(&elf, mb1 + 16),
        le32(&elf, mb1 + 20),
        le32(&elf, mb1 + 24),
        le32(&elf, mb1 + 28),
    );
    assert_eq!(load, 0x10_0000);
    assert!(
        load <= header
            && header < load_end
            && load_end <= bss_end
            && (load..load_end).contains(&entry)
    );
}
