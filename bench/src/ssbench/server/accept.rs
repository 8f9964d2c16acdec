//! The accept loops every model uses: accept, start the connection, and on an
//! error (out of descriptors, …) report it once, wait [`ACCEPT_RETRY`] and try
//! again — never give up, never flood stderr.

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// How long an accept loop waits after an error before it tries again.
pub(crate) const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Remembers the last error so that a run of the same one is reported once.
#[derive(Default)]
pub(crate) struct Errors {
    last: Option<io::ErrorKind>,
}

impl Errors {
    /// An accept succeeded: the next error is reported again.
    pub(crate) fn ok(&mut self) {
        self.last = None;
    }

    /// Reports `error` unless it repeats the last one.
    pub(crate) fn failed(&mut self, model: &str, error: &io::Error) {
        if self.last != Some(error.kind()) {
            eprintln!("ssbench server {model}: accept failed: {error}; retrying");
            self.last = Some(error.kind());
        }
    }
}

/// A runtime's listener.
pub(crate) trait Listener {
    /// An accepted connection.
    type Conn;
    /// Accepts the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>>;
    /// The runtime's sleep for [`ACCEPT_RETRY`].
    fn pause() -> impl Future<Output = ()>;
}

/// Implements [`Listener`] for a runtime's TCP listener type whose inherent
/// `accept` returns `(stream, address)`: sets `TCP_NODELAY` on each connection
/// and pauses with the runtime's `sleep`.
macro_rules! tcp_listener {
    ($listener:ty, $stream:ty, $sleep:path) => {
        impl $crate::ssbench::server::accept::Listener for $listener {
            type Conn = $stream;

            async fn accept(&self) -> std::io::Result<$stream> {
                let (stream, _) = <$listener>::accept(self).await?;
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }

            async fn pause() {
                $sleep($crate::ssbench::server::accept::ACCEPT_RETRY).await;
            }
        }
    };
}
pub(crate) use tcp_listener;

/// The loop for a runtime: accept a connection, `start` it; after an error,
/// pause and try again.
pub(crate) async fn serve<L: Listener>(
    model: &'static str,
    listener: L,
    mut start: impl FnMut(L::Conn),
) {
    let mut errors = Errors::default();
    loop {
        match listener.accept().await {
            Ok(conn) => {
                errors.ok();
                start(conn);
            }
            Err(e) => {
                errors.failed(model, &e);
                L::pause().await;
            }
        }
    }
}

/// The loop for a thread of its own: blocking accepts, with `TCP_NODELAY`
/// set; `start` may fail (its error is reported like an accept's).
pub(crate) fn serve_blocking(
    model: &'static str,
    listener: &TcpListener,
    mut start: impl FnMut(TcpStream) -> io::Result<()>,
) {
    let mut errors = Errors::default();
    loop {
        let started = listener.accept().and_then(|(stream, _)| {
            stream.set_nodelay(true)?;
            start(stream)
        });
        match started {
            Ok(()) => errors.ok(),
            Err(e) => {
                errors.failed(model, &e);
                std::thread::sleep(ACCEPT_RETRY);
            }
        }
    }
}
