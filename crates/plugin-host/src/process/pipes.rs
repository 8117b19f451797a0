//! The host's ends of a child's pipes, neither of which may hold a thread past its use: the
//! request stream is written without blocking, up to a deadline (a child that stops
//! reading, even one stuck in the kernel that SIGKILL cannot end yet, costs the call its
//! deadline and no more), and the reply stream's reader gives up once its child is
//! abandoned (a stuck child holds the other end open).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a reader waiting for a reply looks whether its child was abandoned.
const ABANDON_POLL: Duration = Duration::from_millis(200);

/// Makes writes to `fd` return `WouldBlock` instead of waiting for room.
pub fn set_nonblocking(fd: &impl AsRawFd) -> std::io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits until `fd` is ready for `events` or `wait` passes; false when it passed.
fn ready(fd: RawFd, events: libc::c_short, wait: Duration) -> std::io::Result<bool> {
    let mut poll = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // Rounded up, so a wait that has not passed never polls for 0 ms in a loop.
    let ms = wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    match unsafe { libc::poll(&mut poll, 1, ms) } {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            }
        }
    }
}

/// Writes all of `bytes` to `out` (non-blocking, see [`set_nonblocking`]) by `deadline`:
/// `Ok(false)` when the deadline passed first (part of `bytes` may have been written), an
/// error when the reader went away.
pub fn write_by(
    out: &mut (impl Write + AsRawFd),
    mut bytes: &[u8],
    deadline: Instant,
) -> std::io::Result<bool> {
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                ready(out.as_raw_fd(), libc::POLLOUT, left)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A reader that fails once `abandoned` is set, instead of waiting on a child that will
/// never write or close its end.
pub struct AbandonableReader<R> {
    inner: R,
    abandoned: Arc<AtomicBool>,
}

impl<R> AbandonableReader<R> {
    /// Reads `inner` until `abandoned` is set.
    pub fn new(inner: R, abandoned: Arc<AtomicBool>) -> Self {
        Self { inner, abandoned }
    }
}

impl<R: Read + AsRawFd> Read for AbandonableReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.abandoned.load(Ordering::Acquire) {
                return Err(std::io::Error::other("the child was abandoned"));
            }
            if ready(self.inner.as_raw_fd(), libc::POLLIN, ABANDON_POLL)? {
                return self.inner.read(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_write_nobody_reads_ends_at_its_deadline_and_a_closed_reader_is_an_error() {
        let (mut out, held) = UnixStream::pair().unwrap();
        set_nonblocking(&out).unwrap();
        let big = vec![7u8; 8 << 20];
        let started = Instant::now();
        let done = write_by(&mut out, &big, Instant::now() + Duration::from_millis(200));
        assert!(!done.unwrap(), "8 MiB fit in a socket buffer?");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(write_by(&mut out, &big, deadline).is_err());
    }

    #[test]
    fn an_abandoned_reader_stops_waiting() {
        let (_writer, reader) = UnixStream::pair().unwrap();
        let abandoned = Arc::new(AtomicBool::new(false));
        let mut reader = AbandonableReader::new(reader, abandoned.clone());
        let waiting = std::thread::spawn(move || reader.read(&mut [0u8; 4]));
        std::thread::sleep(Duration::from_millis(100));
        abandoned.store(true, Ordering::Release);
        let started = Instant::now();
        assert!(waiting.join().unwrap().is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
