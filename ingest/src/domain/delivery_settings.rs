//! The numeric and text settings of a subscription, each with its range.

use super::{
    text::{self, TextKind},
    InvalidField,
};

/// Retries after the first attempt: 0 to 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRetries(i32);

impl MaxRetries {
    pub const DEFAULT: Self = Self(3);
    pub const MAX: i32 = 10;

    pub fn parse(value: i32) -> Result<Self, InvalidField> {
        if (0..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(InvalidField::with_value("max_retries", value, format!("must be from 0 to {}", Self::MAX)))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// How long one delivery attempt may take, in seconds: 1 to 60.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutSeconds(i32);

impl TimeoutSeconds {
    pub const DEFAULT: Self = Self(30);
    pub const MAX: i32 = 60;

    pub fn parse(value: i32) -> Result<Self, InvalidField> {
        if (1..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(InvalidField::with_value("timeout_seconds", value, format!("must be from 1 to {}", Self::MAX)))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// A free-text label for the subscription, at most 500 characters; line
/// breaks and tabs are fine, other control characters (NUL above all) are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(value: String) -> Result<Self, InvalidField> {
        if value.chars().count() > Self::MAX_CHARS {
            return Err(InvalidField::new("description", format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        text::check("description", &value, TextKind::Prose)?;
        Ok(Self(value))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive() {
        assert!(MaxRetries::parse(0).is_ok() && MaxRetries::parse(10).is_ok());
        assert_eq!(MaxRetries::parse(11).expect_err("11").field, "max_retries");
        assert_eq!(MaxRetries::parse(-1).expect_err("-1").field, "max_retries");
        assert!(TimeoutSeconds::parse(1).is_ok() && TimeoutSeconds::parse(60).is_ok());
        assert_eq!(TimeoutSeconds::parse(0).expect_err("0").field, "timeout_seconds");
        assert_eq!(TimeoutSeconds::parse(61).expect_err("61").field, "timeout_seconds");
    }

    #[test]
    fn descriptions_are_counted_in_characters() {
        assert!(Description::parse("é".repeat(500)).is_ok());
        assert_eq!(Description::parse("a".repeat(501)).expect_err("long").field, "description");
        assert_eq!(Description::parse("x\u{0}y".into()).expect_err("nul").field, "description");
        assert!(Description::parse("two\nlines".into()).is_ok());
    }
}
