//! Seeded random faults: each model request draws its fate from a fixed schedule.
//!
//! A chaos benchmark compares systems only if every one of them meets the same faults. So the fate
//! of a request is not drawn from a live random generator but computed from the seed, the
//! instance's name, the request's id (`x-chaos-id`) and how many times that id has arrived at this
//! instance: the same request meets the same fate at the same server in every run and behind every
//! balancer, whatever the concurrency, and a retry (another arrival, or another server) draws
//! afresh. Requests without an id draw by their arrival number at the instance instead.
//!
//! The schedule is written `reset=0.02,status503=0.03,hang=0.01,cut=0.02,slow=0.02`: each fault
//! and the share of requests it hits; the rest are answered normally.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One kind of fault a schedule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Close the connection without a response.
    Reset,
    /// Answer with this status and an error body.
    Status(u16),
    /// Never send the first token: a stream gets its header and then nothing, a plain request
    /// nothing at all.
    Hang,
    /// Stop mid-answer: a stream after some of its tokens, a plain answer part-way through its
    /// body; then abort the connection.
    Cut,
    /// Send the first token only after the schedule's slow delay, then answer normally.
    Slow,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Reset => f.write_str("reset"),
            Fault::Status(s) => write!(f, "status{s}"),
            Fault::Hang => f.write_str("hang"),
            Fault::Cut => f.write_str("cut"),
            Fault::Slow => f.write_str("slow"),
        }
    }
}

/// A schedule that cannot be used as written.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ChaosError {
    /// A part of the schedule is not `name=share`.
    #[error("{0:?} is not name=share (e.g. reset=0.02)")]
    Malformed(String),
    /// A name that is not a fault.
    #[error("unknown fault {0:?}: expected reset, statusNNN, hang, cut or slow")]
    UnknownFault(String),
    /// A share outside 0..=1, or not a number.
    #[error("share of {fault}: {value:?} is not a number between 0 and 1")]
    BadShare {
        /// The fault it was given for.
        fault: String,
        /// The share as written.
        value: String,
    },
    /// The same fault twice.
    #[error("fault {0} is given twice")]
    Duplicate(String),
    /// Shares that add up to more than every request.
    #[error("the shares add up to {0}, more than 1")]
    OverOne(f64),
}

/// The faults of a schedule and the share of requests each hits, in a fixed order (the order of
/// [`Fault`]), so that the same faults written in another order give the same schedule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChaosShares(Vec<(Fault, f64)>);

impl ChaosShares {
    /// The faults and their shares.
    pub fn shares(&self) -> &[(Fault, f64)] {
        &self.0
    }
}

impl FromStr for ChaosShares {
    type Err = ChaosError;

    fn from_str(spec: &str) -> Result<Self, ChaosError> {
        let mut shares: Vec<(Fault, f64)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| ChaosError::Malformed(part.to_owned()))?;
            let (name, value) = (name.trim(), value.trim());
            let fault = match name {
                "reset" => Fault::Reset,
                "hang" => Fault::Hang,
                "cut" => Fault::Cut,
                "slow" => Fault::Slow,
                other => match other.strip_prefix("status").map(str::parse::<u16>) {
                    Some(Ok(s)) if (100..=599).contains(&s) => Fault::Status(s),
                    _ => return Err(ChaosError::UnknownFault(other.to_owned())),
                },
            };
            let share = value
                .parse::<f64>()
                .ok()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or_else(|| ChaosError::BadShare {
                    fault: name.to_owned(),
                    value: value.to_owned(),
                })?;
            if shares.iter().any(|(f, _)| *f == fault) {
                return Err(ChaosError::Duplicate(fault.to_string()));
            }
            shares.push((fault, share));
        }
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        // A little slack for decimal shares such as 0.1 + 0.2 that do not add up exactly.
        if total > 1.0 + 1e-9 {
            return Err(ChaosError::OverOne(total));
        }
        shares.sort_by_key(|s| s.0);
        Ok(ChaosShares(shares))
    }
}

/// The fate of one model request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Answer normally.
    Answer,
    /// Close the connection without a response.
    Reset,
    /// Answer with this status.
    Status(u16),
    /// Never send the first token.
    Hang,
    /// Abort after this many tokens (a plain answer: after this share of its body).
    Cut {
        /// Tokens sent before the abort, at least one and fewer than the answer has (when it
        /// has two or more).
        after: usize,
    },
    /// First token after the schedule's slow delay.
    Slow,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fate::Answer => f.write_str("ok"),
            Fate::Reset => f.write_str("reset"),
            Fate::Status(s) => write!(f, "status{s}"),
            Fate::Hang => f.write_str("hang"),
            Fate::Cut { after } => write!(f, "cut@{after}"),
            Fate::Slow => f.write_str("slow"),
        }
    }
}

/// A seeded fault schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    /// The seed: the same seed gives the same fates.
    pub seed: u64,
    /// Which faults, and the share of requests each hits.
    pub shares: ChaosShares,
    /// How late the first token of a [`Fate::Slow`] request comes (default 3 s: slow enough to
    /// matter, short enough to finish under a sensible first-token timeout).
    pub slow: Duration,
}

