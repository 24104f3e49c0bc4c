//! The arm64 Linux `Image` header: where a kernel wants to be loaded and
//! how much memory it needs.
//!
//! Owns the reading of the 64-byte header the boot protocol defines
//! (Documentation/arch/arm64/booting.rst in the kernel tree). It never loads
//! anything: the caller places the image at a 2 MiB-aligned base plus
//! [`ImageHeader::text_offset`] and reserves [`ImageHeader::footprint`]
//! bytes from there. The bytes come from a boot module nobody vouched for,
//! so every field is checked and every sum is checked.

use core::fmt;

/// `ARM\x64`, little-endian, at offset 0x38.
pub const MAGIC: u32 = 0x644d_5241;
/// Size of the header; [`parse`] needs at least this many bytes.
pub const HEADER_SIZE: usize = 64;
/// The text offset kernels before v3.17 assumed (their header's
/// `image_size` is zero and the offset field's endianness is unknown).
pub const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// The image is placed `text_offset` bytes above a base aligned to this.
pub const BASE_ALIGN: u64 = 2 << 20;
/// Granule the footprint is rounded to.
pub const PAGE_SIZE: u64 = 4096;

const OFF_TEXT_OFFSET: usize = 0x08;
const OFF_IMAGE_SIZE: usize = 0x10;
const OFF_FLAGS: usize = 0x18;
const OFF_MAGIC: usize = 0x38;

/// `flags` bit 0: the kernel is big-endian.
pub const FLAG_BE: u64 = 1 << 0;
/// `flags` bits 1-2: the kernel's page size (0 unspecified, 1 4K, 2 16K, 3 64K).
pub const FLAG_PAGE_SIZE_SHIFT: u32 = 1;
/// `flags` bit 3: 1 = the 2 MiB-aligned base may be anywhere in RAM; 0 = it
/// should be as close as possible to the start of RAM.
pub const FLAG_PHYS_ANYWHERE: u64 = 1 << 3;

/// What an Image header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image above a 2 MiB-aligned base ([`LEGACY_TEXT_OFFSET`]
    /// for an old kernel whose header has `image_size` 0).
    pub text_offset: u64,
    /// Bytes the kernel occupies once running, from the image start (its
    /// .bss included); 0 for kernels before v3.17: unknown, use the file.
    pub image_size: u64,
    /// The flags word (0 for an old kernel).
    pub flags: u64,
}

/// Why bytes are not a bootable arm64 Image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer bytes than the 64-byte header.
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// A gzip stream (`Image.gz`): the boot loader does not decompress.
    Gzip,
    /// No `ARM\x64` at offset 0x38.
    BadMagic {
        /// The word found there.
        found: u32,
    },
    /// `flags` bit 0 says big-endian; guests run little-endian.
    BigEndian,
    /// `image_size` is non-zero but smaller than the header itself.
    SizeTooSmall {
        /// The value read.
        image_size: u64,
    },
    /// `text_offset` is not 4 KiB-aligned or not below 2 MiB.
    BadTextOffset {
        /// The value read.
        text_offset: u64,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ImageError::TooShort { len } => write!(
                f,
                "kernel image too short: {len} bytes, the arm64 Image header needs {HEADER_SIZE}"
            ),
            ImageError::Gzip => write!(
                f,
                "kernel image is gzip-compressed (Image.gz): decompress it (gunzip) and pass the raw Image"
            ),
            ImageError::BadMagic { found } => write!(
                f,
                "not an arm64 Image: magic at 0x38 is {found:#010x}, expected {MAGIC:#010x} (\"ARM\\x64\")"
            ),
            ImageError::BigEndian => {
                write!(
                    f,
                    "kernel image is big-endian; only little-endian guests are supported"
                )
            }
            ImageError::SizeTooSmall { image_size } => write!(
                f,
                "kernel image header claims image_size {image_size:#x}, smaller than the header"
            ),
            ImageError::BadTextOffset { text_offset } => write!(
                f,
                "kernel image text_offset {text_offset:#x} is not a 4 KiB-aligned offset below 2 MiB"
            ),
        }
    }
}

fn le64(bytes: &[u8], off: usize) -> Option<u64> {
    let b = bytes.get(off..off.checked_add(8)?)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    Some(u64::from_le_bytes(w))
}

fn le32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    let mut w = [0u8; 4];
    w.copy_from_slice(b);
    Some(u32::from_le_bytes(w))
}

