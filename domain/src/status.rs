//! The delivery lifecycle: a one-way state machine.
//!
//! `scheduled → queued → sent → delivered → opened/read → clicked`, or off to one of the
//! ends `bounced`, `failed`, `canceled`. Events can arrive late or twice (at-least-once
//! delivery, provider callbacks racing our own outcomes); [`DeliveryStatus::can_move_to`] is
//! the single rule that keeps a late event from moving a delivery back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Scheduled,
    Queued,
    Sent,
    Delivered,
    Opened,
    Read,
    Clicked,
    Bounced,
    Failed,
    Canceled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Scheduled => "scheduled",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Opened => "opened",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Clicked => "clicked",
            DeliveryStatus::Bounced => "bounced",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Canceled => "canceled",
        }
    }

    /// Progress along the happy path; ends have no rank.
    fn progress(self) -> Option<u8> {
        match self {
            DeliveryStatus::Scheduled => Some(0),
            DeliveryStatus::Queued => Some(1),
            DeliveryStatus::Sent => Some(2),
            DeliveryStatus::Delivered => Some(3),
            DeliveryStatus::Opened | DeliveryStatus::Read => Some(4),
            DeliveryStatus::Clicked => Some(5),
            DeliveryStatus::Bounced | DeliveryStatus::Failed | DeliveryStatus::Canceled => None,
        }
    }

    /// True for `bounced`, `failed` and `canceled`: nothing moves a delivery out of them.
    pub fn is_final(self) -> bool {
        self.progress().is_none()
    }

    /// Whether a delivery in `self` may move to `next`.
    ///
    /// Forward moves may skip steps (an `opened` that overtakes its `delivered` implies it).
    /// A failure can only end a delivery that has not yet been delivered, and only a scheduled
    /// delivery can be canceled. Staying in place is not a move.
    pub fn can_move_to(self, next: DeliveryStatus) -> bool {
        match (self.progress(), next) {
            (None, _) => false,
            (Some(rank), DeliveryStatus::Bounced | DeliveryStatus::Failed) => rank <= 2,
            (Some(rank), DeliveryStatus::Canceled) => rank == 0,
            (Some(rank), next) => next.progress().is_some_and(|next_rank| next_rank > rank),
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for DeliveryStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "scheduled" => DeliveryStatus::Scheduled,
            "queued" => DeliveryStatus::Queued,
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "opened" => DeliveryStatus::Opened,
            "read" => DeliveryStatus::Read,
            "clicked" => DeliveryStatus::Clicked,
            "bounced" => DeliveryStatus::Bounced,
            "failed" => DeliveryStatus::Failed,
            "canceled" => DeliveryStatus::Canceled,
            other => return Err(UnknownStatus(other.chars().take(32).collect())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryStatus::*;

    #[test]
    fn happy_path_moves_forward_only() {
        let path = [Scheduled, Queued, Sent, Delivered, Opened, Clicked];
        for (i, from) in path.iter().enumerate() {
            for (j, to) in path.iter().enumerate() {
                assert_eq!(from.can_move_to(*to), j > i, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn ends_are_final() {
        for end in [Bounced, Failed, Canceled] {
            assert!(end.is_final());
            for next in [Queued, Sent, Delivered, Failed, Clicked] {
                assert!(!end.can_move_to(next), "{end} -> {next}");
            }
        }
    }

    #[test]
    fn failure_cannot_undo_a_delivery() {
        assert!(Queued.can_move_to(Failed));
        assert!(Sent.can_move_to(Bounced));
        assert!(!Delivered.can_move_to(Failed));
        assert!(!Opened.can_move_to(Bounced));
    }

    #[test]
    fn only_scheduled_can_be_canceled() {
        assert!(Scheduled.can_move_to(Canceled));
        assert!(!Queued.can_move_to(Canceled));
    }

    #[test]
    fn read_and_opened_are_peers() {
        assert!(!Opened.can_move_to(Read));
        assert!(Read.can_move_to(Clicked));
    }
}
