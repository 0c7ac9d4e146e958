"""kombu's Redis Sentinel transport, able to lose its connection while it recovers.

When the primary dies, Celery closes the broker connection and opens a new one. kombu
then closes the old channel, which first tries to hand its unacknowledged messages back
and so asks for a connection pool that the closed connection can no longer describe: an
``AttributeError`` that Celery treats as fatal, and the worker exits. Here that case is
a connection error, which Celery's recovery ignores: the messages stay in the unacked
set, come back after the visibility timeout (and a job that already finished is not run
again), and the worker carries on with the new primary.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport.redis import SentinelChannel, SentinelTransport


class Channel(SentinelChannel):  # type: ignore[misc]
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous)


class Transport(SentinelTransport):  # type: ignore[misc]
    """Chosen for ``sentinel://`` broker URLs (``celeryconfig._broker_transport``)."""

    Channel = Channel