/// Reads the header at the start of `bytes` (the whole file, or at least
/// its first [`HEADER_SIZE`] bytes).
pub fn parse(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(ImageError::Gzip);
    }
    let too_short = ImageError::TooShort { len: bytes.len() };
    if bytes.len() < HEADER_SIZE {
        return Err(too_short);
    }
    let found = le32(bytes, OFF_MAGIC).ok_or(too_short)?;
    if found != MAGIC {
        return Err(ImageError::BadMagic { found });
    }
    let image_size = le64(bytes, OFF_IMAGE_SIZE).ok_or(too_short)?;
    if image_size == 0 {
        // Before v3.17: the other fields' endianness is unspecified and
        // the flags did not exist; the protocol says assume 0x80000.
        return Ok(ImageHeader {
            text_offset: LEGACY_TEXT_OFFSET,
            image_size: 0,
            flags: 0,
        });
    }
    if image_size < HEADER_SIZE as u64 {
        return Err(ImageError::SizeTooSmall { image_size });
    }
    let flags = le64(bytes, OFF_FLAGS).ok_or(too_short)?;
    if flags & FLAG_BE != 0 {
        return Err(ImageError::BigEndian);
    }
    let text_offset = le64(bytes, OFF_TEXT_OFFSET).ok_or(too_short)?;
    if text_offset >= BASE_ALIGN || !text_offset.is_multiple_of(PAGE_SIZE) {
        return Err(ImageError::BadTextOffset { text_offset });
    }
    Ok(ImageHeader {
        text_offset,
        image_size,
        flags,
    })
}

impl ImageHeader {
    /// Bytes to reserve from the load address for a file of `file_len`
    /// bytes: the larger of `image_size` and the file (a signed image may
    /// carry data past `image_size`; an old one has no size at all),
    /// rounded up to 4 KiB. `None` if that overflows.
    pub fn footprint(&self, file_len: u64) -> Option<u64> {
        let size = self.image_size.max(file_len);
        let rounded = size.checked_add(PAGE_SIZE - 1)?;
        Some(rounded & !(PAGE_SIZE - 1))
    }

    /// The kernel's page size in bytes, when the header states one.
    pub fn page_size(&self) -> Option<u64> {
        match (self.flags >> FLAG_PAGE_SIZE_SHIFT) & 3 {
            1 => Some(4 << 10),
            2 => Some(16 << 10),
            3 => Some(64 << 10),
            _ => None,
        }
    }

    /// True when the 2 MiB-aligned base may be anywhere in RAM; false when
    /// it should be as low as possible (the pre-v4.6 requirement).
    pub fn placement_anywhere(&self) -> bool {
        self.flags & FLAG_PHYS_ANYWHERE != 0
    }

