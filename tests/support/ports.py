"""Free loopback ports: the one helper every test and bench uses instead of a fixed port.

The port is free when this returns and nothing holds it afterwards, so a process started right
after can bind it; the window where another process takes it first is accepted (the kernel hands
out ephemeral ports round-robin, so a reuse within seconds is rare). Tests never use a fixed port:
eight people share the machine.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (also usable as "a closed port")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
