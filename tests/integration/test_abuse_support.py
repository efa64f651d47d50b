"""Raw-socket helpers for the abuse tests: big bodies, slow clients, memory sampling.

Named like a test module so that it sits with the tests it serves; it defines no tests.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import psutil

MiB = 1024 * 1024
BIG = 5 * MiB
CHUNK = 64 * 1024


def _read_status(sock: socket.socket, timeout: float = 10) -> int | None:
    """The status code of the answer on `sock`, or None if it closed without one."""
    sock.settimeout(timeout)
    got = b""
    try:
        while b"\r\n" not in got:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except (ConnectionResetError, TimeoutError, OSError):
        pass
    if not got.startswith(b"HTTP/"):
        return None
    return int(got.split(b" ", 2)[1])


def send_big(port: int, head: bytes, mode: str, size: int = BIG) -> int | None:
    """Send a request of `size` body bytes: mode length, chunked or none (no framing).

    Stops sending as soon as an answer is readable; returns its status (None: no answer).
    """
    framing = {
        "length": b"Content-Length: %d\r\n" % size,
        "chunked": b"Transfer-Encoding: chunked\r\n",
        "none": b"",
    }[mode]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + framing + b"\r\n")
        sent = 0
        piece = b"x" * CHUNK
        try:
            while sent < size:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                if mode == "chunked":
                    sock.sendall(b"%x\r\n" % CHUNK + piece + b"\r\n")
                else:
                    sock.sendall(piece)
                sent += CHUNK
            else:
                if mode == "chunked":
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _read_status(sock)


@contextlib.contextmanager
def peak_rss(pid: int, every: float = 0.005) -> Iterator[list[int]]:
    """Sample the RSS of `pid` while the block runs; yields [baseline, peak] (filled at exit)."""
    proc = psutil.Process(pid)
    result = [proc.memory_info().rss, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result[1] = max(result[1], proc.memory_info().rss)
            stop.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join(5)
        result[1] = max(result[1], proc.memory_info().rss)


def time_to_cutoff(port: int, first: bytes, drip: bytes, limit: float) -> float | None:
    """Send `first`, then one byte of `drip` every 0.5 s (nothing more if empty).

    Returns how long the server took to close the connection, or None if it kept it open
    for `limit` seconds.
    """
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        try:
            if first:
                sock.sendall(first)
            i = 0
            while time.monotonic() - start < limit:
                sock.settimeout(0.5)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    data = None
                if data == b"":
                    return time.monotonic() - start
                if data:
                    # An answer (e.g. 408/400) ends the slow request too; wait for the close.
                    continue
                if drip:
                    sock.sendall(drip[i % len(drip) : i % len(drip) + 1])
                    i += 1
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    return None
