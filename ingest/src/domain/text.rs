//! The one check every text we store or search by goes through: JSON body
//! strings, query parameters, descriptions, tenant ids, key names.
//!
//! PostgreSQL `text` and `jsonb` refuse NUL (the request would fail with a
//! 500), and other control characters break log lines and make values nobody
//! can type again. Which ones a field may hold depends on what it is.

use super::InvalidField;

/// What a text field may contain besides printable characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Arbitrary JSON data (event payloads): anything but NUL.
    Data,
    /// Free text shown to people (descriptions): tabs and line breaks, no
    /// other control character.
    Prose,
    /// A name, id or filter value on one line: no control character at all.
    Line,
}

/// Checks `value` of `field` for the characters `kind` forbids; the error
/// names the field and the first offending character's position.
pub fn check(field: &str, value: &str, kind: TextKind) -> Result<(), InvalidField> {
    let forbidden = |c: char| match kind {
        TextKind::Data => c == '\0',
        TextKind::Prose => c.is_control() && !matches!(c, '\t' | '\n' | '\r'),
        TextKind::Line => c.is_control(),
    };
    match value.chars().enumerate().find(|(_, c)| forbidden(*c)) {
        None => Ok(()),
        Some((index, c)) => {
            let what =
                if c == '\0' { "a NUL character".to_owned() } else { format!("control character U+{:04X}", c as u32) };
            Err(InvalidField::new(field, format!("must not contain {what} (found at character {index})")))
        }
    }
}

/// Checks every string and object key inside a JSON value (payload data):
/// the error names the path, e.g. `event_data.items[2].note`.
pub fn check_json(field: &str, value: &serde_json::Value) -> Result<(), InvalidField> {
    use serde_json::Value;
    match value {
        Value::String(text) => check(field, text, TextKind::Data),
        Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, item)| check_json(&format!("{field}[{i}]"), item))
        }
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let path = format!("{field}.{key}");
            check(&path, key, TextKind::Data)?;
            check_json(&path, item)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_refused_everywhere() {
        for kind in [TextKind::Data, TextKind::Prose, TextKind::Line] {
            assert_eq!(check("f", "x\0y", kind).expect_err("nul").field, "f");
        }
    }

    #[test]
    fn prose_keeps_line_breaks_and_lines_keep_none() {
        assert!(check("d", "line one\n\tline two\r\n", TextKind::Prose).is_ok());
        assert!(check("d", "bell\u{7}", TextKind::Prose).is_err());
        assert!(check("d", "esc\u{1b}[31m", TextKind::Prose).is_err());
        assert!(check("t", "a\nb", TextKind::Line).is_err());
        assert!(check("t", "c1\u{85}", TextKind::Line).is_err());
        assert!(check("t", "ünïcödé ✓ 𝄞", TextKind::Line).is_ok());
        assert!(check("x", "tab\there\u{7f}", TextKind::Data).is_ok());
    }

    #[test]
    fn json_paths_name_the_offending_string_or_key() {
        let value = serde_json::json!({"a": [1, {"b": "ok"}, {"c": "x\u{0}"}]});
        assert_eq!(check_json("event_data", &value).expect_err("nul").field, "event_data.a[2].c");
        let key = serde_json::json!({"k\u{0}": 1});
        assert_eq!(check_json("metadata", &key).expect_err("nul key").field, "metadata.k\u{0}");
        assert!(check_json("event_data", &serde_json::json!({"fine": ["é", 1.5, null]})).is_ok());
    }
}
