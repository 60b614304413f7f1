//! Choosing the channel of a send.

use crate::model::Contacts;
use crate::Channel;

/// Channels this build of Herald has a delivery provider for. The dispatcher registers one
/// provider for each (a dispatcher test checks the two agree); sends on other channels are
/// refused at the door rather than accepted and failed later.
pub const DELIVERABLE: [Channel; 2] = [Channel::Slack, Channel::Discord];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelChoiceError {
    #[error(
        "channel `{0}` is not available in this version of Herald (available: slack, discord)"
    )]
    NotDeliverable(Channel),
    #[error("the template has no content for channel `{0}`")]
    NoTemplateVariant(Channel),
    #[error("the recipient has no address for channel `{0}`")]
    NoDestination(Channel),
    #[error("no channel fits: the template and the recipient share no deliverable channel")]
    NothingFits,
}

/// The channel a send goes out on: the requested one if it can be used, otherwise the first
/// channel (in [`Channel::SENDABLE`] order) that is deliverable, has template content and an
/// address for the recipient.
pub fn choose_channel(
    requested: Option<Channel>,
    has_variant: impl Fn(Channel) -> bool,
    contacts: &Contacts,
) -> Result<Channel, ChannelChoiceError> {
    let usable = |channel: Channel| -> Result<Channel, ChannelChoiceError> {
        if !DELIVERABLE.contains(&channel) {
            Err(ChannelChoiceError::NotDeliverable(channel))
        } else if !has_variant(channel) {
            Err(ChannelChoiceError::NoTemplateVariant(channel))
        } else if contacts.destination(channel).is_none() {
            Err(ChannelChoiceError::NoDestination(channel))
        } else {
            Ok(channel)
        }
    };
    match requested {
        Some(channel) => usable(channel),
        None => Channel::SENDABLE
            .into_iter()
            .find_map(|channel| usable(channel).ok())
            .ok_or(ChannelChoiceError::NothingFits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack_only() -> Contacts {
        Contacts {
            slack_webhook_url: Some("https://hooks.slack.com/x".into()),
            ..Contacts::default()
        }
    }

    #[test]
    fn requested_channel_must_be_usable() {
        assert_eq!(
            choose_channel(Some(Channel::Slack), |_| true, &slack_only()),
            Ok(Channel::Slack)
        );
        assert_eq!(
            choose_channel(Some(Channel::Discord), |_| true, &slack_only()),
            Err(ChannelChoiceError::NoDestination(Channel::Discord))
        );
        assert_eq!(
            choose_channel(Some(Channel::Slack), |c| c != Channel::Slack, &slack_only()),
            Err(ChannelChoiceError::NoTemplateVariant(Channel::Slack))
        );
        assert_eq!(
            choose_channel(Some(Channel::Email), |_| true, &slack_only()),
            Err(ChannelChoiceError::NotDeliverable(Channel::Email))
        );
    }

    #[test]
    fn automatic_choice_takes_the_first_that_fits() {
        let both = Contacts {
            discord_webhook_url: Some("https://discord.com/api/webhooks/1".into()),
            ..slack_only()
        };
        assert_eq!(choose_channel(None, |_| true, &both), Ok(Channel::Slack));
        assert_eq!(
            choose_channel(None, |c| c == Channel::Discord, &both),
            Ok(Channel::Discord)
        );
        assert_eq!(
            choose_channel(None, |_| false, &both),
            Err(ChannelChoiceError::NothingFits)
        );
    }
}
