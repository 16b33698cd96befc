"""Blocking calls made on the event loop's thread, recorded by a profile hook.

A load-independent way to prove "nothing blocks inside async def": instead of timing the loop
(which a loaded CI machine stalls on its own), record every blocking I/O call the loop's thread
makes: ``time.sleep`` and socket operations on a socket in blocking mode (a timeout other than
0). asyncio's own sockets are non-blocking; the synchronous SDK's are not.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_SOCKET_CALLS = frozenset(
    {"connect", "connect_ex", "accept", "send", "sendall", "sendto"}
    | {"recv", "recv_into", "recvfrom", "recvfrom_into"}
)


class BlockingCalls:
    """What the profile hook saw: ``"file:line function"`` per blocking call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "c_call":
            return
        owner = getattr(arg, "__self__", None)
        blocking = arg is time.sleep or (
            isinstance(owner, socket.socket) and arg.__name__ in _SOCKET_CALLS and owner.gettimeout() != 0.0
        )
        if blocking and len(self.calls) < 50:
            name = getattr(arg, "__qualname__", repr(arg))
            self.calls.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {name}")


@contextmanager
def blocking_calls_on_this_thread() -> Iterator[BlockingCalls]:
    """Record the blocking calls this thread (the event loop's) makes inside the block."""
    seen = BlockingCalls()
    previous = sys.getprofile()
    sys.setprofile(seen._profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)