impl Chaos {
    /// The fate of the `nth` arrival (1-based) of request `id` at `instance`, an answer of
    /// `tokens` tokens. A pure function of its inputs and the schedule.
    pub fn draw(&self, instance: &str, id: &str, nth: u64, tokens: usize) -> Fate {
        let key = mix(self.seed ^ fnv1a(instance.as_bytes()))
            ^ mix(fnv1a(id.as_bytes()))
            ^ mix(nth.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let pick = unit(mix(key));
        let mut below = 0.0;
        for &(fault, share) in self.shares.shares() {
            below += share;
            if pick < below {
                return match fault {
                    Fault::Reset => Fate::Reset,
                    Fault::Status(s) => Fate::Status(s),
                    Fault::Hang => Fate::Hang,
                    Fault::Slow => Fate::Slow,
                    Fault::Cut => Fate::Cut {
                        after: cut_point(mix(key ^ 0xC0FF_EE00), tokens),
                    },
                };
            }
        }
        Fate::Answer
    }
}

/// Where to cut an answer of `tokens` tokens: after 1 to `tokens - 1` of them, so that the client
/// has seen the answer start and knows it did not end.
fn cut_point(h: u64, tokens: usize) -> usize {
    match tokens {
        0 | 1 => tokens,
        n => 1 + (h % (n as u64 - 1)) as usize,
    }
}

/// FNV-1a: a stable hash of bytes (std's hasher may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finaliser: spreads every input bit over the whole output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` from the top 53 bits.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chaos(spec: &str, seed: u64) -> Chaos {
        Chaos {
            seed,
            shares: spec.parse().expect("valid schedule"),
            slow: Duration::from_secs(3),
        }
    }

    #[test]
    fn sim_chaos_parses_schedules_in_a_fixed_order() {
        let a: ChaosShares = "slow=0.02, reset=0.02,status503=0.03,hang=0.01,cut=0.02"
            .parse()
            .expect("valid");
        let b: ChaosShares = "reset=0.02,status503=0.03,hang=0.01,cut=0.02,slow=0.02"
            .parse()
            .expect("valid");
        assert_eq!(a, b);
        assert_eq!(
            a.shares()
                .iter()
                .map(|(f, _)| f.to_string())
                .collect::<Vec<_>>(),
            ["reset", "status503", "hang", "cut", "slow"]
        );
        assert_eq!("".parse::<ChaosShares>(), Ok(ChaosShares::default()));
    }

    #[test]
    fn sim_chaos_rejects_bad_schedules() {
        let err = |s: &str| s.parse::<ChaosShares>().expect_err(s);
        assert_eq!(err("reset"), ChaosError::Malformed("reset".into()));
        assert_eq!(err("boom=0.1"), ChaosError::UnknownFault("boom".into()));
        assert_eq!(
            err("status42=0.1"),
            ChaosError::UnknownFault("status42".into())
        );
        assert!(matches!(err("hang=1.5"), ChaosError::BadShare { .. }));
        assert!(matches!(err("hang=-0.1"), ChaosError::BadShare { .. }));
        assert!(matches!(err("hang=lots"), ChaosError::BadShare { .. }));
        assert_eq!(err("cut=0.1,cut=0.2"), ChaosError::Duplicate("cut".into()));
        assert!(matches!(err("reset=0.6,hang=0.5"), ChaosError::OverOne(_)));
        assert!("status500=0.1,status503=0.2,reset=0.7"
            .parse::<ChaosShares>()
            .is_ok());
    }

    #[test]
    fn sim_chaos_fates_are_a_function_of_their_inputs() {
        let c = chaos("reset=0.2,status503=0.2,hang=0.2,cut=0.2", 7);
        let fates = |c: &Chaos, instance: &str| -> Vec<Fate> {
            (0..200)
                .map(|i| c.draw(instance, &i.to_string(), 1, 10))
                .collect()
        };
        assert_eq!(fates(&c, "p1"), fates(&c.clone(), "p1"));
        // Another instance, seed or arrival draws afresh: a retry elsewhere is not doomed.
        assert_ne!(fates(&c, "p1"), fates(&c, "p2"));
        assert_ne!(
            fates(&c, "p1"),
            fates(&chaos("reset=0.2,status503=0.2,hang=0.2,cut=0.2", 8), "p1")
        );
        let again: Vec<Fate> = (0..200)
            .map(|i| c.draw("p1", &i.to_string(), 2, 10))
            .collect();
        assert_ne!(fates(&c, "p1"), again);
    }

    #[test]
    fn sim_chaos_hits_each_fault_with_its_share() {
        let c = chaos("reset=0.02,status503=0.03,hang=0.01,cut=0.02,slow=0.02", 42);
        let n = 100_000;
        let mut counts = std::collections::HashMap::new();
        for i in 0..n {
            let fate = c.draw("p1", &i.to_string(), 1, 10);
            let name = match fate {
                Fate::Cut { after } => {
                    assert!((1..10).contains(&after), "cut after {after} of 10");
                    "cut".to_string()
                }
                other => other.to_string(),
            };
            *counts.entry(name).or_insert(0u32) += 1;
        }
        for (name, share) in [
            ("reset", 0.02),
            ("status503", 0.03),
            ("hang", 0.01),
            ("cut", 0.02),
            ("slow", 0.02),
            ("ok", 0.90),
        ] {
            let got = f64::from(counts.get(name).copied().unwrap_or(0)) / f64::from(n);
            assert!(
                (got - share).abs() < share * 0.1,
                "{name}: {got} of requests, expected about {share}"
            );
        }
    }

    #[test]
    fn sim_chaos_cut_points_stay_inside_the_answer() {
        assert_eq!(cut_point(12345, 0), 0);
        assert_eq!(cut_point(12345, 1), 1);
        assert_eq!(cut_point(12345, 2), 1);
        assert!((0..1000).all(|h| (1..8).contains(&cut_point(mix(h), 8))));
        let c = chaos("cut=1", 1);
        assert_eq!(c.draw("p1", "x", 1, 2), Fate::Cut { after: 1 });
    }
}
