#![doc = include_str!("../README.md")]

pub mod amqp;
mod bus;
mod error;
pub mod events;

pub use amqp::BROKER_TIMEOUT;
pub use bus::{new_event_id, EventBus, PublishOptions};
pub use error::Error;
