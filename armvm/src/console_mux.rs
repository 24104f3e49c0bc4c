//! The console's input switch: one physical console, several domains.
//!
//! Input goes to one domain at a time. Typing CTRL-A three times in a row
//! moves it to the next domain, as on Xen's console (where the sequence
//! cycles between dom0 and Xen). CTRL-As that turn out not to be a switch
//! (fewer than three, then another key) are passed on, so a guest still
//! receives a lone CTRL-A (the shell's "start of line").

/// CTRL-A.
pub const SWITCH_CODE: u8 = 0x01;
/// How many in a row switch.
pub const SWITCH_COUNT: u8 = 3;

/// What one received byte amounts to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// CTRL-As held back earlier that go to the focused domain first.
    pub released: u8,
    /// The byte itself, unless it was held back or completed a switch.
    pub byte: Option<u8>,
    /// The focus moves to the next domain.
    pub switch: bool,
}

impl Fed {
    /// The bytes for the focused domain, in order.
    pub fn bytes(self) -> impl Iterator<Item = u8> {
        core::iter::repeat_n(SWITCH_CODE, usize::from(self.released)).chain(self.byte)
    }
}

/// The switch-sequence recogniser.
#[derive(Clone, Copy, Debug, Default)]
pub struct InputSwitch {
    held: u8,
}

impl InputSwitch {
    /// A recogniser with nothing held.
    pub const fn new() -> Self {
        Self { held: 0 }
    }

    /// Feeds one byte from the console.
    pub fn feed(&mut self, b: u8) -> Fed {
        if b == SWITCH_CODE {
            self.held += 1;
            if self.held == SWITCH_COUNT {
                self.held = 0;
                return Fed {
                    switch: true,
                    ..Fed::default()
                };
            }
            return Fed::default();
        }
        Fed {
            released: core::mem::take(&mut self.held),
            byte: Some(b),
            switch: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn run(input: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let mut s = InputSwitch::new();
        let mut out = Vec::new();
        let mut switches = Vec::new();
        for (i, &b) in input.iter().enumerate() {
            let f = s.feed(b);
            out.extend(f.bytes());
            if f.switch {
                switches.push(i);
            }
        }
        (out, switches)
    }

    #[test]
    fn three_ctrl_a_switch_and_are_swallowed() {
        assert_eq!(run(b"ab\x01\x01\x01cd"), (b"abcd".to_vec(), [4].to_vec()));
        assert_eq!(run(b"\x01\x01\x01\x01\x01\x01").1, [2, 5]);
        assert!(run(b"\x01\x01\x01\x01\x01\x01").0.is_empty());
    }

    #[test]
    fn fewer_ctrl_a_are_passed_on_before_the_next_key() {
        assert_eq!(run(b"\x01x"), (b"\x01x".to_vec(), [].to_vec()));
        assert_eq!(run(b"\x01\x01y"), (b"\x01\x01y".to_vec(), [].to_vec()));
        // Four: a switch, then one held and released with the next key.
        assert_eq!(run(b"\x01\x01\x01\x01z"), (b"\x01z".to_vec(), [2].to_vec()));
    }

    #[test]
    fn any_byte_stream_is_bounded() {
        let mut s = InputSwitch::new();
        for b in 0..=255u8 {
            for _ in 0..5 {
                let f = s.feed(b);
                assert!(f.released < SWITCH_COUNT);
            }
        }
    }
}
