//! hv-x86 under QEMU q35 (TCG), which has no VMX: the banner on COM1, the
//! refusal that names what is missing and the clean halt (its own exit
//! status, not a panic's); the exit status of a panic; and, without any
//! loader, the Multiboot headers GRUB, Bochs and QEMU look for in the
//! built file. The VMX path itself runs under Bochs (x86_bochs.rs).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qemu_virt::cargo::Build;

/// Builds of different features land on the same path: one at a time, each
/// copied out before the next.
static BUILD: Mutex<()> = Mutex::new(());

/// isa-debug-exit statuses, (value << 1) | 1 (see hv-x86/src/main.rs).
const EXIT_PANIC: i32 = (0x11 << 1) | 1;
const EXIT_NO_VMX: i32 = (0x12 << 1) | 1;

fn image(features: &[&str]) -> PathBuf {
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let elf = Build {
        package: "hv-x86",
        target: "x86_64-unknown-none",
        features: features.iter().map(|f| f.to_string()).collect(),
        no_default_features: false,
        release: true,
    }
    .run()
    .expect("hv-x86 builds");
    let name = match features {
        [] => "hv-x86.elf".to_string(),
        f => format!("hv-x86-{}.elf", f.join("-")),
    };
    let copy = qemu_virt::host::cache_dir().join(name);
    std::fs::copy(&elf, &copy).expect("copy the image out of the build");
    copy
}

/// Boots `elf` with `-kernel` (Multiboot1) and returns its exit status and
/// COM1 output; fails after 60 s of wall-clock time.
fn boot(elf: &PathBuf) -> (ExitStatus, String) {
    qemu_virt::host::ensure_qemu_x86().expect("qemu-system-x86_64 available");
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-M", "q35", "-accel", "tcg", "-cpu", "max", "-m", "128"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args([
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            String::from_utf8_lossy(&b).replace('\r', "")
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for qemu") {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) => (s, out),
        None => panic!("hv-x86 did not stop within 60 s\nCOM1:\n{out}\nqemu:\n{err}"),
    }
}

#[test]
fn without_vmx_it_says_so_and_halts_cleanly_under_qemu_q35() {
    let (status, out) = boot(&image(&[]));
    let lines: Vec<&str> = out.lines().collect();
    let banner = format!(
        "hv-x86 {} (board {})",
        env!("CARGO_PKG_VERSION"),
        boards::PC.name
    );
    assert_eq!(lines.first().copied(), Some(banner.as_str()), "{out}");
    // QEMU's -kernel is a Multiboot1 loader named "qemu"; 128 MiB less the
    // BIOS areas is 127 MiB of usable map ranges.
    assert!(lines.contains(&"loader: qemu (Multiboot1)"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("memory: 127 MiB usable (")),
        "{out}"
    );
    // Its own tables and heap come up before VMX is looked at.
    assert!(lines.iter().any(|l| l.starts_with("heap: ")), "{out}");
    assert!(lines.contains(&"cpu0: GDT, TSS and IDT loaded"), "{out}");
    // SeaBIOS' ACPI tables, found by the BIOS-area search (QEMU's
    // Multiboot1 loader hands over no RSDP).
    assert!(lines.iter().any(|l| l.starts_with("acpi: ")), "{out}");
    // QEMU's TCG does not emulate VMX: a clear refusal, then a clean halt.
    assert!(
        lines.contains(&"vmx: unavailable: this CPU has no VMX (CPUID.1:ECX bit 5 is clear)"),
        "{out}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("hv-x86: no domain can run without VMX; halting"),
        "{out}"
    );
    assert!(!out.contains("panic"), "{out}");
    assert_eq!(status.code(), Some(EXIT_NO_VMX), "{out}");
}

