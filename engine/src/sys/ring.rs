//! One io_uring per shard: submission helpers with owned buffers, batched submit, bounded wait.
//!
//! Invariants:
//! - The only operation that hands user memory to the kernel is `send`; its buffer moves into the
//!   ring's send table and comes back only through [`Ring::complete_send`] when the completion for it
//!   arrives (also after a cancel), so it is never freed or reused while the kernel may read it.
//! - Receives use the provided-buffer ring ([`BufRing`]) owned by this ring and unregistered before
//!   it is freed.
//! - Submissions are batched: pushing never enters the kernel unless the submission queue is full;
//!   [`Ring::submit_and_wait`] is the one `io_uring_enter` per loop turn.

use super::bufring::BufRing;
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Why a ring could not be set up. Each variant names the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The kernel has no io_uring (ENOSYS).
    #[error(
        "io_uring is not available in this kernel (ENOSYS); coreplex needs Linux 6.1 or newer"
    )]
    Unsupported,
    /// io_uring is disabled by sysctl or blocked by a seccomp filter (EPERM).
    #[error("io_uring is blocked (EPERM): kernel.io_uring_disabled={disabled}; set `sysctl kernel.io_uring_disabled=0` or, in a container, allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp profile (`coreplex tune` diagnoses this)")]
    Blocked {
        /// Value of /proc/sys/kernel/io_uring_disabled, or "unknown".
        disabled: String,
    },
    /// The ring or buffer memory could not be locked/allocated (ENOMEM).
    #[error("io_uring setup ran out of locked memory (ENOMEM): raise the memlock limit (`ulimit -l unlimited`, LimitMEMLOCK=infinity in the systemd unit) or lower global.ring_entries / global.buffers")]
    Memlock,
    /// Registering the provided-buffer ring failed.
    #[error("registering the provided-buffer ring failed: {0}; coreplex needs Linux 5.19 or newer (IORING_REGISTER_PBUF_RING)")]
    BufRing(io::Error),
    /// Any other setup error.
    #[error("io_uring setup failed: {0}")]
    Other(io::Error),
}

/// Setup flags the kernel accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingFeatures {
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN were accepted.
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN was accepted (fallback).
    pub coop_taskrun: bool,
}

/// One completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The user_data of the submission.
    pub user_data: u64,
    /// The result: bytes, a descriptor, or a negative errno.
    pub result: i32,
    /// The completion flags (`IORING_CQE_F_*`).
    pub flags: u32,
}

impl Completion {
    /// True when a multishot operation stays armed after this completion.
    pub fn more(&self) -> bool {
        io_uring::cqueue::more(self.flags)
    }
}

struct InFlightSend {
    buf: Vec<u8>,
    offset: usize,
    fd: RawFd,
    owner: u64,
    /// A write to a file (appended at its end), not a send on a socket.
    file: bool,
}

/// What a send completion means for its owner.
#[derive(Debug)]
pub enum SendOutcome {
    /// The whole buffer was sent; here it is back (cleared, capacity kept).
    Done {
        /// The connection token the send was issued for.
        owner: u64,
        /// The buffer, emptied.
        buf: Vec<u8>,
        /// Bytes sent by this completion.
        sent: usize,
    },
    /// Part was sent; the rest was resubmitted and the buffer stays in the ring.
    Partial {
        /// The connection token the send was issued for.
        owner: u64,
        /// Bytes sent by this completion.
        sent: usize,
    },
    /// The send failed (or was cancelled); the buffer is back.
    Failed {
        /// The connection token the send was issued for.
        owner: u64,
        /// The buffer, emptied.
        buf: Vec<u8>,
        /// The positive errno.
        errno: i32,
    },
}

/// A shard's io_uring with its provided-buffer ring and in-flight send table.
pub struct Ring {
    uring: IoUring,
    bufs: Option<BufRing>,
    sends: Vec<Option<InFlightSend>>,
    free_sends: Vec<u32>,
    features: RingFeatures,
    send_tag: u64,
}

