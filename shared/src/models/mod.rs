//! Row types and their queries, a file per table.

pub mod api_key;
pub mod attempt;
pub mod delivery;
pub mod endpoint_health;
pub mod event;
pub mod subscription;
