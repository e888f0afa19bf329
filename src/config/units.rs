//! Human-friendly units in the config file: durations like `"500ms"` and sizes like `"4MiB"`.
//!
//! They are parsed while the file is deserialised, so a bad value is reported by serde with its
//! key path and line like any other type error. Durations are bounded there too
//! (`check::bounded_duration`), so no duration key can make a deadline overflow.

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration written with a unit: `"250ms"`, `"30s"`, `"10m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, like \"500ms\", \"30s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                let d = humantime::parse_duration(s.trim())
                    .map_err(|e| E::custom(format_args!("bad duration {s:?}: {e}")))?;
                super::check::bounded_duration(d)
                    .map(Dur)
                    .map_err(|e| E::custom(format_args!("bad duration {s:?}: {e}")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dur, E> {
                if n == 0 {
                    Ok(Dur(Duration::ZERO))
                } else {
                    Err(E::custom(format_args!(
                        "bad duration {n}: give a unit, like \"{n}s\" or \"{n}ms\""
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                Err(E::custom(format_args!(
                    "bad duration {n}: give a unit, like \"{n}s\""
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Dur, E> {
                Err(E::custom(format_args!(
                    "bad duration {n}: give a unit, like \"{n}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size: `"4MiB"`, `"256 MiB"`, `"64KiB"`, `"1GB"`, or a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"4MiB\", \"512KiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                s.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| Size(b.as_u64()))
                    .map_err(|e| E::custom(format_args!("bad size {s:?}: {e}")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| E::custom(format_args!("bad size {n}: must not be negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_sizes() {
        let d: Dur = serde_yaml::from_str("\"250ms\"").unwrap();
        assert_eq!(d.0, Duration::from_millis(250));
        let d: Dur = serde_yaml::from_str("5m").unwrap();
        assert_eq!(d.0, Duration::from_secs(300));
        assert!(serde_yaml::from_str::<Dur>("30").is_err());
        assert!(serde_yaml::from_str::<Dur>("soon").is_err());
        // Bounded: a sum of deadlines can never overflow an `Instant`.
        assert_eq!(
            serde_yaml::from_str::<Dur>("365days").unwrap().0,
            super::super::check::MAX_DURATION
        );
        let e = serde_yaml::from_str::<Dur>("400000000000y").unwrap_err();
        assert!(e.to_string().contains("longest duration accepted"), "{e}");
        let s: Size = serde_yaml::from_str("4MiB").unwrap();
        assert_eq!(s.0, 4 * 1024 * 1024);
        let s: Size = serde_yaml::from_str("256 MiB").unwrap();
        assert_eq!(s.0, 256 * 1024 * 1024);
        let s: Size = serde_yaml::from_str("1000").unwrap();
        assert_eq!(s.0, 1000);
        assert!(serde_yaml::from_str::<Size>("-1").is_err());
        assert!(serde_yaml::from_str::<Size>("lots").is_err());
    }
}
