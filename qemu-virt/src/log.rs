//! The hypervisor's log, turned into lines.
//!
//! hv-arm sends defmt frames (rzcobs-encoded, each ended by a zero byte) on
//! its log channel; the format strings live in the ELF's `.defmt` section.
//! An ELF without that table was built with `text-log`: its log is plain
//! text lines starting `(hv)` on the console, and anything arriving on the
//! log channel is shown as text.
//!
//! Owns the one line format every log line is shown in, whichever way it
//! arrived: `[hv] <timestamp> <LEVEL> <message>`. Never prints: the caller
//! decides where lines go.

use defmt_decoder::{DecodeError, Table};

/// Prefix of every decoded log line.
pub const PREFIX: &str = "[hv]";
/// Prefix of hv-arm's log lines on the console in `text-log` builds.
pub const TEXT_PREFIX: &str = "(hv)";
/// Bytes without a frame end after which the buffer is dropped as garbage
/// (hv-arm's frames are a few dozen bytes).
const MAX_PENDING: usize = 64 << 10;

/// One log line: `[hv] <timestamp> <LEVEL> <message>`, the level padded to
/// five columns so messages line up; a missing timestamp or level (defmt
/// `println!`) is left out.
pub fn format_line(timestamp: Option<&str>, level: Option<&str>, message: &str) -> String {
    let mut line = String::from(PREFIX);
    if let Some(ts) = timestamp {
        line.push(' ');
        line.push_str(ts);
    }
    if let Some(level) = level {
        line.push_str(&format!(" {:<5}", level.to_uppercase()));
    }
    line.push(' ');
    line.push_str(message);
    line
}

/// A `text-log` line from the console (`(hv) 0.000582 INFO  entered ...`)
/// in the decoded form (`[hv] 0.000582 INFO  entered ...`); `None` for
/// other console lines.
pub fn from_text_log(console_line: &str) -> Option<String> {
    let rest = console_line.trim_end().strip_prefix(TEXT_PREFIX)?;
    Some(format!("{PREFIX}{rest}"))
}

/// An incremental decoder for one run's log channel.
pub struct LogDecoder {
    table: Option<Table>,
    pending: Vec<u8>,
}

impl LogDecoder {
    /// A decoder for the image whose ELF is `elf`.
    pub fn for_elf(elf: &[u8]) -> Result<Self, String> {
        let table = Table::parse(elf).map_err(|e| format!("defmt table: {e}"))?;
        Ok(Self {
            table,
            pending: Vec::new(),
        })
    }

    /// True when the ELF carries a defmt table (false: a `text-log` build).
    pub fn is_defmt(&self) -> bool {
        self.table.is_some()
    }

