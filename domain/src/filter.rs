//! Which events a webhook endpoint is subscribed to.
//!
//! A subscription is a list of patterns: an exact event name (`order.shipped`) or a prefix
//! ending in `*` (`order.*`, or `*` for everything). An empty list means every event.

/// Checks one pattern: `*` may only appear once, as the last character.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an event pattern cannot be empty".into());
    }
    if pattern.len() > 128 {
        return Err("an event pattern is at most 128 characters".into());
    }
    match pattern.find('*') {
        Some(at) if at != pattern.len() - 1 => Err(format!(
            "`{pattern}`: `*` may only end a pattern, as in `order.*`"
        )),
        _ => Ok(()),
    }
}

/// Whether an endpoint with these patterns receives events named `event_type`.
pub fn subscribes_to(patterns: &[String], event_type: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => pattern == event_type,
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_prefix_and_catch_all() {
        let subscribed = patterns(&["order.*", "delivery.delivered"]);
        assert!(subscribes_to(&subscribed, "order.shipped"));
        assert!(subscribes_to(&subscribed, "delivery.delivered"));
        assert!(!subscribes_to(&subscribed, "delivery.failed"));
        assert!(!subscribes_to(&subscribed, "orders"));
        assert!(subscribes_to(&patterns(&["*"]), "anything"));
        assert!(subscribes_to(&[], "anything"));
    }

    #[test]
    fn star_only_at_the_end() {
        assert!(validate_pattern("order.*").is_ok());
        assert!(validate_pattern("*").is_ok());
        assert!(validate_pattern("*.shipped").is_err());
        assert!(validate_pattern("a**").is_err());
        assert!(validate_pattern("").is_err());
    }
}
