"""localdev's port check: a default port whose last connections are in TIME-WAIT (right after
a restart) counts as free, as it is for uvicorn and nats-server (both bind with SO_REUSEADDR);
one a server listens on does not."""

from __future__ import annotations

import socket

from localdev.cluster import _port_free, free_port


def _time_wait_port() -> int:
    """A port whose server side closed a connection first: that side sits in TIME-WAIT."""
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the active close: 127.0.0.1:port enters TIME-WAIT
        client.recv(1)  # the client saw the FIN
        client.close()
    return port


def test_a_port_in_time_wait_is_free_again() -> None:
    port = _time_wait_port()
    with socket.socket() as plain:  # the old check: no SO_REUSEADDR, refused
        try:
            plain.bind(("127.0.0.1", port))
        except OSError:
            pass
        else:
            raise AssertionError("the port was not in TIME-WAIT; the test proves nothing")
    assert _port_free(port)


def test_a_listening_port_is_taken() -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert not _port_free(server.getsockname()[1])
