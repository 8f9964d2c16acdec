//! TCP over the io_uring driver: [`TcpListener`] and [`TcpStream`].
//!
//! Sockets are created the ordinary way (`std::net::TcpListener::bind`, or
//! `socket(2)` for a connecting stream) and stay in blocking mode: io_uring
//! never blocks a thread on them, it parks the operation in the kernel and
//! completes it when the socket is ready. Accepting, connecting, receiving and
//! sending are io_uring operations that wake the coroutine by id (see
//! [`crate::io`]).
//!
//! Two ways to move bytes:
//!
//! - **owned buffers**, the io_uring way: [`TcpStream::recv`],
//!   [`TcpStream::send`], [`TcpStream::send_all`] take a `Vec<u8>` and give it
//!   back. They take `&self`, so one coroutine can read while another writes
//!   (share the stream in an `Arc`).
//! - **[`futures_io::AsyncRead`] / [`futures_io::AsyncWrite`]**, for the
//!   ecosystem's codecs and `AsyncReadExt`/`AsyncWriteExt`. The stream keeps a
//!   buffer and at most one operation in flight per direction. A write is
//!   *accepted* once copied into the stream's buffer and sent in the background,
//!   whole (`MSG_WAITALL`: io_uring re-issues a short stream send itself, so
//!   what was accepted goes out without another poll — a client may write a
//!   request and then only read); a write whose send completes at once
//!   reports what the socket took. A send error surfaces on the next
//!   `poll_write`/`poll_flush`, and
//!   `poll_flush` waits until everything accepted was sent. Call `flush` (or
//!   `close`) before dropping a stream you wrote to with `AsyncWrite`.
//!
//! Do not interleave the two on one direction of one stream: bytes the
//! `AsyncRead` side has received but not yet handed out are not seen by
//! [`TcpStream::recv`]. (The names differ from `AsyncReadExt::read` and
//! `AsyncWriteExt::write` so that both can be in scope.)
//!
//! Dropping a stream or listener cancels its operations in flight (their
//! buffers pass to the driver) and closes the socket with a plain `close(2)`,
//! which does not block for TCP without `SO_LINGER`. To close through the ring
//! and see the error, `io::close(OwnedFd::from(stream.into_std())).await`.
//!
//! ```
//! use futures_util::{AsyncReadExt, AsyncWriteExt};
//! use ss_runtime::net::{TcpListener, TcpStream};
//! use ss_runtime::{prio, Runtime};
//!
//! let rt = Runtime::builder().workers(2).build()?;
//! rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let server = ss_runtime::spawn(async move {
//!         let (stream, _) = listener.accept().await?;
//!         let (n, buf) = stream.recv(Vec::with_capacity(64)).await;
//!         let (r, _) = stream.send_all(buf[..n?].to_vec()).await; // echo
//!         r
//!     }, prio(1));
//!     let mut client = TcpStream::connect(addr).await?;
//!     client.write_all(b"hi").await?;
//!     let mut back = [0; 2];
//!     client.read_exact(&mut back).await?;
//!     assert_eq!(&back, b"hi");
//!     server.await.unwrap()
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod tcp;

pub use tcp::{TcpListener, TcpStream};
