//! Keyset pagination of subscriptions: the cursor is the last id shown,
//! base64url-encoded. Ids are UUIDv7, so rows created while a client pages
//! sort after the cursor and nothing already listed moves.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use uuid::Uuid;

use crate::domain::InvalidField;

/// Page size when `?limit=` is absent.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest `?limit=`.
pub const MAX_LIMIT: i64 = 100;

/// `?limit=`: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
pub fn parse_limit(limit: Option<i64>) -> Result<i64, InvalidField> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        Some(limit) => Err(InvalidField::with_value("limit", limit, format!("must be from 1 to {MAX_LIMIT}"))),
    }
}

/// The cursor that continues after `last_id`.
pub fn encode_cursor(last_id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(last_id.as_bytes())
}

/// The id a cursor continues after; a cursor this API did not issue is a 422 naming `cursor`.
pub fn decode_cursor(cursor: &str) -> Result<Uuid, InvalidField> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| InvalidField::new("cursor", "is not a cursor this API returned; pass next_cursor unchanged"))
}

/// Splits `limit + 1` fetched rows into the page and the cursor after its last row.
pub fn split_page<T>(mut rows: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(cursor_of);
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Ok(id));
        for bad in ["", "not a cursor", "AAAA", "%%%"] {
            assert_eq!(decode_cursor(bad).expect_err(bad).field, "cursor");
        }
    }

    #[test]
    fn limits_default_and_stay_in_range() {
        assert_eq!(parse_limit(None), Ok(50));
        assert_eq!(parse_limit(Some(1)), Ok(1));
        assert_eq!(parse_limit(Some(100)), Ok(100));
        assert_eq!(parse_limit(Some(0)).expect_err("0").field, "limit");
        assert_eq!(parse_limit(Some(101)).expect_err("101").field, "limit");
    }

    #[test]
    fn an_extra_row_means_another_page() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let (page, next) = split_page(ids.clone(), 2, |id| encode_cursor(*id));
        assert_eq!(page, ids[..2]);
        assert_eq!(next, Some(encode_cursor(ids[1])));
        assert_eq!(split_page(ids.clone(), 3, |id| encode_cursor(*id)), (ids, None));
    }
}
