//! A TCP proxy on 127.0.0.1 that tests put between a service and RabbitMQ, to
//! cut and restore the service's broker connection while the shared broker
//! keeps running for every other test.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

/// Forwards connections to `target` until cut.
pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    kill: broadcast::Sender<()>,
}

impl TcpProxy {
    /// Starts a proxy to `target` on a free port.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (kill, _) = broadcast::channel(4);
        let (cut_flag, kill_tx) = (cut.clone(), kill.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut_flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut killed = kill_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = killed.recv() => {}
                    }
                });
            }
        });
        Ok(Self { addr, cut, kill })
    }

    /// Starts a proxy to the host and port of an AMQP URL, and returns the URL through it.
    pub async fn for_amqp_url(url: &str) -> std::io::Result<(Self, String)> {
        let parsed = url::Url::parse(url).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let host = parsed.host_str().unwrap_or("127.0.0.1");
        let port = parsed.port().unwrap_or(5672);
        let target = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "broker host"))?;
        let proxy = Self::start(target).await?;
        let mut through = parsed.clone();
        through.set_host(Some("127.0.0.1")).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        through
            .set_port(Some(proxy.addr.port()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "port"))?;
        Ok((proxy, through.to_string()))
    }

    /// Drops every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let _ = self.kill.send(());
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
