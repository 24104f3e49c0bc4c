//! The command line.

use crate::xen::DOMID_FIRST_RESERVED;

/// Ping-pong round trips when the command line gives no count.
pub const DEFAULT_COUNT: u32 = 10_000;

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `serve <peer-domid>` (also `bench-serve <peer-domid>`).
    Serve {
        /// The client's domain.
        peer: u16,
    },
    /// `connect <peer-domid> <port> <rw-gref> <ro-gref> [count]`.
    Connect {
        /// The server's domain.
        peer: u16,
        /// The server's unbound port.
        port: u32,
        /// The writable grant.
        rw: u32,
        /// The read-only grant.
        ro: u32,
        /// Timed round trips.
        count: u32,
    },
    /// `bench <peer-domid> <port> <rw-gref> [count]`.
    Bench {
        /// The server's domain.
        peer: u16,
        /// The server's unbound port.
        port: u32,
        /// The writable grant.
        rw: u32,
        /// Event-channel round trips.
        count: u32,
    },
    /// `status-static <port>...`.
    StatusStatic {
        /// Local ports.
        ports: Vec<u32>,
    },
    /// `help`.
    Help,
}

/// Usage text.
pub const USAGE: &str = "\
usage: xentool serve <peer-domid>
       xentool bench-serve <peer-domid>        (same as serve)
       xentool connect <peer-domid> <port> <rw-gref> <ro-gref> [count]
       xentool bench <peer-domid> <port> <rw-gref> [count]
       xentool status-static <port>...
       xentool help
Numbers are decimal or 0x-prefixed hex; count defaults to 10000.
Needs /dev/xen/{evtchn,gntalloc,gntdev,privcmd} (privcmd loaded with
unrestricted=1). Results are the lines starting \"XT: \".";

/// Parses a decimal or `0x` hexadecimal number.
pub fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None => s.parse().ok(),
    }
}

fn u32_arg(what: &str, s: &str) -> Result<u32, String> {
    number(s)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("bad {what} '{s}' (a 32-bit number)"))
}

fn domid_arg(s: &str) -> Result<u16, String> {
    match number(s) {
        Some(n) if n < u64::from(DOMID_FIRST_RESERVED) => Ok(n as u16),
        _ => Err(format!(
            "bad domain id '{s}' (0..{:#x})",
            DOMID_FIRST_RESERVED - 1
        )),
    }
}

fn count_arg(s: Option<&String>) -> Result<u32, String> {
    match s {
        None => Ok(DEFAULT_COUNT),
        Some(s) => match u32_arg("count", s)? {
            0 => Err("count must be at least 1".into()),
            n => Ok(n),
        },
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let (cmd, rest) = args.split_first().ok_or("no command")?;
    let want = |lo: usize, hi: usize| {
        if (lo..=hi).contains(&rest.len()) {
            Ok(())
        } else if lo == hi {
            Err(format!("{cmd} takes {lo} arguments, not {}", rest.len()))
        } else {
            Err(format!(
                "{cmd} takes {lo} to {hi} arguments, not {}",
                rest.len()
            ))
        }
    };
    match cmd.as_str() {
        "serve" | "bench-serve" => {
            want(1, 1)?;
            Ok(Command::Serve {
                peer: domid_arg(&rest[0])?,
            })
        }
        "connect" => {
            want(4, 5)?;
            Ok(Command::Connect {
                peer: domid_arg(&rest[0])?,
                port: u32_arg("port", &rest[1])?,
                rw: u32_arg("rw-gref", &rest[2])?,
                ro: u32_arg("ro-gref", &rest[3])?,
                count: count_arg(rest.get(4))?,
            })
        }
        "bench" => {
            want(3, 4)?;
            Ok(Command::Bench {
                peer: domid_arg(&rest[0])?,
                port: u32_arg("port", &rest[1])?,
                rw: u32_arg("rw-gref", &rest[2])?,
                count: count_arg(rest.get(3))?,
            })
        }
        "status-static" => {
            if rest.is_empty() {
                return Err("status-static needs at least one port".into());
            }
            let ports = rest
                .iter()
                .map(|p| u32_arg("port", p))
                .collect::<Result<_, _>>()?;
            Ok(Command::StatusStatic { ports })
        }
        "help" | "-h" | "--help" => Ok(Command::Help),
        other => Err(format!("unknown command '{other}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn numbers() {
        assert_eq!(number("12"), Some(12));
        assert_eq!(number("0x1f"), Some(31));
        assert_eq!(number("0XFFFFFFF0"), Some(0xffff_fff0));
        assert_eq!(number("0x"), None);
        assert_eq!(number("-1"), None);
        assert_eq!(number("1a"), None);
    }

    #[test]
    fn commands() {
        assert_eq!(p("serve 2"), Ok(Command::Serve { peer: 2 }));
        assert_eq!(p("bench-serve 0x1"), Ok(Command::Serve { peer: 1 }));
        assert_eq!(
            p("connect 1 5 8 9"),
            Ok(Command::Connect {
                peer: 1,
                port: 5,
                rw: 8,
                ro: 9,
                count: DEFAULT_COUNT
            })
        );
        assert_eq!(
            p("connect 1 5 8 9 100"),
            Ok(Command::Connect {
                peer: 1,
                port: 5,
                rw: 8,
                ro: 9,
                count: 100
            })
        );
        assert_eq!(
            p("bench 2 0x10 8"),
            Ok(Command::Bench {
                peer: 2,
                port: 16,
                rw: 8,
                count: DEFAULT_COUNT
            })
        );
        assert_eq!(
            p("bench 2 16 8 50"),
            Ok(Command::Bench {
                peer: 2,
                port: 16,
                rw: 8,
                count: 50
            })
        );
        assert_eq!(
            p("status-static 3 4 0x5"),
            Ok(Command::StatusStatic {
                ports: vec![3, 4, 5]
            })
        );
        assert_eq!(p("help"), Ok(Command::Help));
    }

    #[test]
    fn refusals() {
        assert!(p("").unwrap_err().contains("no command"));
        assert!(p("serve").unwrap_err().contains("takes 1 arguments"));
        assert!(p("serve 1 2").is_err());
        assert!(p("serve 0x7ff0").unwrap_err().contains("domain id"));
        assert!(p("serve 70000").is_err());
        assert!(p("connect 1 2 3").unwrap_err().contains("4 to 5"));
        assert!(p("connect 1 2 3 4 0").unwrap_err().contains("at least 1"));
        assert!(p("connect 1 2 3 x").unwrap_err().contains("ro-gref"));
        assert!(p("connect 1 0x100000000 3 4").unwrap_err().contains("port"));
        assert!(p("bench 1 2").is_err());
        assert!(p("status-static").is_err());
        assert!(p("status-static 1 z").is_err());
        assert!(p("frobnicate").unwrap_err().contains("unknown command"));
    }
}
