//! `TcpListener` and `TcpStream`. See the module docs of [`crate::net`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::io::{Op, ReadInto, WriteFrom};

/// The most one `AsyncRead`/`AsyncWrite` operation moves at once.
const CHUNK: usize = 64 * 1024;

/// A TCP socket listening for connections.
pub struct TcpListener {
    inner: std::net::TcpListener,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("fd", &self.inner.as_raw_fd())
            .field("local", &self.inner.local_addr().ok())
            .finish()
    }
}

impl TcpListener {
    /// Binds to `addr` and listens (`std::net::TcpListener::bind`: a blocking
    /// `bind(2)` + `listen(2)`, which never waits for the network).
    ///
    /// # Errors
    /// As `std::net::TcpListener::bind` (`AddrInUse`, …).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        std::net::TcpListener::bind(addr).map(Self::from_std)
    }

    /// Wraps a std listener. It may be in either blocking mode: io_uring does not
    /// care (a non-blocking one is set back to blocking, which io_uring prefers:
    /// it then parks the accept in the kernel instead of retrying).
    pub fn from_std(listener: std::net::TcpListener) -> TcpListener {
        let _ = listener.set_nonblocking(false);
        TcpListener { inner: listener }
    }

    /// Accepts a connection.
    ///
    /// # Errors
    /// The errno of `accept4(2)` (`EMFILE` when out of descriptors, …), or why the
    /// runtime has no io_uring.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (fd, peer) = crate::io::accept(&self.inner).await?;
        Ok((TcpStream::from_fd(fd), peer))
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

/// The receiving side's state for `AsyncRead`.
#[derive(Default)]
struct ReadSide {
    /// Received bytes not yet handed out: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    op: Option<Op<ReadInto>>,
}

/// The sending side's state for `AsyncWrite`.
#[derive(Default)]
struct WriteSide {
    /// The send in flight, of `start..` of its buffer.
    op: Option<Op<WriteFrom>>,
    start: usize,
    /// A buffer to reuse for the next send.
    spare: Vec<u8>,
}

/// A TCP connection.
///
/// Field order matters on drop: operations in flight are cancelled before the
/// socket is closed.
pub struct TcpStream {
    rd: ReadSide,
    wr: WriteSide,
    inner: std::net::TcpStream,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.inner.as_raw_fd())
            .field("local", &self.inner.local_addr().ok())
            .field("peer", &self.inner.peer_addr().ok())
            .finish()
    }
}

/// A send that the socket took nothing of.
fn write_zero() -> io::Error {
    io::Error::new(
        io::ErrorKind::WriteZero,
        "the socket accepted no bytes; the connection is unusable",
    )
}

