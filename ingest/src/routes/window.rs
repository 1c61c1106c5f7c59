//! Time windows in requests (`since`, `until`): RFC 3339 times within the
//! years PostgreSQL is asked about ([`timestamp::check`]), `since` before
//! `until`; a bad one is a 422 naming the field.

use chrono::{DateTime, Utc};

use crate::{domain::timestamp, error::ApiError};

/// Parses an RFC 3339 time given in `field`.
pub fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    let at = DateTime::parse_from_rfc3339(value)
        .map(|at| at.to_utc())
        .map_err(|_| ApiError::invalid_value(field, value, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"))?;
    Ok(timestamp::check(field, at)?)
}

/// Parses an optional time.
pub fn parse_optional_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value.map(|value| parse_time(field, value)).transpose()
}

/// A half-open window `[since, until)`; `until` defaults to now and must
/// come after `since`.
pub fn window(since: DateTime<Utc>, until: Option<DateTime<Utc>>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let since = timestamp::check("since", since)?;
    let until = match until {
        Some(until) => timestamp::check("until", until)?,
        None => Utc::now(),
    };
    if until <= since {
        return Err(ApiError::validation("until", "must be later than since"));
    }
    Ok((since, until))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_and_windows_run_forward() {
        let since = parse_time("since", "2026-12-01T10:00:00+02:00").expect("rfc 3339");
        assert_eq!(since.to_rfc3339(), "2026-12-01T08:00:00+00:00");
        assert!(parse_time("since", "yesterday").is_err());
        assert!(parse_time("since", "2026-12-01").is_err());
        assert!(window(since, Some(since)).is_err());
        assert!(window(since, None).is_ok());
        let ancient = parse_time("since", "0001-01-01T00:00:00Z");
        assert!(matches!(ancient, Err(ApiError::Validation { field, .. }) if field == "since"));
        let far = DateTime::<Utc>::MAX_UTC;
        assert!(matches!(window(since, Some(far)), Err(ApiError::Validation { field, .. }) if field == "until"));
    }
}
