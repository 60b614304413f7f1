//! Retry schedules: how long to wait before each further attempt.
//!
//! A schedule is the list of delays between attempts, written like `5s,5m,30m,2h`. Attempt 1
//! happens at once; after a retriable failure of attempt `n` the next attempt waits
//! `schedule[n - 1]`; when the list is exhausted the delivery fails for good.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// The most retries a schedule may hold; bounds the number of retry tiers and attempts.
pub const MAX_RETRIES: usize = 20;

/// The longest single delay. A retry tier's consumer holds its batch while it waits, and a
/// Kafka consumer may go at most 24 h between polls; longer waits are more retries.
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 3600);

impl Default for RetrySchedule {
    /// Standard Webhooks' recommendation: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    fn default() -> Self {
        "5s,5m,30m,2h,5h,10h,10h"
            .parse()
            .expect("the default schedule is valid")
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Result<Self, ScheduleError> {
        if delays.len() > MAX_RETRIES {
            return Err(ScheduleError::TooLong(delays.len()));
        }
        if delays.iter().any(|d| d.is_zero()) {
            return Err(ScheduleError::Zero);
        }
        if let Some(delay) = delays.iter().find(|d| **d > MAX_DELAY) {
            return Err(ScheduleError::TooLongDelay(format_delay(*delay)));
        }
        Ok(Self { delays })
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// The delay before the attempt after failed attempt `attempt` (1-based), or `None` when
    /// the schedule is exhausted and the delivery has failed.
    pub fn delay_after_attempt(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        self.delays.get(index).copied()
    }

    /// The total number of attempts: the first plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The wait before the attempt after failed attempt `attempt`, as actually used: the
    /// schedule's delay with jitter, never earlier than a receiver's `Retry-After` (capped at
    /// [`RETRY_AFTER_CAP`]). `None` when the schedule is exhausted.
    ///
    /// The jitter is derived from `seed` (the delivery id) rather than drawn at random, so
    /// planning stays a pure function: re-processing an attempt plans the very same retry.
    pub fn next_wait(
        &self,
        attempt: u32,
        seed: &str,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let jittered = with_jitter(self.delay_after_attempt(attempt)?, seed, attempt);
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(RETRY_AFTER_CAP)),
            None => jittered,
        })
    }
}

/// Jitter spreads retries of deliveries that failed together (an endpoint's outage) so they
/// do not all come back in the same instant: each delay is scaled by a factor in
/// `[1 - JITTER, 1 + JITTER)`.
pub const JITTER: f64 = 0.1;

/// The longest `Retry-After` honoured: a receiver cannot park deliveries for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// `delay` scaled by a factor in `[1 - JITTER, 1 + JITTER)` chosen by hashing `seed` and
/// `attempt`.
pub fn with_jitter(delay: Duration, seed: &str, attempt: u32) -> Duration {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(seed.as_bytes())
        .chain_update(attempt.to_le_bytes())
        .finalize();
    let bits = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    // 53 random bits make a uniform fraction in [0, 1).
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    delay.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
}

/// The fixed ladder of retry tiers every deployment has, whatever its schedules: a wait is
/// spent hopping down the ladder (see the dispatcher's timers), so per-endpoint schedules,
/// jitter and `Retry-After` need no tier of their own.
///
/// Each tier is a topic with a consumer group of its own in every dispatcher, so the ladder is
/// short: a long wait makes a few more hops (a 10 h wait is ten in the 1 h tier), and only the
/// shortest tier's delay bounds how late a task can be.
pub const TIER_LADDER: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(3600),
];

/// The retry tiers: the ladder plus the default schedule's own delays (so a short test
/// schedule such as `50ms` gets a tier that short), shortest first.
pub fn tier_delays(default_schedule: &RetrySchedule) -> Vec<Duration> {
    let mut tiers: Vec<Duration> = TIER_LADDER
        .iter()
        .copied()
        .chain(default_schedule.delays.iter().copied())
        .collect();
    tiers.sort();
    tiers.dedup();
    tiers
}

/// The tier a wait of `remaining` goes to: the longest tier not longer than it, or the
/// shortest tier. `tiers` is sorted and not empty.
pub fn tier_for(tiers: &[Duration], remaining: Duration) -> Duration {
    tiers
        .iter()
        .rev()
        .find(|tier| **tier <= remaining)
        .or(tiers.first())
        .copied()
        .expect("there is always at least one tier")
}

