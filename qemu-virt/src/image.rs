//! Flashable images: the ELF the linker writes, laid out flat from its load
//! address, as QEMU `-kernel` and U-Boot `booti` expect an arm64 Image.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use object::elf::PT_LOAD;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object};

use crate::cargo::Build;
use crate::host::target_dir;

/// Offset and value of the arm64 Image header magic ("ARM\x64").
const ARM64_MAGIC_OFFSET: usize = 0x38;
const ARM64_MAGIC: u32 = 0x644d_5241;
/// Largest span of loadable segments accepted.
const MAX_SPAN: u64 = 64 << 20;

/// What [`elf_to_image`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Physical address of the first byte.
    pub load_address: u64,
    /// Bytes in the file.
    pub file_size: u64,
    /// `image_size` from the arm64 header (file plus bss and stacks).
    pub image_size: u64,
}

/// Lays out the PT_LOAD segments of `elf` as a flat binary in `out`
/// (replaced atomically, see [`replace_file`]).
pub fn elf_to_image(elf: &Path, out: &Path) -> Result<ImageInfo, String> {
    let data = std::fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let image = flatten(&data)?;
    replace_file(out, &image.1)?;
    Ok(image.0)
}

/// Replaces `path` with `bytes` through a file of its own and a rename:
/// tests build the same image in parallel while others' QEMUs load it,
/// and a reader must see the old file or the new one, never one being
/// truncated and rewritten (a QEMU that loaded a half-written Image ran
/// garbage and printed nothing until its timeout).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

/// The flat image of an ELF held in memory.
pub fn flatten(data: &[u8]) -> Result<(ImageInfo, Vec<u8>), String> {
    let file = ElfFile64::<Endianness>::parse(data).map_err(|e| format!("not an ELF64: {e}"))?;
    let endian = file.endian();
    let mut segs: Vec<(u64, &[u8])> = Vec::new();
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) != PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let bytes = ph
            .data(endian, data)
            .map_err(|()| "segment outside the file".to_string())?;
        // Placed by physical (load) address.
        segs.push((ph.p_paddr(endian), bytes));
    }
    segs.sort_by_key(|s| s.0);
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return Err("ELF has no loadable bytes".into());
    };
    let base = first.0;
    let end = last.0 + last.1.len() as u64;
    if end - base > MAX_SPAN {
        return Err(format!(
            "loadable segments span {:#x} bytes (max {MAX_SPAN:#x})",
            end - base
        ));
    }
    for w in segs.windows(2) {
        if w[0].0 + w[0].1.len() as u64 > w[1].0 {
            return Err(format!(
                "segments at {:#x} and {:#x} overlap",
                w[0].0, w[1].0
            ));
        }
    }
    let mut image = vec![0u8; (end - base) as usize];
    for (addr, bytes) in &segs {
        let at = (addr - base) as usize;
        image[at..at + bytes.len()].copy_from_slice(bytes);
    }
    let mut image_size = image.len() as u64;
    if file.architecture() == object::Architecture::Aarch64 {
        let magic = image
            .get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if magic != Some(ARM64_MAGIC) {
            return Err("aarch64 image without an arm64 Image header (magic at 0x38)".into());
        }
        image_size = u64::from_le_bytes(image[16..24].try_into().unwrap_or([0; 8]));
    }
    Ok((
        ImageInfo {
            load_address: base,
            file_size: image.len() as u64,
            image_size,
        },
        image,
    ))
}

/// A built hypervisor image.
#[derive(Clone, Debug)]
pub struct Built {
    /// The ELF (symbols, debug info, the defmt table).
    pub elf: PathBuf,
    /// The flashable Image.
    pub image: PathBuf,
    /// What was written.
    pub info: ImageInfo,
}

/// Different boards overwrite the same cargo output; hold this across
/// build + copy (threads of one process; a lock file covers processes).
static BUILD: Mutex<()> = Mutex::new(());

