//! Row types and their queries, a file per table.

/// Maps an enum with `as_str` and `parse` to a text column: stored as the word
/// `as_str` gives (each column's CHECK constraint lists the same words);
/// reading any other word is an error naming `$what`, never a silent default.
macro_rules! text_column {
    ($name:ident, $what:literal) => {
        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(self.as_str(), out)
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let word =
                    <String as diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg>>::from_sql(value)?;
                Self::parse(&word).ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), word).into())
            }
        }
    };
}
pub(crate) use text_column;

pub mod api_key;
pub mod attempt;
pub mod delivery;
pub mod endpoint_health;
pub mod event;
pub mod job;
pub mod subscription;
