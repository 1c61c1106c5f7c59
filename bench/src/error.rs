//! Why a bench run could not complete.

/// A failure that stops the run (a slow or lossy run is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("starting the services failed: {0}")]
    Spawn(String),
    #[error("the REST API answered unexpectedly: {0}")]
    Api(String),
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("broker error: {0}")]
    Broker(#[from] shared::amqp::BrokerError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("interrupted")]
    Interrupted,
}