    /// The load address for a 2 MiB-aligned `base`, or `None` if `base` is
    /// misaligned or the sum overflows.
    pub fn load_address(&self, base: u64) -> Option<u64> {
        if !base.is_multiple_of(BASE_ALIGN) {
            return None;
        }
        base.checked_add(self.text_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE];
        // code0: a branch; code1: anything (the kernel's own first words).
        h[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes());
        h[OFF_TEXT_OFFSET..OFF_TEXT_OFFSET + 8].copy_from_slice(&text_offset.to_le_bytes());
        h[OFF_IMAGE_SIZE..OFF_IMAGE_SIZE + 8].copy_from_slice(&image_size.to_le_bytes());
        h[OFF_FLAGS..OFF_FLAGS + 8].copy_from_slice(&flags.to_le_bytes());
        h[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn magic_is_the_ascii_bytes() {
        assert_eq!(MAGIC.to_le_bytes(), *b"ARM\x64");
    }

    #[test]
    fn modern_header() {
        let h = parse(&header(0, 0x01a3_0000, 0b1010)).unwrap();
        assert_eq!(
            h,
            ImageHeader {
                text_offset: 0,
                image_size: 0x01a3_0000,
                flags: 0b1010
            }
        );
        assert_eq!(h.page_size(), Some(4096));
        assert!(h.placement_anywhere());
        assert_eq!(h.load_address(0x4020_0000), Some(0x4020_0000));
    }

    #[test]
    fn page_size_field() {
        let ps = |f: u64| parse(&header(0, 0x1000, f << 1)).unwrap().page_size();
        assert_eq!(ps(0), None);
        assert_eq!(ps(1), Some(4 << 10));
        assert_eq!(ps(2), Some(16 << 10));
        assert_eq!(ps(3), Some(64 << 10));
        assert!(!parse(&header(0, 0x1000, 0)).unwrap().placement_anywhere());
    }

    #[test]
    fn header_with_trailing_file_bytes() {
        let mut f = header(0x8_0000, 0x20_0000, 0);
        f.extend_from_slice(&[0xaa; 100]);
        let h = parse(&f).unwrap();
        assert_eq!(h.text_offset, 0x8_0000);
        assert_eq!(h.load_address(0x4000_0000), Some(0x4008_0000));
    }

    #[test]
    fn old_kernel_uses_legacy_offset_and_no_flags() {
        // Garbage in text_offset/flags (possibly big-endian) is ignored.
        let h = parse(&header(0x0000_0800_0000_0000, 0, u64::MAX)).unwrap();
        assert_eq!(
            h,
            ImageHeader {
                text_offset: LEGACY_TEXT_OFFSET,
                image_size: 0,
                flags: 0
            }
        );
        assert_eq!(h.footprint(0x12_3456), Some(0x12_4000));
    }

    #[test]
    fn too_short() {
        for len in [0, 1, 0x38, 63] {
            let h = header(0, 0x1000, 0);
            assert_eq!(parse(&h[..len]), Err(ImageError::TooShort { len }));
        }
    }

    #[test]
    fn gzip_is_named() {
        let gz = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0];
        assert_eq!(parse(&gz), Err(ImageError::Gzip));
        let mut long = vec![0u8; 4096];
        long[..2].copy_from_slice(&[0x1f, 0x8b]);
        assert_eq!(parse(&long), Err(ImageError::Gzip));
        let msg = ImageError::Gzip.to_string();
        assert!(msg.contains("decompress"), "{msg}");
    }

    #[test]
    fn bad_magic() {
        let mut h = header(0, 0x1000, 0);
        h[OFF_MAGIC] = b'X';
        assert_eq!(
            parse(&h),
            Err(ImageError::BadMagic {
                found: u32::from_le_bytes(*b"XRM\x64")
            })
        );
        // A big-endian magic is still not ours.
        let mut h = header(0, 0x1000, 0);
        h[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC.to_be_bytes());
        assert!(matches!(parse(&h), Err(ImageError::BadMagic { .. })));
    }

    #[test]
    fn big_endian_refused() {
        assert_eq!(parse(&header(0, 0x1000, 1)), Err(ImageError::BigEndian));
        assert_eq!(
            parse(&header(0, 0x1000, 0b1111)),
            Err(ImageError::BigEndian)
        );
    }

    #[test]
    fn size_too_small() {
        for s in [1, 8, 63] {
            assert_eq!(
                parse(&header(0, s, 0)),
                Err(ImageError::SizeTooSmall { image_size: s })
            );
        }
        assert!(parse(&header(0, 64, 0)).is_ok());
    }

    #[test]
    fn text_offset_checked() {
        for t in [1, 0xfff, BASE_ALIGN, u64::MAX, 0xffff_ffff_ffff_f000] {
            assert_eq!(
                parse(&header(t, 0x1000, 0)),
                Err(ImageError::BadTextOffset { text_offset: t })
            );
        }
        assert!(parse(&header(BASE_ALIGN - 0x1000, 0x1000, 0)).is_ok());
    }

    #[test]
    fn footprint_rounds_and_takes_the_larger() {
        let h = parse(&header(0, 0x20_0001, 0)).unwrap();
        assert_eq!(h.footprint(0), Some(0x20_1000));
        assert_eq!(h.footprint(0x10_0000), Some(0x20_1000));
        assert_eq!(h.footprint(0x30_0000), Some(0x30_0000));
        assert_eq!(h.footprint(0x30_0001), Some(0x30_1000));
        let exact = parse(&header(0, 0x4000, 0)).unwrap();
        assert_eq!(exact.footprint(0x4000), Some(0x4000));
    }

    #[test]
    fn footprint_overflow_is_none() {
        let h = ImageHeader {
            text_offset: 0,
            image_size: u64::MAX,
            flags: 0,
        };
        assert_eq!(h.footprint(0), None);
        let h = parse(&header(0, 0x1000, 0)).unwrap();
        assert_eq!(h.footprint(u64::MAX - 4094), None);
        assert_eq!(h.footprint(u64::MAX - 4095), Some(u64::MAX - 4095));
    }

    #[test]
    fn load_address_checks() {
        let h = parse(&header(0x8_0000, 0x1000, 0)).unwrap();
        assert_eq!(h.load_address(0x4000_1000), None);
        // A parsed header cannot overflow (text_offset < 2 MiB), a built one can.
        let top = 0u64.wrapping_sub(BASE_ALIGN);
        assert_eq!(h.load_address(top), Some(top + 0x8_0000));
        let odd = ImageHeader {
            text_offset: BASE_ALIGN,
            ..h
        };
        assert_eq!(odd.load_address(top), None);
    }

    #[test]
    fn every_error_displays() {
        let all = [
            ImageError::TooShort { len: 3 },
            ImageError::Gzip,
            ImageError::BadMagic { found: 0 },
            ImageError::BigEndian,
            ImageError::SizeTooSmall { image_size: 1 },
            ImageError::BadTextOffset { text_offset: 1 },
        ];
        for e in all {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz over lengths and contents.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200usize {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            if len >= HEADER_SIZE && len.is_multiple_of(2) {
                v[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(b"ARM\x64");
            }
            if let Ok(h) = parse(&v) {
                let _ = h.footprint(x);
                let _ = h.load_address(x);
            }
        }
    }
}
