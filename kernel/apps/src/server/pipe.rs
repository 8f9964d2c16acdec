//! A blocking queue of byte messages between two threads of one process, on
//! a kernel pipe: each message is its length (`u32`, little-endian), then its
//! bytes. A thread that finds the pipe empty (or full) blocks in the kernel
//! until the other side writes (or reads), and what a queue holds is bounded
//! by the pipe's capacity in the kernel, not by the process's heap — so a
//! peer that sends requests without reading the answers only stalls its own
//! connection.
//!
//! Each end is the only user of its descriptor (one sending thread, one
//! receiving thread), so messages are never interleaved. Dropping the
//! [`PipeSender`] closes the write end: the receiver takes what is left, then
//! sees the end. Dropping the [`PipeReceiver`] closes the read end: later
//! sends fail.

use alloc::vec::Vec;

use ss_ulib::{sys, SysError};

use super::Fd;

/// The longest message a receiver accepts (a whole largest frame, and a few
/// bytes of framing).
pub const MAX_MESSAGE: usize = ss_proto::MAX_FRAME_LEN + 64;

/// The sending end.
#[derive(Debug)]
pub struct PipeSender {
    fd: Fd,
}

/// The receiving end.
#[derive(Debug)]
pub struct PipeReceiver {
    fd: Fd,
}

/// A new queue on a new pipe (two descriptors).
///
/// # Errors
/// The kernel's [`SysError`] (`Limit` when the process's descriptors are all
/// in use).
pub fn pipe_channel() -> Result<(PipeSender, PipeReceiver), SysError> {
    let (r, w) = sys::pipe()?;
    Ok((PipeSender { fd: Fd(w) }, PipeReceiver { fd: Fd(r) }))
}

impl PipeSender {
    /// Queues one message made of `parts`, blocking while the pipe is full.
    ///
    /// # Errors
    /// [`SysError::BrokenPipe`] when the receiver is gone; `BadArgument` for
    /// a message longer than [`MAX_MESSAGE`].
    pub fn send(&self, parts: &[&[u8]]) -> Result<(), SysError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_MESSAGE {
            return Err(SysError::BadArgument);
        }
        // `len` is at most MAX_MESSAGE, so it fits.
        sys::write_all(self.fd.0, &(len as u32).to_le_bytes())?;
        for part in parts {
            sys::write_all(self.fd.0, part)?;
        }
        Ok(())
    }
}

impl PipeReceiver {
    /// Takes the next message into `msg` (replacing what it held), blocking
    /// while the pipe is empty. `false` at the end: the sender is gone and
    /// the pipe is empty (or the pipe failed, or held something that is no
    /// message).
    pub fn recv(&self, msg: &mut Vec<u8>) -> bool {
        let mut len = [0u8; 4];
        if !self.read_exact(&mut len) {
            return false;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_MESSAGE {
            return false;
        }
        msg.clear();
        msg.resize(len, 0);
        self.read_exact(msg)
    }

    /// Fills `buf`; `false` if the pipe ends or fails first.
    fn read_exact(&self, buf: &mut [u8]) -> bool {
        let mut got = 0;
        while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
            match sys::read(self.fd.0, rest) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
        }
        true
    }
}
