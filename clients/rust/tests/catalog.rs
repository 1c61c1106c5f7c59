//! The event constants are the catalog, exactly: every publishable type the
//! migrations insert (including ones later migrations add), and nothing else.
//! `webhook.*` types are the platform's own (publishing one is refused), so
//! they are deliberately not constants.

use std::{collections::BTreeSet, fs, path::Path};

use webhooks_client::events;

/// Every `(event_type, category)` inserted into `event_types`, minus deleted ones.
fn catalog_from_migrations() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut migrations: Vec<_> = fs::read_dir(&dir)
        .expect("migrations folder")
        .map(|entry| entry.expect("migration entry").path().join("up.sql"))
        .filter(|path| path.exists())
        .collect();
    migrations.sort();
    let mut catalog = BTreeSet::new();
    for path in migrations {
        let sql: String = fs::read_to_string(&path)
            .expect("up.sql")
            .lines()
            .map(|line| line.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        for statement in sql.split(';') {
            let lower = statement.to_ascii_lowercase();
            let quoted = quoted_strings(statement);
            if lower.contains("insert into event_types") {
                if let Some(values) = lower.find("values") {
                    catalog.extend(first_string_of_each_tuple(&statement[values..]));
                }
            } else if lower.contains("delete from event_types") {
                for name in quoted {
                    catalog.remove(&name);
                }
            }
        }
    }
    catalog
}

/// The first string literal of each top-level `( … )` tuple in `values`,
/// honouring quotes (`''` escapes) so parentheses inside strings don't count.
fn first_string_of_each_tuple(values: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (mut depth, mut first, mut chars) = (0usize, None::<String>, values.chars().peekable());
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let mut literal = String::new();
                while let Some(c) = chars.next() {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    literal.push(c);
                }
                if depth == 1 && first.is_none() {
                    first = Some(literal);
                }
            }
            '(' => {
                depth += 1;
            }
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    found.extend(first.take());
                }
            }
            _ => {}
        }
    }
    found
}

fn quoted_strings(text: &str) -> Vec<String> {
    text.split('\'').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn the_constants_are_every_publishable_catalog_type_and_nothing_else() {
    let catalog = catalog_from_migrations();
    assert!(catalog.contains("invoice.created") && catalog.contains("webhook.test"), "parsed {catalog:?}");
    let publishable: BTreeSet<String> = catalog.iter().filter(|t| !t.starts_with("webhook.")).cloned().collect();
    let constants: BTreeSet<String> = events::ALL.iter().map(|t| (*t).to_owned()).collect();
    assert_eq!(constants, publishable);
    assert_eq!(constants.len(), events::ALL.len(), "no duplicates in events::ALL");
}

#[test]
fn operational_webhook_types_are_not_constants() {
    let operational: Vec<String> =
        catalog_from_migrations().into_iter().filter(|t| t.starts_with("webhook.")).collect();
    assert!(!operational.is_empty());
    assert!(operational.iter().all(|t| !events::ALL.contains(&t.as_str())));
}

#[test]
fn constant_names_read_like_their_values() {
    assert_eq!(events::INVOICE_CREATED, "invoice.created");
    assert_eq!(events::BULK_EMAIL_COMPLETED, "bulk_email.completed");
    assert_eq!(events::STORAGE_QUOTA_EXCEEDED, "storage.quota_exceeded");
}
