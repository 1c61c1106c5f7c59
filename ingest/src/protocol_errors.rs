//! HTTP protocol errors in the contract's error shape.
//!
//! actix-http answers a request it cannot parse (a request line or header it
//! refuses, a URI over 64 KiB, both `Content-Length` and `Transfer-Encoding`)
//! with a bare `400` (or `431`, `408`) and an empty body, before any of our
//! code runs, and offers no hook to change that answer. So each connection's
//! socket is wrapped: when actix writes exactly such a bodiless error head
//! (our application never answers one: every error it makes has a JSON body),
//! the wrapper sends the same status with [`ApiError`]'s body instead. The
//! connection is closing then anyway; nothing else is touched.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;

/// actix-http's limit on a request head (its `MAX_BUFFER_SIZE`).
const HEAD_LIMIT_BYTES: usize = 131_072;

/// How long a request line and headers may take to arrive (the server's
/// `client_request_timeout`).
pub const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection whose protocol-error answers carry the contract's body.
pub struct ContractErrors<S> {
    inner: S,
    /// The answer being written in place of actix's, and how much of it went out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> ContractErrors<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, replacement: None }
    }
}

impl<S: AsyncWrite + Unpin> ContractErrors<S> {
    /// Writes what is left of the replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ContractErrors<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ContractErrors<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(error) = bodiless_error(buf) {
            this.replacement = Some((contract_answer(&error), 0));
            // Whatever does not go out now goes out on the next write, flush or shutdown.
            if let Poll::Ready(Err(err)) = this.poll_replacement(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The error actix-http means, when `written` is exactly one of its bodiless
/// protocol-error heads (`HTTP/1.1 400|408|431 …` with `content-length: 0`).
fn bodiless_error(written: &[u8]) -> Option<ApiError> {
    let head = written.strip_prefix(b"HTTP/1.1 ")?;
    if !written.ends_with(b"\r\n\r\n") || head.windows(4).filter(|w| w == b"\r\n\r\n").count() != 1 {
        return None;
    }
    if !head.windows(21).any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n")) {
        return None;
    }
    match head.get(..4)? {
        b"400 " => Some(ApiError::BadRequest {
            code: "invalid_request",
            message: "the request is not valid HTTP/1.1: a malformed request line or header, a URI longer than \
                      64 KiB, or both Content-Length and Transfer-Encoding"
                .into(),
        }),
        b"408 " => Some(ApiError::HeadTimeout { seconds: HEAD_TIMEOUT.as_secs() }),
        b"431 " => Some(ApiError::HeadTooLarge { limit: HEAD_LIMIT_BYTES }),
        _ => None,
    }
}

/// The whole HTTP answer for `error`; the connection closes after it.
fn contract_answer(error: &ApiError) -> Vec<u8> {
    use actix_web::ResponseError;
    let status = error.status_code();
    let body = error.body().to_string();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_protocol_error_heads_are_replaced() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: x\r\n\r\n";
        assert!(matches!(bodiless_error(bare), Some(ApiError::BadRequest { code: "invalid_request", .. })));
        let too_large = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(bodiless_error(too_large), Some(ApiError::HeadTooLarge { .. })));
        for untouched in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\": 1}",
            b"",
        ] {
            assert!(bodiless_error(untouched).is_none(), "{}", String::from_utf8_lossy(untouched));
        }
    }

    #[test]
    fn the_replacement_is_a_complete_json_answer() {
        let answer = contract_answer(&ApiError::HeadTimeout { seconds: 5 });
        let text = String::from_utf8(answer).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error"]["code"], "request_timeout");
    }

    #[tokio::test]
    async fn the_wrapper_writes_the_replacement_in_place_of_the_bare_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let mut wrapped = ContractErrors::new(server);
        let writer = tokio::spawn(async move {
            wrapped.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.expect("ok answer");
            wrapped.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await.expect("error answer");
            wrapped.shutdown().await.expect("shutdown");
        });
        let mut received = String::new();
        let mut client = client;
        client.read_to_string(&mut received).await.expect("read");
        writer.await.expect("writer");
        assert!(received.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 400 Bad Request\r\n"));
        assert!(received.contains("\"invalid_request\""), "{received}");
    }
}
