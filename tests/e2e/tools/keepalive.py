#!/usr/bin/env python3
"""Prints the TCP keepalive settings of the connected IPv4 TCP sockets of process PID, one line per
socket: `LOCAL PEER SO_KEEPALIVE TCP_KEEPIDLE TCP_KEEPINTVL TCP_KEEPCNT` (seconds, probes).

Each socket is duplicated into this process with pidfd_getfd(2) (Linux 5.6+; needs ptrace rights
over PID, e.g. root or the same user with ptrace_scope 0) and read with getsockopt; the duplicate
is closed, the process's own descriptor is untouched. Usage: keepalive.py PID
"""
import ctypes
import os
import socket
import sys

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64

libc = ctypes.CDLL(None, use_errno=True)


def main() -> int:
    pid = int(sys.argv[1])
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
            print(f"pidfd_getfd {name}: errno {ctypes.get_errno()}", file=sys.stderr)
            return 1
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
            local = s.getsockname()
            opts = [
                s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            ]
            print(f"{local[0]}:{local[1]} {peer[0]}:{peer[1]} " + " ".join(map(str, opts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
