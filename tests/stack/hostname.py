"""``[core] hostname_callable`` of the native stack's triggerers.

In compose every triggerer is a container with a hostname of its own; here both run on
one host. Each gets ``STACK_HOSTNAME`` (``127.0.0.1`` or ``localhost``: distinct, and both
reach this host's trigger log servers), so a ``TriggererJob`` row names its process.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("STACK_HOSTNAME") or socket.getfqdn()
