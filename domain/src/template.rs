//! Templates: per-channel content with Jinja-style `{{ var }}` substitution (minijinja).
//!
//! Rendering is strict: a variable the template uses but the caller did not supply is an
//! error that names it, never an empty string in a customer's message.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::Channel;

/// Upper bound on one template field, so a template cannot be used to store blobs.
pub const MAX_TEMPLATE_FIELD_BYTES: usize = 64 * 1024;

/// A template's content for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
}

/// Content after substitution, ready for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{field}: syntax error on line {line}: {message}")]
    Syntax {
        field: String,
        line: usize,
        message: String,
    },
    #[error("{field}: is longer than {MAX_TEMPLATE_FIELD_BYTES} bytes")]
    TooLong { field: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("missing template variable `{0}`")]
    MissingVariable(String),
    #[error("the template has no content for channel `{0}`")]
    NoVariant(Channel),
    #[error("rendering failed: {0}")]
    Failed(String),
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Checks every field of every channel compiles; errors name the field and the line.
pub fn validate(channels: &BTreeMap<Channel, ChannelContent>) -> Result<(), Vec<TemplateError>> {
    let env = environment();
    let mut errors = Vec::new();
    for (channel, content) in channels {
        let fields = [
            ("subject", content.subject.as_deref()),
            ("body", Some(content.body.as_str())),
        ];
        for (name, source) in fields {
            let Some(source) = source else { continue };
            let field = format!("channels.{channel}.{name}");
            if source.len() > MAX_TEMPLATE_FIELD_BYTES {
                errors.push(TemplateError::TooLong { field });
                continue;
            }
            if let Err(err) = env.template_from_str(source) {
                errors.push(TemplateError::Syntax {
                    field,
                    line: err.line().unwrap_or(1),
                    message: err.detail().unwrap_or("invalid template").to_owned(),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Renders one template string against `vars` (a JSON object).
pub fn render_str(source: &str, vars: &serde_json::Value) -> Result<String, RenderError> {
    let env = environment();
    let template = env
        .template_from_str(source)
        .map_err(|e| RenderError::Failed(e.to_string()))?;
    // Name the first missing top-level variable precisely; minijinja's own strict-mode error
    // says only "undefined value".
    let mut used: Vec<String> = template.undeclared_variables(false).into_iter().collect();
    used.sort();
    if let Some(missing) = used.into_iter().find(|name| vars.get(name).is_none()) {
        return Err(RenderError::MissingVariable(missing));
    }
    template.render(vars).map_err(|err| match err.kind() {
        minijinja::ErrorKind::UndefinedError => RenderError::MissingVariable(
            err.detail()
                .map(str::to_owned)
                .unwrap_or_else(|| "(nested value)".to_owned()),
        ),
        _ => RenderError::Failed(err.to_string()),
    })
}

/// Renders a channel's subject and body.
pub fn render(content: &ChannelContent, vars: &serde_json::Value) -> Result<Rendered, RenderError> {
    Ok(Rendered {
        subject: content
            .subject
            .as_deref()
            .map(|s| render_str(s, vars))
            .transpose()?,
        body: render_str(&content.body, vars)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn content(body: &str) -> ChannelContent {
        ChannelContent {
            subject: None,
            body: body.to_owned(),
        }
    }

    #[test]
    fn substitutes_variables() {
        let rendered = render(
            &ChannelContent {
                subject: Some("Order {{ order_id }}".into()),
                body: "Hi {{ name }}!".into(),
            },
            &json!({"order_id": "ORD-1", "name": "Ana"}),
        )
        .unwrap();
        assert_eq!(rendered.subject.as_deref(), Some("Order ORD-1"));
        assert_eq!(rendered.body, "Hi Ana!");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = render(
            &content("Order {{ order_id }} for {{ name }}"),
            &json!({"name": "x"}),
        );
        assert_eq!(err, Err(RenderError::MissingVariable("order_id".into())));
    }

    #[test]
    fn a_missing_nested_value_is_an_error_not_an_empty_string() {
        let err = render(&content("{{ order.id }}"), &json!({"order": {}}));
        assert!(
            matches!(err, Err(RenderError::MissingVariable(_))),
            "{err:?}"
        );
    }

    #[test]
    fn no_html_escaping_in_plain_text_channels() {
        let rendered = render(&content("{{ x }}"), &json!({"x": "<b>&"})).unwrap();
        assert_eq!(rendered.body, "<b>&");
    }

    #[test]
    fn syntax_errors_give_field_and_line() {
        let channels = BTreeMap::from([(Channel::Slack, content("line one\n{{ broken"))]);
        let errors = validate(&channels).unwrap_err();
        assert!(
            matches!(&errors[0], TemplateError::Syntax { field, line: 2, .. } if field == "channels.slack.body"),
            "{errors:?}"
        );
    }
}
