#!/usr/bin/env python3
"""Reads or sets socket options of another process's TCP sockets, for the end-to-end tests.

  sockopt.py keepalive PID
      one line per connected IPv4 TCP socket of PID:
      `LOCAL PEER SO_KEEPALIVE TCP_KEEPIDLE TCP_KEEPINTVL TCP_KEEPCNT` (seconds, probes)
  sockopt.py sndbuf PID PEER BYTES
      sets SO_SNDBUF of PID's socket connected to PEER (ip:port) to BYTES, which also stops the
      kernel from growing it: a test can keep a response in the server's own buffers

Each socket is duplicated into this process with pidfd_getfd(2) (Linux 5.6+; needs ptrace rights
over PID, e.g. root); the option applies to the shared socket, and the duplicate is closed.
"""
import ctypes
import os
import socket
import sys

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64

libc = ctypes.CDLL(None, use_errno=True)


def sockets(pid):
    """Yields (socket, local, peer) for each connected IPv4 TCP socket of `pid`."""
    pidfd = os.pidfd_open(pid)
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if not target.startswith("socket:"):
            continue
        fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"pidfd_getfd {name}")
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            continue
        with s:
            if s.family != socket.AF_INET or s.type != socket.SOCK_STREAM:
                continue
            try:
                peer = s.getpeername()
            except OSError:
                continue  # a listening socket
            yield s, s.getsockname(), peer


def addr(a):
    return f"{a[0]}:{a[1]}"


def main(argv):
    if len(argv) == 3 and argv[1] == "keepalive":
        for s, local, peer in sockets(int(argv[2])):
            opts = [
                s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            ]
            print(f"{addr(local)} {addr(peer)} " + " ".join(map(str, opts)))
        return 0
    if len(argv) == 5 and argv[1] == "sndbuf":
        for s, _, peer in sockets(int(argv[2])):
            if addr(peer) == argv[3]:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(argv[4]))
                return 0
        print(f"no socket connected to {argv[3]}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