    /// Feeds received bytes; returns the lines they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        let end_byte = if self.table.is_some() { 0 } else { b'\n' };
        while let Some(end) = self.pending.iter().position(|&b| b == end_byte) {
            let chunk: Vec<u8> = self.pending.drain(..=end).collect();
            lines.extend(self.line_of(&chunk));
        }
        if self.pending.len() > MAX_PENDING {
            self.pending.clear();
            lines.push(format!(
                "{PREFIX} ({MAX_PENDING} bytes without a frame end dropped)"
            ));
        }
        lines
    }

    /// The line held back at the end of a run (a frame or text line the
    /// image never finished), if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        if rest.iter().all(|&b| b == 0) {
            return None;
        }
        match self.table {
            Some(_) => Some(format!("{PREFIX} (truncated frame)")),
            None => self.line_of(&rest),
        }
    }

    /// One frame (defmt, zero byte included) or one text line.
    fn line_of(&self, chunk: &[u8]) -> Option<String> {
        let Some(table) = &self.table else {
            let text = String::from_utf8_lossy(chunk);
            let text = text.trim_end();
            return Some(from_text_log(text).unwrap_or_else(|| format_line(None, None, text)));
        };
        if chunk.iter().all(|&b| b == 0) {
            // The separator hv-arm sends first, or an empty frame.
            return None;
        }
        // Each frame gets a decoder of its own, so a corrupt frame costs only
        // itself.
        let mut decoder = table.new_stream_decoder();
        decoder.received(chunk);
        Some(match decoder.decode() {
            Ok(frame) => {
                let ts = frame.display_timestamp().map(|t| t.to_string());
                let level = frame.level().map(|l| l.as_str());
                format_line(ts.as_deref(), level, &frame.display_message().to_string())
            }
            Err(DecodeError::UnexpectedEof) => format!("{PREFIX} (truncated frame)"),
            Err(DecodeError::Malformed) => format!("{PREFIX} (malformed frame)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};

    /// A relocatable ELF holding a defmt table as the defmt macros and linker
    /// script lay it out: one symbol per string in `.defmt`, named by its
    /// JSON description, at its index.
    fn defmt_elf(entries: &[(u64, &str, &str)]) -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::Aarch64, Endianness::Little);
        let section = obj.add_section(
            Vec::new(),
            b".defmt".to_vec(),
            object::SectionKind::ReadOnlyData,
        );
        obj.append_section_data(section, &[0u8; 16], 1);
        let mut add = |name: String, value: u64, section: SymbolSection| {
            obj.add_symbol(Symbol {
                name: name.into_bytes(),
                value,
                size: 1,
                kind: SymbolKind::Data,
                scope: SymbolScope::Linkage,
                weak: false,
                section,
                flags: SymbolFlags::None,
            });
        };
        add("_defmt_version_ = 4".into(), 0, SymbolSection::Absolute);
        add(
            "_defmt_encoding_ = rzcobs".into(),
            0,
            SymbolSection::Absolute,
        );
        for (index, tag, data) in entries {
            let json = format!(
                r#"{{"package":"hv-arm","tag":"{tag}","data":"{data}","disambiguator":"{index}","crate_name":"hv_arm"}}"#
            );
            add(json, *index, SymbolSection::Section(section));
        }
        obj.write().unwrap()
    }

    /// rzCOBS as defmt 1.x frames it: groups of seven bytes, each followed
    /// by a bitmap of which of them were zero (bit 0 = first byte); a run of
    /// seven or more non-zero bytes is written as is, then 0x80 + (length -
    /// 7) standing for the run and the zero after it (0xff: 134 bytes and no
    /// zero). A zero byte ends the frame. The decoder ignores trailing zeros.
    fn rzcobs(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < payload.len() {
            let group = &payload[i..payload.len().min(i + 7)];
            if group.len() < 7 || group.contains(&0) {
                let mut zeros = 0u8;
                for k in 0..7 {
                    match group.get(k) {
                        Some(&b) if b != 0 => out.push(b),
                        _ => zeros |= 1 << k,
                    }
                }
                out.push(zeros);
                i += 7;
            } else {
                let run = payload[i..]
                    .iter()
                    .take_while(|&&b| b != 0)
                    .count()
                    .min(134);
                out.extend_from_slice(&payload[i..i + run]);
                if run == 134 {
                    out.push(0xff);
                    i += run;
                } else {
                    out.push(0x80 | (run - 7) as u8);
                    i += run + 1;
                }
            }
        }
        out.push(0);
        out
    }

    /// A frame: string index, a `{=u64:us}` timestamp, then the arguments.
    fn frame(index: u16, us: u64, args: &[u8]) -> Vec<u8> {
        let mut p = index.to_le_bytes().to_vec();
        p.extend_from_slice(&us.to_le_bytes());
        p.extend_from_slice(args);
        rzcobs(&p)
    }

    fn decoder() -> LogDecoder {
        let elf = defmt_elf(&[
            (0, "defmt_timestamp", "{=u64:us}"),
            (1, "defmt_info", "entered at EL2, dtb at {=u64:#x}"),
            (2, "defmt_error", "cpu {=u32} failed"),
            (3, "defmt_println", "plain {=u8}"),
        ]);
        let d = LogDecoder::for_elf(&elf).unwrap();
        assert!(d.is_defmt());
        d
    }

    #[test]
    fn formats_timestamp_level_and_message() {
        assert_eq!(
            format_line(Some("0.001021"), Some("info"), "hello"),
            "[hv] 0.001021 INFO  hello"
        );
        assert_eq!(format_line(None, Some("error"), "x"), "[hv] ERROR x");
        assert_eq!(format_line(None, None, "x"), "[hv] x");
    }

    #[test]
    fn rzcobs_helper_matches_defmt_framing() {
        assert_eq!(rzcobs(&[]), [0x00]);
        assert_eq!(rzcobs(&[0x01]), [0x01, 0x7e, 0x00]);
        assert_eq!(rzcobs(&[0x00, 0x01]), [0x01, 0x7d, 0x00]);
        assert_eq!(
            rzcobs(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x00]),
            [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x80, 0x00]
        );
    }

    #[test]
    fn decodes_frames_split_anywhere() {
        let mut d = decoder();
        let mut stream = vec![0u8]; // the separator hv-arm sends first
        stream.extend(frame(1, 1021, &0x4800_0000u64.to_le_bytes()));
        stream.extend(frame(2, 2_500_000, &3u32.to_le_bytes()));
        stream.extend(frame(3, 7, &[9]));
        let expected = [
            "[hv] 0.001021 INFO  entered at EL2, dtb at 0x48000000",
            "[hv] 2.500000 ERROR cpu 3 failed",
            "[hv] 0.000007 plain 9",
        ];
        for split in 0..stream.len() {
            let mut d2 = decoder();
            let mut lines = d2.feed(&stream[..split]);
            lines.extend(d2.feed(&stream[split..]));
            assert_eq!(lines, expected, "split at {split}");
            assert_eq!(d2.finish(), None);
        }
        // Byte by byte.
        let lines: Vec<String> = stream.iter().flat_map(|b| d.feed(&[*b])).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn a_corrupt_frame_costs_only_itself() {
        let mut d = decoder();
        let mut stream = frame(9, 1, &[]); // no such string
        stream.extend(frame(2, 1, &5u32.to_le_bytes()));
        stream.extend(&frame(2, 1, &5u32.to_le_bytes())[..4]); // cut short
        let lines = d.feed(&stream);
        assert_eq!(
            lines,
            ["[hv] (malformed frame)", "[hv] 0.000001 ERROR cpu 5 failed"]
        );
        assert_eq!(d.finish().as_deref(), Some("[hv] (truncated frame)"));
    }

    #[test]
    fn without_a_table_the_log_is_text() {
        let mut d = LogDecoder::for_elf(
            &object::write::Object::new(
                BinaryFormat::Elf,
                Architecture::Aarch64,
                Endianness::Little,
            )
            .write()
            .unwrap(),
        )
        .unwrap();
        assert!(!d.is_defmt());
        assert_eq!(
            d.feed(b"(hv) 0.5 INFO  up\r\nplain te"),
            ["[hv] 0.5 INFO  up"]
        );
        assert_eq!(d.feed(b"xt\n"), ["[hv] plain text"]);
        assert_eq!(d.feed(b"tail"), Vec::<String>::new());
        assert_eq!(d.finish().as_deref(), Some("[hv] tail"));
    }

    #[test]
    fn text_log_console_lines() {
        assert_eq!(
            from_text_log("(hv) 0.000582 INFO  entered at EL2\r").as_deref(),
            Some("[hv] 0.000582 INFO  entered at EL2")
        );
        assert_eq!(from_text_log("cpus: 4 (psci via smc)"), None);
    }

    #[test]
    fn garbage_without_frame_ends_is_dropped() {
        let mut d = decoder();
        let lines = d.feed(&vec![0x55u8; MAX_PENDING + 1]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("dropped"));
        assert_eq!(d.finish(), None);
    }
}
