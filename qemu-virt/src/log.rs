//! Decodes the hypervisor's log channel into lines.
//!
//! hv-arm sends defmt frames (rzcobs-encoded, zero-delimited); the string
//! table lives in the ELF's `.defmt` section. An ELF without that table was
//! built with `text-log`, and then whatever arrives is shown as text.

use defmt_decoder::{DecodeError, Table};

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

    /// True when the ELF carries a defmt table.
    pub fn is_defmt(&self) -> bool {
        self.table.is_some()
    }

    /// Feeds received bytes; returns the complete lines they finish.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        let Some(table) = &self.table else {
            while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                lines.push(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            return lines;
        };
        // Frames end with a zero byte: decode each complete one on its own so
        // a corrupt frame costs only itself.
        while let Some(end) = self.pending.iter().position(|&b| b == 0) {
            let frame: Vec<u8> = self.pending.drain(..=end).collect();
            if frame.len() == 1 {
                continue;
            }
            let mut decoder = table.new_stream_decoder();
            decoder.received(&frame);
            match decoder.decode() {
                Ok(f) => {
                    let level = f
                        .level()
                        .map(|l| l.as_str().to_uppercase())
                        .unwrap_or_else(|| "PRINT".into());
                    let ts = f
                        .display_timestamp()
                        .map(|t| format!("{t} "))
                        .unwrap_or_default();
                    lines.push(format!("[hv] {ts}{level:<5} {}", f.display_message()));
                }
                Err(DecodeError::UnexpectedEof) => lines.push("[hv] (truncated frame)".into()),
                Err(DecodeError::Malformed) => lines.push("[hv] (malformed frame)".into()),
            }
        }
        lines
    }
}
