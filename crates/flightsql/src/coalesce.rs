//! Write coalescing under the HTTP/2 connection.
//!
//! h2 writes every DATA frame larger than 256 bytes with its own `writev` and flushes the
//! socket before it takes the next frame. gRPC clients advertise 16 KiB frames, so a bulk
//! DoGet became one syscall, one loopback segment and one client wake-up per 16 KiB
//! (19,199 `writev` calls for a 308 MB result). [`Coalesced`] gathers those writes into one
//! buffer of up to [`CAPACITY`] bytes:
//! - a write that would overflow the buffer first sends what is buffered;
//! - a flush right after new writes is deferred: the connection task is woken and polled
//!   again at once, and h2 either hands over the next frame (which joins the buffer) or, with
//!   nothing more to send, flushes again, and that flush writes the buffer out.
//!
//! So nothing waits for a timer, and bytes stay buffered only while the connection task has
//! more to write at the same moment.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Most bytes buffered before they are written out.
pub(crate) const CAPACITY: usize = 256 * 1024;

/// A stream whose small writes are gathered into large ones (see the module docs).
pub(crate) struct Coalesced<S> {
    inner: S,
    buf: Vec<u8>,
    /// How much of `buf` the socket already took.
    sent: usize,
    /// Bytes were buffered since the last flush.
    fresh: bool,
}

impl<S> Coalesced<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, buf: Vec::new(), sent: 0, fresh: false }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out everything buffered.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes; `true` when they should bypass the buffer.
    fn make_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.buf.len() + len > CAPACITY {
            ready!(self.drain(cx))?;
        }
        Poll::Ready(Ok(len >= CAPACITY))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if ready!(self.make_room(cx, data.len()))? {
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        self.buf.extend_from_slice(data);
        self.fresh = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if ready!(self.make_room(cx, len))? {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        self.fresh = true;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.fresh {
            // The writer may have more to send right now: let it add that first.
            self.fresh = false;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: Connected> Connected for Coalesced<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