impl Ring {
    /// Creates a ring with `entries` submission entries, preferring
    /// SINGLE_ISSUER|DEFER_TASKRUN, and registers `buffers` provided buffers of `buffer_size` bytes
    /// in group `bgid`. Must be called on the thread that will use it (SINGLE_ISSUER).
    ///
    /// `send_tag` is OR-ed into the user_data of send completions so the caller can route them.
    pub fn new(
        entries: u32,
        buffers: u16,
        buffer_size: u32,
        bgid: u16,
        send_tag: u64,
    ) -> Result<Ring, RingError> {
        let cq = entries.saturating_mul(4).max(entries);
        let attempt = |defer: bool, coop: bool| {
            let mut b = IoUring::builder();
            b.setup_cqsize(cq).setup_submit_all();
            if defer {
                b.setup_single_issuer().setup_defer_taskrun();
            }
            if coop {
                b.setup_coop_taskrun();
            }
            b.build(entries)
        };
        let mut features = RingFeatures::default();
        let uring = match attempt(true, false) {
            Ok(r) => {
                features.defer_taskrun = true;
                r
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match attempt(false, true) {
                Ok(r) => {
                    features.coop_taskrun = true;
                    r
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    attempt(false, false).map_err(setup_error)?
                }
                Err(e) => return Err(setup_error(e)),
            },
            Err(e) => return Err(setup_error(e)),
        };
        let bufs = BufRing::new(&uring.submitter(), bgid, buffers, buffer_size).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOMEM) {
                RingError::Memlock
            } else {
                RingError::BufRing(e)
            }
        })?;
        Ok(Ring {
            uring,
            bufs: Some(bufs),
            sends: Vec::new(),
            free_sends: Vec::new(),
            features,
            send_tag,
        })
    }

    /// Setup flags in effect.
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// The provided-buffer ring.
    pub fn bufs(&mut self) -> &mut BufRing {
        self.bufs.as_mut().expect("buffer ring present until drop")
    }

    /// The provided-buffer ring, shared.
    pub fn bufs_ref(&self) -> &BufRing {
        self.bufs.as_ref().expect("buffer ring present until drop")
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built in this module references either no user memory (accept,
            // recv with buffer selection, poll, cancel) or a send or file-write buffer owned by
            // `self.sends` until its completion is consumed in `complete_send`.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return;
            }
            // Queue full: hand the batch to the kernel and retry.
            if let Err(e) = self.uring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
                    tracing::error!("io_uring submit failed while the queue was full: {e}");
                }
            }
        }
    }

    /// Arms a multishot accept on a listening socket.
    pub fn accept_multi(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Arms a multishot receive that picks buffers from the provided-buffer ring.
    pub fn recv_multi(&mut self, fd: RawFd, user_data: u64) {
        let bgid = self.bufs_ref().group();
        let e = opcode::RecvMulti::new(types::Fd(fd), bgid)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Arms a multishot POLLIN on a descriptor (used for the control eventfd).
    pub fn poll_multi(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Arms a one-shot POLLOUT (an outbound connect completing).
    pub fn poll_out(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Cancels the operation(s) submitted with `target` as user_data.
    pub fn cancel(&mut self, target: u64, user_data: u64) {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Cancels every operation on `fd` (a connection being closed).
    pub fn cancel_fd(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Sends all of `buf` on `fd`; the buffer stays owned by the ring until the completion arrives.
    /// The completion's user_data is `send_tag | key`; pass it to [`Ring::complete_send`].
    pub fn send(&mut self, fd: RawFd, buf: Vec<u8>, owner: u64) {
        self.start_write(fd, buf, owner, false);
    }

    /// Writes all of `buf` to the file `fd` (opened with `O_APPEND`: each write lands at its
    /// end), like [`Ring::send`]: the buffer stays owned by the ring until the completion, which
    /// comes back through [`Ring::complete_send`]. The kernel runs a file write off this thread
    /// (io-wq), so a slow disk never blocks the shard.
    pub fn write_file(&mut self, fd: RawFd, buf: Vec<u8>, owner: u64) {
        self.start_write(fd, buf, owner, true);
    }

    fn start_write(&mut self, fd: RawFd, buf: Vec<u8>, owner: u64, file: bool) {
        let key = match self.free_sends.pop() {
            Some(k) => k,
            None => {
                self.sends.push(None);
                (self.sends.len() - 1) as u32
            }
        };
        self.sends[key as usize] = Some(InFlightSend {
            buf,
            offset: 0,
            fd,
            owner,
            file,
        });
        self.push_send(key);
    }

    fn push_send(&mut self, key: u32) {
        let s = self.sends[key as usize]
            .as_ref()
            .expect("send slot is occupied");
        let rest = &s.buf[s.offset..];
        let e = if s.file {
            // Offset -1: the file position, which O_APPEND keeps at the end.
            opcode::Write::new(types::Fd(s.fd), rest.as_ptr(), rest.len() as u32)
                .offset(u64::MAX)
                .build()
        } else {
            opcode::Send::new(types::Fd(s.fd), rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }
        .user_data(self.send_tag | key as u64);
        self.push(e);
    }

    /// Consumes the completion of a send issued with [`Ring::send`].
    pub fn complete_send(&mut self, user_data: u64, result: i32) -> Option<SendOutcome> {
        let key = (user_data & !self.send_tag) as u32;
        let slot = self.sends.get_mut(key as usize)?;
        let s = slot.as_mut()?;
        if result > 0 {
            let sent = result as usize;
            s.offset += sent;
            if s.offset < s.buf.len() {
                let owner = s.owner;
                self.push_send(key);
                return Some(SendOutcome::Partial { owner, sent });
            }
            let s = slot.take().expect("checked above");
            self.free_sends.push(key);
            let mut buf = s.buf;
            buf.clear();
            return Some(SendOutcome::Done {
                owner: s.owner,
                buf,
                sent,
            });
        }
        let s = slot.take().expect("checked above");
        self.free_sends.push(key);
        let mut buf = s.buf;
        buf.clear();
        let errno = if result == 0 { libc::EPIPE } else { -result };
        Some(SendOutcome::Failed {
            owner: s.owner,
            buf,
            errno,
        })
    }

    /// Number of sends in flight.
    pub fn sends_in_flight(&self) -> usize {
        self.sends.len() - self.free_sends.len()
    }

    /// Submits everything queued and waits for at least one completion, at most `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.bufs_ref().needs_publish() {
            self.bufs().publish();
        }
        let res = match timeout {
            Some(t) => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
            None => self.uring.submit_and_wait(1),
        };
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Copies all available completions into `out`.
    pub fn drain(&mut self, out: &mut Vec<Completion>) {
        for c in self.uring.completion() {
            out.push(Completion {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
            });
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Some(bufs) = self.bufs.take() {
            bufs.unregister(&self.uring.submitter());
            // Completions that still carry a buffer cannot arrive any more: the group is gone.
            drop(bufs);
        }
        // The kernel may tear the ring down asynchronously, so a send still in flight could read its
        // buffer after this returns: leak those few buffers rather than free them under the kernel.
        for send in self.sends.drain(..).flatten() {
            std::mem::forget(send.buf);
        }
    }
}

fn setup_error(e: io::Error) -> RingError {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => RingError::Unsupported,
        Some(libc::EPERM) => RingError::Blocked {
            disabled: std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
        },
        Some(libc::ENOMEM) => RingError::Memlock,
        _ => RingError::Other(e),
    }
}
