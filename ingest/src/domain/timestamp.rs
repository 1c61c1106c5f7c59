//! Times that reach SQL: within what PostgreSQL's `timestamptz` can hold.

use chrono::{DateTime, Utc};

use super::InvalidField;

/// Earliest time accepted: the Unix epoch (nothing here is older).
const MIN_MICROS: i64 = 0;
/// Latest time accepted: the end of year 9999 (PostgreSQL goes further, but no
/// time this service writes or a caller means is later; RFC 3339 stops there).
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// A time from a caller (a cursor, a `since`) that PostgreSQL can compare
/// with: `field` names it in the 422 when it is outside 1970–9999.
pub fn from_micros(field: &str, micros: i64) -> Result<DateTime<Utc>, InvalidField> {
    (MIN_MICROS..=MAX_MICROS)
        .contains(&micros)
        .then(|| DateTime::<Utc>::from_timestamp_micros(micros))
        .flatten()
        .ok_or_else(|| InvalidField::new(field, "is outside the years 1970 to 9999"))
}

/// The same check for a parsed time.
pub fn check(field: &str, time: DateTime<Utc>) -> Result<DateTime<Utc>, InvalidField> {
    from_micros(field, time.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_postgresql_cannot_hold_are_refused() {
        assert!(from_micros("cursor", 0).is_ok());
        assert!(from_micros("cursor", Utc::now().timestamp_micros()).is_ok());
        assert!(from_micros("cursor", MAX_MICROS).is_ok());
        assert_eq!(from_micros("cursor", MAX_MICROS + 1).expect_err("far future").field, "cursor");
        assert!(from_micros("cursor", -1).is_err());
        assert!(from_micros("cursor", i64::MAX).is_err());
        assert!(from_micros("cursor", i64::MIN).is_err());
    }
}
