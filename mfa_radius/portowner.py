"""Who holds a UDP port: read from /proc (the kernel's socket tables and each process's fds),
so that "address already in use" can name the program, FreeRADIUS most often."""

from __future__ import annotations

import errno
import os
import pwd
import socket


def udp_port_problem(host: str, port: int) -> str | None:
    """None if `host:port` can be bound for UDP now; else why not, naming the holder if known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return f"cannot listen on UDP {host}:{port}: {exc.strerror}"
        holders = udp_holders(port)
        return f"UDP port {port} is already in use" + (
            f" by {', '.join(holders)}" if holders else "")
    finally:
        sock.close()
    return None


def udp_holders(port: int, proc: str = "/proc") -> list[str]:
    """'NAME (pid N)' of each process with a UDP socket bound to `port` (any address); where
    the process cannot be seen (another user's, without root), 'a process of user U'."""
    inodes: dict[str, int] = {}  # socket inode -> owner uid
    for table in ("udp", "udp6"):
        try:
            with open(os.path.join(proc, "net", table)) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rpartition(":")[2], 16) == port:
                inodes[fields[9]] = int(fields[7])
    found: dict[str, str] = {}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                inode = wanted.get(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                continue
            if inode is not None and inode not in found:
                found[inode] = f"{_command(proc, pid)} (pid {pid})"
    holders = list(dict.fromkeys(found.values()))
    for inode, uid in inodes.items():
        if inode not in found:
            holders.append(f"a process of user {_user(uid)}")
    return list(dict.fromkeys(holders))


def _command(proc: str, pid: str) -> str:
    try:
        with open(os.path.join(proc, pid, "comm")) as fh:
            name = fh.read().strip()
    except OSError:
        return "?"
    # Any user names their own processes: no terminal escapes from it.
    return "".join(c if c.isprintable() else "?" for c in name) or "?"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
