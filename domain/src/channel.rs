//! The channels a notification can travel on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    Whatsapp,
    Telegram,
    Push,
    Slack,
    Discord,
    /// Signed HTTP POSTs to a tenant's webhook endpoints (fan-out, never a `send` channel).
    Webhook,
}

impl Channel {
    /// Channels a `POST /v1/send` may name, in the order automatic selection tries them.
    pub const SENDABLE: [Channel; 7] = [
        Channel::Email,
        Channel::Sms,
        Channel::Whatsapp,
        Channel::Telegram,
        Channel::Push,
        Channel::Slack,
        Channel::Discord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Telegram => "telegram",
            Channel::Push => "push",
            Channel::Slack => "slack",
            Channel::Discord => "discord",
            Channel::Webhook => "webhook",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown channel `{0}`: expected one of email, sms, whatsapp, telegram, push, slack, discord"
)]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            "whatsapp" => Channel::Whatsapp,
            "telegram" => Channel::Telegram,
            "push" => Channel::Push,
            "slack" => Channel::Slack,
            "discord" => Channel::Discord,
            "webhook" => Channel::Webhook,
            other => return Err(UnknownChannel(other.chars().take(32).collect())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for channel in Channel::SENDABLE.into_iter().chain([Channel::Webhook]) {
            assert_eq!(channel.as_str().parse::<Channel>().unwrap(), channel);
            assert_eq!(
                serde_json::to_string(&channel).unwrap(),
                format!("\"{channel}\"")
            );
        }
        assert!("fax".parse::<Channel>().is_err());
    }
}