/// Formats a delay the way schedules are written (`90s`, `5m`, `2h`, `1d`).
pub fn format_delay(delay: Duration) -> String {
    let secs = delay.as_secs();
    if delay.subsec_millis() != 0 || secs == 0 {
        format!("{}ms", delay.as_millis())
    } else if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3_600) {
        format!("{}h", secs / 3_600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Parses one delay: a whole number followed by `ms`, `s`, `m`, `h` or `d`.
pub fn parse_delay(text: &str) -> Result<Duration, ScheduleError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || ScheduleError::BadDelay(text.chars().take(32).collect());
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let millis = number.checked_mul(unit_ms).ok_or_else(bad)?;
    Ok(Duration::from_millis(millis))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "`{0}` is not a delay: write a whole number and a unit, like `30s`, `5m`, `2h` or `1d`"
    )]
    BadDelay(String),
    #[error("a retry schedule holds at most {MAX_RETRIES} delays, not {0}")]
    TooLong(usize),
    #[error("a retry delay must be longer than zero")]
    Zero,
    #[error("a retry delay is at most 12h, not {0}: use more retries for longer waits")]
    TooLongDelay(String),
}

impl FromStr for RetrySchedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Self::new(Vec::new());
        }
        Self::new(s.split(',').map(parse_delay).collect::<Result<_, _>>()?)
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.delays.iter().map(|d| format_delay(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for RetrySchedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetrySchedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_the_seed_schedules() {
        for text in [
            "30s,2m,10m",
            "5m,30m,2h,5h,10h",
            "5s,5m,30m,2h,5h,10h,10h",
            "250ms,12h",
        ] {
            let schedule: RetrySchedule = text.parse().unwrap();
            assert_eq!(schedule.to_string(), text);
        }
    }

    #[test]
    fn delay_after_each_attempt() {
        let schedule: RetrySchedule = "30s,2m,10m".parse().unwrap();
        assert_eq!(
            schedule.delay_after_attempt(1),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            schedule.delay_after_attempt(3),
            Some(Duration::from_secs(600))
        );
        assert_eq!(schedule.delay_after_attempt(4), None);
        assert_eq!(schedule.delay_after_attempt(0), None);
        assert_eq!(schedule.max_attempts(), 4);
    }

    #[test]
    fn tiers_are_distinct_and_sorted() {
        let schedule = RetrySchedule::default();
        let tiers: Vec<String> = tier_delays(&schedule)
            .into_iter()
            .map(format_delay)
            .collect();
        assert_eq!(
            tiers,
            ["1s", "5s", "10s", "1m", "5m", "10m", "30m", "1h", "2h", "5h", "10h"]
        );
    }

    #[test]
    fn delays_are_capped() {
        assert!(
            matches!("5m,1d".parse::<RetrySchedule>(), Err(ScheduleError::TooLongDelay(d)) if d == "1d")
        );
        assert!("12h".parse::<RetrySchedule>().is_ok());
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_is_deterministic() {
        let base = Duration::from_secs(100);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let seed = format!("dlv_{i}");
            let wait = with_jitter(base, &seed, 1);
            assert!(wait >= Duration::from_secs(90) && wait < Duration::from_secs(110));
            assert_eq!(wait, with_jitter(base, &seed, 1));
            seen.insert(wait.as_millis() / 1000);
        }
        assert!(seen.len() > 10, "jitter spreads retries: {seen:?}");
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let schedule: RetrySchedule = "30s,2m,10m".parse().unwrap();
        let plain = schedule.next_wait(1, "dlv_1", None).unwrap();
        assert!(plain >= Duration::from_secs(27) && plain < Duration::from_secs(33));
        // A receiver asking for more time gets it ...
        let asked = schedule
            .next_wait(1, "dlv_1", Some(Duration::from_secs(300)))
            .unwrap();
        assert_eq!(asked, Duration::from_secs(300));
        // ... but never less than the schedule, and never more than the cap.
        let short = schedule
            .next_wait(1, "dlv_1", Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(short, plain);
        let huge = schedule
            .next_wait(1, "dlv_1", Some(Duration::from_secs(86_400)))
            .unwrap();
        assert_eq!(huge, RETRY_AFTER_CAP);
        // The schedule still ends: three delays, so no wait after the fourth attempt.
        assert!(schedule.next_wait(3, "dlv_1", None).is_some());
        assert_eq!(schedule.next_wait(4, "dlv_1", None), None);
    }

    #[test]
    fn waits_hop_down_the_tier_ladder() {
        let tiers = tier_delays(&"50ms,5s".parse().unwrap());
        assert_eq!(tiers[0], Duration::from_millis(50));
        assert_eq!(
            tier_for(&tiers, Duration::from_secs(7200)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            tier_for(&tiers, Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        assert_eq!(
            tier_for(&tiers, Duration::from_millis(10)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn rejects_nonsense() {
        assert!(matches!(
            "5x".parse::<RetrySchedule>(),
            Err(ScheduleError::BadDelay(_))
        ));
        assert!(matches!(
            "s".parse::<RetrySchedule>(),
            Err(ScheduleError::BadDelay(_))
        ));
        assert!(matches!(
            "0s".parse::<RetrySchedule>(),
            Err(ScheduleError::Zero)
        ));
        let long = vec!["1s"; 21].join(",");
        assert!(matches!(
            long.parse::<RetrySchedule>(),
            Err(ScheduleError::TooLong(21))
        ));
        assert_eq!("".parse::<RetrySchedule>().unwrap().max_attempts(), 1);
    }
}
