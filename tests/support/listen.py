"""What the kernel does with new connections to a listening socket."""
from __future__ import annotations

import socket


def connects(port: int, tries: int, host: str = "127.0.0.1") -> int:
    """How many of `tries` new connections the kernel completes within a short wait each (those
    beyond a full listen backlog are dropped, and time out)."""
    done, socks = 0, []
    for _ in range(tries):
        s = socket.socket()
        s.settimeout(0.3)
        try:
            s.connect((host, port))
            done += 1
        except OSError:
            pass
        socks.append(s)
    for s in socks:
        s.close()
    return done
