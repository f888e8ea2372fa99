//! Passing descriptors between processes (SCM_RIGHTS), for a binary upgrade: the running process
//! hands its listening sockets to its successor over a Unix socket pair, so the sockets, and the
//! connections waiting in their accept queues, never close.
//!
//! Messages go over a `SOCK_SEQPACKET` pair, so each one (a short text line and the descriptors it
//! names) arrives whole.

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message carries (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS_PER_MESSAGE: usize = 200;

/// The longest text part of a message.
pub const MAX_MESSAGE: usize = 4096;

/// A connected pair for a parent and the child it starts: the first end is close-on-exec (the
/// parent's), the second is not, so a child started with `std::process::Command` inherits it.
pub fn inheritable_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::empty(),
    )?;
    fcntl(ours.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok((ours, theirs))
}

/// Takes over the descriptor number `raw` that this process inherited from its parent (named in
/// its environment), after checking that it is an open socket. It is made close-on-exec.
pub fn take_inherited(raw: RawFd) -> std::io::Result<OwnedFd> {
    if raw < 3 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("descriptor {raw} is a standard stream, not an upgrade socket"),
        ));
    }
    fcntl(raw, FcntlArg::F_GETFD)?;
    // The type check needs a borrowed descriptor; only an open one gets here.
    // SAFETY: `raw` is open (F_GETFD succeeded) and no other code of this process names it: it was
    // inherited across exec, where no `OwnedFd` exists for it, and this is its one taker (the
    // environment variable naming it is read once, at start).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::SockType)?;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(fd)
}

/// Sends `text` with the descriptors `fds` (at most [`MAX_FDS_PER_MESSAGE`]) as one message.
pub fn send(sock: BorrowedFd<'_>, text: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    assert!(fds.len() <= MAX_FDS_PER_MESSAGE && text.len() <= MAX_MESSAGE);
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(text)];
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsgs };
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if n != text.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "short message on the upgrade socket",
        ));
    }
    Ok(())
}

/// Receives one message: its text and the descriptors it carries (close-on-exec). An empty text
/// with no descriptors means the other end closed.
pub fn recv(sock: BorrowedFd<'_>) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut text = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let (len, raws, truncated) = {
        let mut iov = [IoSliceMut::new(&mut text)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut raws = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                raws.extend(fds);
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        (msg.bytes, raws, truncated)
    };
    let fds: Vec<OwnedFd> = raws
        .into_iter()
        // SAFETY: each descriptor of an SCM_RIGHTS message was installed in this process by this
        // recvmsg and is named nowhere else; it is wrapped exactly once, here.
        .map(|r| unsafe { OwnedFd::from_raw_fd(r) })
        .collect();
    if truncated {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a message on the upgrade socket was truncated",
        ));
    }
    text.truncate(len);
    Ok((text, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_cross_with_their_text() {
        let (a, b) = inheritable_pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        send(a.as_fd(), b"L web", &[l.as_fd()]).unwrap();
        let (text, fds) = recv(b.as_fd()).unwrap();
        assert_eq!(text, b"L web");
        assert_eq!(fds.len(), 1);
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), addr);
        drop(l);
        // The passed descriptor keeps the socket listening after the sender's is closed.
        let _c = std::net::TcpStream::connect(addr).unwrap();
        got.accept().unwrap();
        drop(a);
        let (text, fds) = recv(b.as_fd()).unwrap();
        assert!(text.is_empty() && fds.is_empty());
    }

    #[test]
    fn a_standard_stream_is_not_taken() {
        assert!(take_inherited(1).is_err());
        assert!(take_inherited(987_654).is_err());
    }
}
