//! Durations as Istio writes them: Go-style `7s`, `0.5s`, `100ms`, `1m30s`, `1h`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A non-negative duration read from an Istio field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty string.
    #[error("empty duration")]
    Empty,
    /// A number was expected.
    #[error("bad duration {0:?}: expected a number followed by a unit (h, m, s, ms, us, ns)")]
    Malformed(String),
    /// The unit is not one of Go's.
    #[error("bad duration {input:?}: unknown unit {unit:?}")]
    Unit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// Negative durations mean nothing here.
    #[error("bad duration {0:?}: must not be negative")]
    Negative(String),
}

impl Duration {
    /// Parses a Go/protobuf duration string.
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let input = s.trim();
        if input.is_empty() {
            return Err(DurationError::Empty);
        }
        if input.starts_with('-') {
            return Err(DurationError::Negative(input.to_string()));
        }
        if input == "0" {
            return Ok(Duration(std::time::Duration::ZERO));
        }
        let mut rest = input.strip_prefix('+').unwrap_or(input);
        let mut total_ns: f64 = 0.0;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_end == 0 {
                return Err(DurationError::Malformed(input.to_string()));
            }
            let value: f64 = rest[..num_end]
                .parse()
                .map_err(|_| DurationError::Malformed(input.to_string()))?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_end];
            rest = &rest[unit_end..];
            let scale = match unit {
                "h" => 3_600e9,
                "m" => 60e9,
                "s" => 1e9,
                "ms" => 1e6,
                "us" | "µs" => 1e3,
                "ns" => 1.0,
                "" => return Err(DurationError::Malformed(input.to_string())),
                other => {
                    return Err(DurationError::Unit {
                        input: input.to_string(),
                        unit: other.to_string(),
                    })
                }
            };
            total_ns += value * scale;
        }
        Ok(Duration(std::time::Duration::from_nanos(
            total_ns.round() as u64
        )))
    }

    /// The standard library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}s", d.as_secs_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn parses_what_istio_users_write() {
        let cases = [
            ("7s", D::from_secs(7)),
            ("0.5s", D::from_millis(500)),
            ("100ms", D::from_millis(100)),
            ("1m30s", D::from_secs(90)),
            ("1h", D::from_secs(3600)),
            ("250us", D::from_micros(250)),
            ("0", D::ZERO),
            ("0s", D::ZERO),
        ];
        for (input, want) in cases {
            assert_eq!(
                Duration::parse(input).map(Duration::get),
                Ok(want),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_with_a_reason() {
        let cases = [
            ("", "empty duration"),
            ("7x", "bad duration \"7x\": unknown unit \"x\""),
            (
                "s",
                "bad duration \"s\": expected a number followed by a unit (h, m, s, ms, us, ns)",
            ),
            (
                "10",
                "bad duration \"10\": expected a number followed by a unit (h, m, s, ms, us, ns)",
            ),
            ("-1s", "bad duration \"-1s\": must not be negative"),
        ];
        for (input, want) in cases {
            let err = Duration::parse(input).expect_err(input);
            assert_eq!(err.to_string(), want, "{input}");
        }
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(Duration(D::from_secs(7)).to_string(), "7s");
        assert_eq!(Duration(D::from_millis(2500)).to_string(), "2500ms");
    }
}
