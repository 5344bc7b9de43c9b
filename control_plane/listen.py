"""Listening sockets for the API and dashboard, with errors that name the setting."""

from __future__ import annotations

import errno
import socket


class ListenError(RuntimeError):
    """A server cannot listen on its configured host and port."""


def open_listening_socket(
    host: str, port: int, *, host_variable: str, port_variable: str
) -> socket.socket:
    """Bind a TCP socket to ``host`` and ``port`` and start listening on it.

    NOTE: a host name that resolves to several addresses is bound to the first
    one only.

    Raises:
        ListenError: the host does not resolve, or the address cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise listen_error(
            exc, host, port, host_variable=host_variable, port_variable=port_variable
        ) from exc
    sock = socket.socket(family, kind, proto)
    try:
        # asyncio's own servers set this too, so a restart need not wait for the
        # old connections to leave TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except OSError as exc:
        sock.close()
        raise listen_error(
            exc, host, port, host_variable=host_variable, port_variable=port_variable
        ) from exc
    return sock


def listen_error(
    exc: OSError, host: str, port: int, *, host_variable: str, port_variable: str
) -> ListenError:
    """Describe why a server cannot listen on ``host:port`` and which setting to fix."""
    where = f"cannot listen on {host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ListenError(
            f"{where}: {host_variable}={host!r} is not a known host name or address "
            f"({exc.strerror}); set it to an address of this machine such as "
            "127.0.0.1"
        )
    if exc.errno == errno.EADDRINUSE:
        return ListenError(
            f"{where}: address already in use; set {port_variable} to a free port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(
            f"{where}: {host} is not an address of this machine; set "
            f"{host_variable} to one, such as 127.0.0.1 or 0.0.0.0"
        )
    if exc.errno == errno.EACCES:
        return ListenError(
            f"{where}: permission denied; set {port_variable} to a port above 1023"
        )
    return ListenError(f"{where}: {exc.strerror or exc}")