/// A new `socket(2)` for `addr`'s family.
fn socket_for(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl TcpStream {
    /// Connects to `addr`, trying each address it resolves to in turn.
    ///
    /// Name resolution (`ToSocketAddrs`) is the blocking libc resolver; pass a
    /// `SocketAddr` (or an IP literal) in latency-sensitive code.
    ///
    /// # Errors
    /// The last address's error (`ConnectionRefused`, …), `InvalidInput` if `addr`
    /// resolves to nothing, or why the runtime has no io_uring.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            // A family this host cannot make sockets of (IPv6 switched off,
            // say) is that address's failure, not the end of the list.
            let sock = match socket_for(&a) {
                Ok(sock) => sock,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match crate::io::connect(&sock, a).await {
                Ok(()) => return Ok(TcpStream::from_fd(sock)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to nothing; pass an IP address and port such as 127.0.0.1:7878",
            )
        }))
    }

    /// Wraps a connected std stream (set to blocking mode; see
    /// [`TcpListener::from_std`]).
    pub fn from_std(stream: std::net::TcpStream) -> TcpStream {
        let _ = stream.set_nonblocking(false);
        TcpStream {
            rd: ReadSide::default(),
            wr: WriteSide::default(),
            inner: stream,
        }
    }

    fn from_fd(fd: OwnedFd) -> TcpStream {
        Self::from_std(std::net::TcpStream::from(fd))
    }

    fn fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }

    /// Receives into `buf`'s spare capacity (appending; see [`crate::io::recv`]).
    /// `Ok(0)`: the peer closed its side.
    ///
    /// # Errors
    /// The errno of the receive (`ECONNRESET`, …), or `InvalidInput` if `buf` has
    /// no spare capacity.
    pub async fn recv(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        crate::io::recv(&self.inner, buf).await
    }

    /// Receives into a buffer the kernel picks from the worker's pool when data
    /// arrives (see [`crate::io::pool`]): waiting, it holds no buffer, so many
    /// idle connections cost no receive buffers. An empty [`RecvBuf`]: the
    /// peer closed its side. Drop the `RecvBuf` soon (copy out what must be
    /// kept): it lends a pool buffer until then.
    ///
    /// # Errors
    /// The errno of the receive (`ECONNRESET`, …).
    ///
    /// [`RecvBuf`]: crate::io::RecvBuf
    pub async fn recv_pooled(&self) -> io::Result<crate::io::RecvBuf> {
        crate::io::recv_pooled(&self.inner).await
    }

    /// A stream of what this socket receives: one multishot receive that stays
    /// armed in the kernel and fills buffers of the worker's pool as bytes
    /// arrive, instead of one receive submitted per call (see
    /// [`RecvStream`](crate::io::RecvStream)). Drop it before the socket: the
    /// kernel holds the socket while the stream is armed.
    pub fn recv_stream(&self) -> crate::io::RecvStream {
        crate::io::RecvStream::new(&self.inner)
    }

    /// Sends `buf` once; returns the count sent (maybe fewer than `buf.len()`).
    ///
    /// # Errors
    /// The errno of the send (`EPIPE` if the peer is gone, …).
    pub async fn send(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        crate::io::send(&self.inner, buf).await
    }

    /// Sends all of `buf`, in as many sends as it takes.
    ///
    /// # Errors
    /// The first failing send's errno; `WriteZero` if the socket takes nothing.
    pub async fn send_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut start = 0;
        let mut buf = buf;
        while start < buf.len() {
            let (r, b) = Op::new(WriteFrom {
                fd: self.fd(),
                buf,
                start,
                socket: true,
                all: true,
            })
            .await;
            buf = b;
            match r {
                Ok(0) => return (Err(write_zero()), buf),
                Ok(n) => start += n,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// The std stream, after cancelling what this stream had in flight (bytes
    /// received for `AsyncRead` and not yet read are dropped). To close through
    /// the ring and see the error: `io::close(OwnedFd::from(stream.into_std()))`.
    pub fn into_std(self) -> std::net::TcpStream {
        let TcpStream { rd, wr, inner } = self;
        drop((rd, wr));
        inner
    }

    /// Shuts down one or both directions (`shutdown(2)`, synchronous: it never
    /// waits).
    ///
    /// # Errors
    /// As `shutdown(2)`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// The local address.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As `getpeername(2)`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    ///
    /// # Errors
    /// As `setsockopt(2)`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Waits until every byte accepted by `poll_write` has been sent.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some(op) = &mut self.wr.op else {
                return Poll::Ready(Ok(()));
            };
            let (r, buf) = ready!(Pin::new(op).poll(cx));
            self.wr.op = None;
            match r {
                Ok(n) if n > 0 && self.wr.start + n < buf.len() => {
                    // A partial send: send the rest.
                    self.wr.start += n;
                    self.wr.op = Some(Op::new(WriteFrom {
                        fd: self.fd(),
                        buf,
                        start: self.wr.start,
                        socket: true,
                        all: true,
                    }));
                }
                Ok(0) if self.wr.start < buf.len() => {
                    self.wr.spare = buf;
                    return Poll::Ready(Err(write_zero()));
                }
                Ok(_) => {
                    self.wr.spare = buf;
                    return Poll::Ready(Ok(()));
                }
                Err(e) => {
                    self.wr.spare = buf;
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl futures_io::AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Data already buffered is served without returning `Pending`: spend the
        // cooperative budget, so a reader with data always waiting still yields.
        ready!(crate::budget::poll_proceed(cx));
        loop {
            let rd = &mut this.rd;
            if rd.pos < rd.buf.len() {
                let n = out.len().min(rd.buf.len() - rd.pos);
                out[..n].copy_from_slice(&rd.buf[rd.pos..rd.pos + n]);
                rd.pos += n;
                return Poll::Ready(Ok(n));
            }
            match &mut rd.op {
                None => {
                    let mut buf = std::mem::take(&mut rd.buf);
                    buf.clear();
                    rd.pos = 0;
                    // Receive about what the caller asked for, so that little is
                    // left over in our buffer.
                    let want = out.len().min(CHUNK);
                    if buf.capacity() < want {
                        buf.reserve_exact(want);
                    }
                    rd.op = Some(Op::new(ReadInto::recv(this.inner.as_raw_fd(), buf)));
                }
                Some(op) => {
                    let (r, buf) = ready!(Pin::new(op).poll(cx));
                    rd.op = None;
                    rd.buf = buf;
                    rd.pos = 0;
                    match r {
                        Ok(0) => return Poll::Ready(Ok(0)),
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }
}

impl futures_io::AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Accepted writes return `Ready` at once: spend the budget (see poll_read).
        ready!(crate::budget::poll_proceed(cx));
        let n = data.len().min(CHUNK);
        let mut buf = std::mem::take(&mut this.wr.spare);
        buf.clear();
        buf.extend_from_slice(&data[..n]);
        let mut op = Op::new(WriteFrom {
            fd: this.inner.as_raw_fd(),
            buf,
            start: 0,
            socket: true,
            all: true,
        });
        this.wr.start = 0;
        match Pin::new(&mut op).poll(cx) {
            // Could not even be submitted: nothing was accepted.
            Poll::Ready((Err(e), buf)) => {
                this.wr.spare = buf;
                Poll::Ready(Err(e))
            }
            // Completed during its submission: say what the socket took. (A
            // send that ends early — an error after some bytes — returns what
            // it sent, and `write_all` offers the rest again; this claimed
            // all `n` until 2026-11-29, losing the bytes between.)
            Poll::Ready((Ok(0), buf)) => {
                this.wr.spare = buf;
                Poll::Ready(Err(write_zero()))
            }
            Poll::Ready((Ok(sent), buf)) => {
                this.wr.spare = buf;
                Poll::Ready(Ok(sent.min(n)))
            }
            Poll::Pending => {
                // The caller will not poll this op again soon: submit it now
                // rather than wait for a batch.
                op.submit_queued();
                this.wr.op = Some(op);
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        match this.inner.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}
