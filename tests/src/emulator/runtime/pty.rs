//! Pseudo-terminals for `tty: true` containers and `exec -t`: an async master side,
//! window resizing (TIOCSWINSZ) and the child-side setup (new session, controlling tty).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A new pty pair: the master for us, the slave for the child's stdio.
pub struct PtyPair {
    /// Master side, async.
    pub master: PtyMaster,
    /// Slave side; hand dups of it to the child and drop it after spawn, or the master
    /// never sees EOF (EIO) when the child exits.
    pub slave: OwnedFd,
}

/// Opens a pty with a default 80x24 window.
pub fn open() -> io::Result<PtyPair> {
    let ws = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pair = nix::pty::openpty(Some(&ws), None).map_err(io::Error::from)?;
    let flags =
        nix::fcntl::fcntl(&pair.master, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&pair.master, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(io::Error::from)?;
    // SAFETY: an OwnedFd stays open and returns the same fd until the AsyncFd drops it.
    let master =
        unsafe { AsyncFd::register(pair.master) }.map_err(|e| io::Error::other(e.to_string()))?;
    Ok(PtyPair {
        master: PtyMaster(Arc::new(master)),
        slave: pair.slave,
    })
}

/// Child side, for `pre_exec`: become a session leader and take stdin (the slave) as the
/// controlling terminal, so job control and ^C behave as in a container.
pub fn make_controlling_tty() -> io::Result<()> {
    // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the slave after dup2.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The master side of a pty; clones share the fd (one reader, one writer, resizes).
#[derive(Clone)]
pub struct PtyMaster(Arc<AsyncFd<OwnedFd>>);

impl std::fmt::Debug for PtyMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PtyMaster({})", self.0.get_ref().as_raw_fd())
    }
}

impl PtyMaster {
    /// Sets the window size (what `kubectl exec -t` sends on the resize stream).
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: valid fd and a properly initialised winsize.
        let rc = unsafe { libc::ioctl(self.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let res = guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from));
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Linux reports EIO on the master once every slave fd is closed: EOF.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(res) => return Poll::Ready(res),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
