"""A Ray cluster's --address (HOST:PORT): its form, and whether anything answers there, checked before Ray starts.

The trainer and the doctor (`rlhpc doctor --address`) both check here first: ray.init against a closed port
retries for minutes, printing Ray's connection errors; a TCP connect to the head's GCS port says it in a second.
"""

import socket

from rlhpc.errors import UserError

REACH_TIMEOUT_S = 5  # a head that answers at all answers a TCP connect well within this


def check_reachable(address: str) -> None:
    """A UserError (one line) when address is not HOST:PORT or nothing listens there; "auto" is not checked."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"bad --address {address!r}: expected IP:PORT, e.g. 10.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise UserError(f"cannot reach the Ray cluster at {address}: {reason} "
                        "(is the head node up? see `ray start --head --port=...`)") from None