/// Builds hv-arm for `board` (release) and writes its Image.
pub fn build_hv_arm(board: &str, text_log: bool) -> Result<Built, String> {
    let Some(profile) = boards::ARM_PROFILES.iter().find(|p| p.name == board) else {
        let names: Vec<&str> = boards::ARM_PROFILES.iter().map(|p| p.name).collect();
        return Err(format!(
            "unknown board '{board}' (known: {})",
            names.join(", ")
        ));
    };
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target_dir().join("aarch64-unknown-none").join("release");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = dir.join(".hv-arm-build.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // Released when `lock` is dropped, on every return path.
    lock.lock()
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let mut features = vec![format!("board-{board}")];
    if text_log {
        features.push("text-log".into());
    }
    let elf = Build {
        package: "hv-arm",
        target: "aarch64-unknown-none",
        features,
        no_default_features: true,
        release: true,
    }
    .run()?;
    let suffix = if text_log { "-text" } else { "" };
    let kept = dir.join(format!("hv-arm-{board}{suffix}.elf"));
    let bytes = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    replace_file(&kept, &bytes)?;
    let image = dir.join(format!("hv-arm-{board}{suffix}.img"));
    let info = elf_to_image(&kept, &image)?;
    // Boot loaders place the Image at RAM base + text_offset; an image
    // linked elsewhere would run at the wrong address.
    if info.load_address != profile.load_address() {
        return Err(format!(
            "{} starts at {:#x}, but board {board} loads images at {:#x}",
            kept.display(),
            info.load_address,
            profile.load_address()
        ));
    }
    Ok(Built {
        elf: kept,
        image,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_swaps_whole_files_and_leaves_no_temporaries() {
        let dir = crate::host::cache_dir().join(format!("replace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("img");
        replace_file(&p, b"first").unwrap();
        // A reader holding the old file keeps reading the old bytes.
        let held = std::fs::File::open(&p).unwrap();
        replace_file(&p, b"second, longer").unwrap();
        replace_file(&p, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &held, &mut old).unwrap();
        assert_eq!(old, "first");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("img")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A minimal little-endian ELF64 with the given (paddr, bytes) PT_LOAD segments.
    fn elf(machine: u16, segs: &[(u64, &[u8])]) -> Vec<u8> {
        let phoff = 64u64;
        let data_off = phoff + 56 * segs.len() as u64;
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little endian
        out[6] = 1;
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&phoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        let mut off = data_off;
        for (paddr, bytes) in segs {
            let mut ph = vec![0u8; 56];
            ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            ph[4..8].copy_from_slice(&5u32.to_le_bytes());
            ph[8..16].copy_from_slice(&off.to_le_bytes());
            ph[16..24].copy_from_slice(&paddr.to_le_bytes());
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&ph);
            off += bytes.len() as u64;
        }
        for (_, bytes) in segs {
            out.extend_from_slice(bytes);
        }
        out
    }

    fn arm64_header(image_size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[0x38..0x3c].copy_from_slice(&ARM64_MAGIC.to_le_bytes());
        h
    }

    #[test]
    fn lays_segments_out_with_gaps_zeroed() {
        let head = arm64_header(0x3000);
        let data = elf(183, &[(0x4020_0000, &head), (0x4020_1000, b"data")]);
        let (info, image) = flatten(&data).unwrap();
        assert_eq!(
            info,
            ImageInfo {
                load_address: 0x4020_0000,
                file_size: 0x1004,
                image_size: 0x3000
            }
        );
        assert_eq!(&image[0x1000..], b"data");
        assert!(image[64..0x1000].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_missing_header_overlap_and_huge_spans() {
        assert!(
            flatten(&elf(183, &[(0x1000, &[1u8; 64])]))
                .unwrap_err()
                .contains("Image header")
        );
        let head = arm64_header(0);
        assert!(
            flatten(&elf(183, &[(0x1000, &head), (0x1010, b"x")]))
                .unwrap_err()
                .contains("overlap")
        );
        assert!(
            flatten(&elf(62, &[(0x1000, b"a"), (0x1000 + (65 << 20), b"b")]))
                .unwrap_err()
                .contains("span")
        );
        assert!(flatten(b"not an elf").is_err());
    }

    #[test]
    fn x86_images_need_no_arm64_header() {
        let (info, _) = flatten(&elf(62, &[(0x10_0000, b"mb2")])).unwrap();
        assert_eq!(info.file_size, 3);
    }
}
