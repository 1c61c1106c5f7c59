//! Connection handling: an idle keep-alive connection outlives the idle
//! timeouts of the load balancers and client pools in front of ingest, so a
//! request is never sent on a connection ingest is closing.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::helpers::spawn_app;

/// Sends one `GET /healthz` on `stream` and reads its answer; the status line,
/// or `None` when the connection was closed.
async fn healthz(stream: &mut BufReader<TcpStream>) -> Option<String> {
    stream.get_mut().write_all(b"GET /healthz HTTP/1.1\r\nHost: ingest\r\n\r\n").await.ok()?;
    let mut status = String::new();
    if stream.read_line(&mut status).await.ok()? == 0 {
        return None;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(status.trim_end().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_still_open_after_several_seconds() {
    let app = spawn_app().await;
    let mut stream = BufReader::new(TcpStream::connect(app.ingest.addr).await.expect("connect"));
    let first = healthz(&mut stream).await;
    assert!(first.as_deref().is_some_and(|s| s.starts_with("HTTP/1.1 200")), "first answer: {first:?}");
    // actix-http's default keep-alive (5 s) would have closed it by now.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let second = healthz(&mut stream).await;
    assert!(
        second.as_deref().is_some_and(|s| s.starts_with("HTTP/1.1 200")),
        "the idle connection was closed after 7 s: {second:?}"
    );
}
