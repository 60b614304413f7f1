//! The CQL schema (`schemas/cql/herald.cql`), embedded and turned into statements.

use crate::{Result, StoreError};

/// The schema file, with `{keyspace}` and `{replication_factor}` placeholders.
pub(super) const SCHEMA: &str = include_str!("../../../schemas/cql/herald.cql");

/// Longest keyspace name ScyllaDB and Cassandra accept.
const MAX_KEYSPACE_LEN: usize = 48;

/// Checks a keyspace name: it is spliced into CQL text unquoted, so only names CQL takes as
/// plain identifiers are allowed (a letter, then letters, digits and underscores, at most 48).
pub(super) fn validate_keyspace(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_KEYSPACE_LEN;
    if valid {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "`{name}` is not a valid keyspace name: expected a letter, then up to 47 letters, digits or underscores"
        )))
    }
}

/// The schema's statements for `keyspace`: placeholders substituted, `--` comments removed,
/// split on `;`, blank ones dropped. The file keeps `;` and `--` out of its literals.
pub(super) fn statements(keyspace: &str, replication_factor: u32) -> Vec<String> {
    let without_comments: String = SCHEMA
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .replace("{keyspace}", keyspace)
        .replace("{replication_factor}", &replication_factor.to_string())
        .split(';')
        .map(|statement| {
            statement
                .lines()
                .map(str::trim_end)
                .filter(|line| !line.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|statement| !statement.is_empty())
        .collect()
}

/// For the `CREATE KEYSPACE` statement, the same statement with tablets disabled (ScyllaDB 6
/// and later). Lightweight transactions, which claims need, are not available in tablet
/// keyspaces on those versions; servers that do not know the option reject it, and the store
/// then runs the plain statement.
pub(super) fn with_tablets_disabled(statement: &str) -> Option<String> {
    statement
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("CREATE KEYSPACE")
        .then(|| format!("{statement}\n    AND tablets = {{'enabled': false}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_splits_into_create_if_not_exists_statements() {
        let statements = statements("herald_test", 3);
        assert_eq!(statements.len(), 15, "{statements:#?}");
        for statement in &statements {
            let upper = statement.to_ascii_uppercase();
            assert!(
                upper.starts_with("CREATE KEYSPACE IF NOT EXISTS ")
                    || upper.starts_with("CREATE TABLE IF NOT EXISTS "),
                "every statement must be CREATE ... IF NOT EXISTS: {statement}"
            );
            assert!(!statement.contains(';') && !statement.contains("--"));
            assert!(
                !statement.contains("{keyspace}") && !statement.contains("{replication_factor}"),
                "placeholders must be substituted: {statement}"
            );
            // Balanced parentheses and braces: a stray `;` would have cut a statement.
            for (open, close) in [('(', ')'), ('{', '}')] {
                assert_eq!(
                    statement.matches(open).count(),
                    statement.matches(close).count(),
                    "{statement}"
                );
            }
        }
        assert_eq!(
            statements[0],
            "CREATE KEYSPACE IF NOT EXISTS herald_test\n    WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
        );
    }

    #[test]
    fn every_table_is_in_the_keyspace_and_documented() {
        let statements = statements("ks1", 1);
        let tables: Vec<&str> = statements[1..]
            .iter()
            .map(|s| {
                let rest = s
                    .strip_prefix("CREATE TABLE IF NOT EXISTS ks1.")
                    .unwrap_or_else(|| panic!("tables must be qualified with the keyspace: {s}"));
                rest.split_whitespace().next().unwrap()
            })
            .collect();
        assert_eq!(
            tables,
            [
                "tenants",
                "api_keys_by_hash",
                "templates",
                "endpoints",
                "recipients",
                "recipients_by_contact",
                "deliveries",
                "deliveries_by_time",
                "endpoint_attempts",
                "dead_letters",
                "health_minutes",
                "health_days",
                "claims",
                "checkpoints",
            ]
        );
        for table in tables {
            assert!(
                SCHEMA.contains(&format!("\n-- {table}: ")),
                "table `{table}` needs a comment saying what it answers"
            );
        }
    }

    #[test]
    fn the_attempt_log_and_dead_letters_expire_after_30_days() {
        let statements = statements("ks1", 1);
        let table = |name: &str| {
            statements
                .iter()
                .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS ks1.{name} ")))
                .unwrap_or_else(|| panic!("no table {name}"))
        };
        for name in ["endpoint_attempts", "dead_letters"] {
            assert!(
                table(name).contains("default_time_to_live = 2592000"),
                "{name} must keep rows 30 days"
            );
        }
        assert!(table("endpoint_attempts").contains(
            "WITH CLUSTERING ORDER BY (attempted_at DESC, delivery_id DESC, attempt DESC)"
        ));
        // Everything else is kept until it is replaced or deleted.
        let expiring = statements
            .iter()
            .filter(|s| s.contains("default_time_to_live"))
            .count();
        assert_eq!(expiring, 2);
    }

    #[test]
    fn comments_hold_no_semicolons() {
        for line in SCHEMA.lines() {
            if let Some((_, comment)) = line.split_once("--") {
                assert!(!comment.contains(';'), "a `;` in a comment: {line}");
            }
        }
    }

    #[test]
    fn no_counters_materialized_views_or_filtering() {
        let upper = SCHEMA.to_ascii_uppercase();
        let code: String = upper
            .lines()
            .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
            .collect();
        for banned in [
            " COUNTER",
            "MATERIALIZED",
            "ALLOW FILTERING",
            "CREATE INDEX",
        ] {
            assert!(!code.contains(banned), "the schema must not use {banned}");
        }
    }

    #[test]
    fn only_the_keyspace_statement_gets_tablets_disabled() {
        let statements = statements("herald", 1);
        let keyspace = with_tablets_disabled(&statements[0]).unwrap();
        assert!(keyspace.starts_with(&statements[0]));
        assert!(keyspace.ends_with("AND tablets = {'enabled': false}"));
        assert!(statements[1..]
            .iter()
            .all(|s| with_tablets_disabled(s).is_none()));
    }

    #[test]
    fn keyspace_names_are_plain_identifiers() {
        for ok in ["herald", "herald_test_01hzx", "H1", &"a".repeat(48)] {
            assert!(validate_keyspace(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1herald",
            "_herald",
            "herald-test",
            "herald.x",
            "herald; DROP KEYSPACE x",
            "\"Herald\"",
            &"a".repeat(49),
        ] {
            assert!(validate_keyspace(bad).is_err(), "{bad}");
        }
    }
}