#[test]
fn a_panic_prints_its_message_and_exits_with_failure() {
    let (status, out) = boot(&image(&["selftest-panic"]));
    assert!(out.starts_with("hv-x86 "), "{out}");
    assert!(
        out.lines().any(
            |l| l.starts_with("hv-x86: panic: selftest-panic feature: checking the panic path")
        ),
        "{out}"
    );
    assert!(!out.contains("stopping"), "{out}");
    assert_eq!(status.code(), Some(EXIT_PANIC), "{out}");
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn multiboot_headers_are_where_loaders_look() {
    let elf = std::fs::read(image(&[])).unwrap();
    assert!(
        elf.len() >= 32 * 1024,
        "image shorter than the 32 KiB searched"
    );

    // Multiboot2: 8-byte aligned in the first 32 KiB, i386 entry,
    // checksummed, tags 8-byte aligned up to an end tag (type 0, size 8)
    // that closes the header.
    let mb2 = (0..32 * 1024 - 16)
        .step_by(8)
        .find(|&o| le32(&elf, o) == 0xe852_50d6)
        .expect("Multiboot2 header in the first 32 KiB");
    let (arch, len) = (le32(&elf, mb2 + 4), le32(&elf, mb2 + 8));
    assert_eq!(arch, 0, "i386 protected-mode entry");
    assert_eq!(
        0xe852_50d6u32
            .wrapping_add(arch)
            .wrapping_add(len)
            .wrapping_add(le32(&elf, mb2 + 12)),
        0,
        "Multiboot2 checksum"
    );
    let end = mb2 + len as usize;
    let mut tag = mb2 + 16;
    loop {
        assert!(tag + 8 <= end, "Multiboot2 tags run out before an end tag");
        let (kind, size) = (le16(&elf, tag), le32(&elf, tag + 4) as usize);
        assert!(size >= 8 && tag + size <= end, "tag {kind} of size {size}");
        if kind == 0 {
            assert_eq!((le16(&elf, tag + 2), size), (0, 8), "end tag");
            assert_eq!(tag + 8, end, "end tag closes the header");
            break;
        }
        tag += size.next_multiple_of(8);
    }

    // The ELF: what GRUB loads through Multiboot2.
    assert_eq!(&elf[..5], b"\x7fELF\x02", "ELF64");
    assert_eq!(le16(&elf, 16), 2, "ET_EXEC: loaders do not relocate");
    assert_eq!(le16(&elf, 18), 62, "x86-64");
    let entry = le64(&elf, 24);
    let (phoff, phentsize, phnum) = (
        le64(&elf, 32) as usize,
        le16(&elf, 54) as usize,
        le16(&elf, 56) as usize,
    );
    let loads: Vec<(u64, u64, u64, u64)> = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&p| le32(&elf, p) == 1)
        .map(|p| {
            (
                le64(&elf, p + 8),
                le64(&elf, p + 16),
                le64(&elf, p + 32),
                le64(&elf, p + 40),
            )
        })
        .collect();
    let [(offset, vaddr, filesz, memsz)] = loads[..] else {
        panic!("one PT_LOAD expected, found {loads:?}");
    };
    assert_eq!(vaddr, boards::PC.load_address());

    // Multiboot1 (for QEMU -kernel): 4-byte aligned in the first 8 KiB,
    // checksummed, with the a.out-kludge addresses (flag 16) describing the
    // very bytes the ELF program header does.
    let mb1 = (0..8192 - 32)
        .step_by(4)
        .find(|&o| le32(&elf, o) == 0x1bad_b002)
        .expect("Multiboot1 header in the first 8 KiB");
    let flags = le32(&elf, mb1 + 4);
    assert_eq!(
        0x1bad_b002u32
            .wrapping_add(flags)
            .wrapping_add(le32(&elf, mb1 + 8)),
        0,
        "Multiboot1 checksum"
    );
    assert_ne!(flags & (1 << 16), 0, "address fields valid");
    let field = |i: usize| u64::from(le32(&elf, mb1 + 12 + 4 * i));
    let (header, load, load_end, bss_end, mb1_entry) =
        (field(0), field(1), field(2), field(3), field(4));
    assert_eq!(load, vaddr);
    assert_eq!(
        mb1 as u64 - (header - load),
        offset,
        "QEMU reads the file from where the segment starts"
    );
    assert_eq!(load_end - load, filesz);
    assert_eq!(bss_end - load, memsz);
    assert_eq!(mb1_entry, entry);
    assert!((load..load_end).contains(&entry));
}
