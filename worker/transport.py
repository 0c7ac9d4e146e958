"""reqworker's kombu Redis transport: waiting messages wait in Redis, not in workers.

kombu's Redis transport hands a message with a future ETA to a worker at once, and the
worker holds it unacknowledged until it is due (kombu#337): a countdown longer than
the visibility timeout runs twice, a dead worker keeps its waiting jobs for that long,
and one worker can hoard a whole waiting backlog. This transport differs in three ways:

- **Parking.** A message published with a future ETA (a ``retry``, an
  ``apply_async(countdown=…)``) is parked in a sorted set (``worker.parking``), and
  every consuming worker moves due messages onto the queue on a timer.
- **Leases.** A worker renews the visibility lease of every message it holds, so the
  visibility timeout only decides how soon a dead worker's jobs come back.
- **Poison.** A message that cannot be decoded, or is no reqworker job, is set aside
  (``worker.deadletters``) with one log line instead of ending the worker.

Chosen by ``broker_transport`` in ``celeryconfig`` for a Redis broker;
``SentinelTransport`` is the same through Sentinel (the URLs: ``worker.redisurl``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps

from worker.deadletters import DeadLetters, poison_reason
from worker.parking import PARK_MIN_MS, Parking, delay_ms

log = logging.getLogger("reqworker.transport")

#: Longest sleep of the mover between two looks at the parked sets.
IDLE_S = 1.0
#: How long a worker keeps trying to record a message it took off its queue as held.
APPEND_RETRY_S = 60.0
#: Shortest sleep of the mover: due messages are moved in small batches, never one call each;
#: a reserved rate slot comes back early enough (``admission.EARLY_S``) to absorb it.
MIN_SLEEP_S = 0.2

# Woken when this process parks a message, so a short countdown is moved on time.
_parked_soon = threading.Event()
# The channels of this process that consume: ``repark`` looks for a held message in them.
_consuming: weakref.WeakSet[ParkingChannel] = weakref.WeakSet()

#: Rewrites a held message for its next run: (headers, decoded body) -> (headers, body).
Rewrite = Callable[[dict[str, Any], Any], tuple[dict[str, Any], Any]]


def _wake_for(delay_ms: int) -> None:
    """Wake this process's movers for a message parked for no longer than they sleep."""
    if delay_ms <= IDLE_S * 1000:
        _parked_soon.set()


class _Keeper(threading.Thread):
    """One per consuming channel: moves due messages, renews the leases of held ones."""

    def __init__(self, channel: ParkingChannel) -> None:
        super().__init__(name="reqworker-keeper", daemon=True)
        self.channel = channel
        self.stopped = threading.Event()
        visibility = float(channel.visibility_timeout)
        self.lease_every_s = max(1.0, visibility / 4)

    def run(self) -> None:
        parking = Parking(self.channel._create_client())
        leases_due = 0.0
        while not self.stopped.is_set():
            sleep_s = IDLE_S
            try:
                _, next_s = parking.move_due(self.channel.parked_lists())
                while next_s == 0.0 and not self.stopped.is_set():  # a backlog came due
                    _, next_s = parking.move_due(self.channel.parked_lists())
                if next_s is not None:
                    sleep_s = min(max(next_s, MIN_SLEEP_S), IDLE_S)
                if time.monotonic() >= leases_due:
                    self.channel.renew_leases(parking.client)
                    leases_due = time.monotonic() + self.lease_every_s
            except Exception as exc:  # a Redis outage: the consumer reconnects; try again
                log.warning("parked-message mover: %s: %s", type(exc).__name__, exc)
                sleep_s = IDLE_S
            if _parked_soon.wait(sleep_s):
                _parked_soon.clear()

    def stop(self) -> None:
        self.stopped.set()
        _parked_soon.set()


class ParkingQoS(kombu_redis.QoS):
    """kombu's Redis QoS, with two changes.

    - It knows which held messages were parked again (``ParkingChannel.repark``): that
      already acknowledged them in Redis, so Celery's acknowledgement after the run
      only forgets them here.
    - Recording a message just taken from its queue as held (``append``) is tried
      again while Redis cannot be reached, for up to ``APPEND_RETRY_S``: the message
      is already off its queue, and kombu would drop it. A Sentinel failover that
      lands between the two steps thus costs nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reparked: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        deadline = time.monotonic() + APPEND_RETRY_S
        pause_s = 0.1
        while True:
            try:
                super().append(message, delivery_tag)
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + pause_s > deadline:
                    raise
                log.warning("could not record message %s as held (%s: %s); trying again",
                            delivery_tag, type(exc).__name__, exc)
                time.sleep(pause_s)
                pause_s = min(pause_s * 2, 2.0)

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in self.reparked:
            self.reparked.discard(delivery_tag)
            self._quick_ack(delivery_tag)
            return
        super().ack(delivery_tag)


class ParkingChannel(kombu_redis.Channel):
    """A kombu Redis channel that parks delayed messages and refuses poison."""

    QoS = ParkingQoS
    _keeper: _Keeper | None = None
    _parking: Parking | None = None
    #: Queues that carry reqworker jobs (transport option ``job_queues``): a message on
    #: them that is no job is set aside. Other queues only need a readable envelope.
    job_queues: tuple[str, ...] = ()
    from_transport_options: tuple[str, ...] = (*kombu_redis.Channel.from_transport_options, "job_queues")  # type: ignore[assignment]

    # -- publishing --------------------------------------------------------------
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        delay = delay_ms(message)
        if delay < PARK_MIN_MS:
            super()._put(queue, message, **kwargs)
            return
        pri = self._get_message_priority(message, reverse=False)
        self._parker().park(self._q_for_pri(queue, pri), dumps(message), delay)
        _wake_for(delay)

    def _parker(self) -> Parking:
        """This channel's ``Parking``, made on first use."""
        if self._parking is None:
            self._parking = Parking(self._create_client())
        return self._parking

    # -- consuming ---------------------------------------------------------------
    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        ret = super().basic_consume(queue, *args, **kwargs)
        if queue not in self._fanout_queues and self._keeper is None:
            self._keeper = _Keeper(self)
            self._keeper.start()
            _consuming.add(self)
        return ret

    def close(self) -> None:
        _consuming.discard(self)
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        super().close()

    def held(self, task_id: str) -> list[tuple[str, Any]]:
        """The messages of task ``task_id`` this channel holds, not yet acknowledged."""
        dirty = self.qos._dirty
        # A copy in one step: the consuming thread may change the dict meanwhile.
        return [(tag, m) for tag, m in list(self.qos._delivered.items())
                if tag not in dirty and (m.headers or {}).get("id") == task_id]

    def repark(self, tag: str, message: Any, delay: int, rewrite: Rewrite) -> bool:
        """Park a held message again, rewritten, acknowledging it in the same step.

        False when it cannot be (a message that is not JSON, or from a queue this
        channel does not consume); the caller then sends a new one. Once parking was
        tried, Celery's acknowledgement only forgets the message here: if Redis failed
        mid-way, the message is still held in Redis and comes back after the visibility
        timeout, or was parked.
        """
        raw = message._raw
        queue = (message.delivery_info or {}).get("routing_key")
        if raw.get("content-type") != "application/json" or queue not in self.active_queues:
            return False
        props = dict(raw["properties"])
        headers, body = rewrite(dict(raw.get("headers") or {}), message.decode())
        headers.pop("redelivered", None)
        info = {k: v for k, v in (props.get("delivery_info") or {}).items() if k != "redelivered"}
        encoded, props["body_encoding"] = self.encode_body(
            dumps(body).encode(), props.get("body_encoding"))
        props.update(delivery_info=info, delivery_tag=str(uuid.uuid4()))
        payload = {**raw, "headers": headers, "properties": props, "body": encoded}
        target = self._q_for_pri(queue, self._get_message_priority(payload, reverse=False))
        parking = self._parker()
        self.qos.reparked.add(tag)
        try:
            due = parking.repark(target, dumps(payload), delay,
                                 (self.unacked_index_key, self.unacked_key, tag))
        except Exception as exc:  # Redis failed: the held message comes back on its own
            log.warning("could not park message %s again (%s: %s); it comes back after the "
                        "visibility timeout", tag, type(exc).__name__, exc)
            return True
        if due is None:
            log.info("message %s went back to its queue before it was parked again", tag)
        else:
            _wake_for(delay)
        return True

    def _connparams(self, asynchronous: bool = False) -> Any:
        # Recovering from a lost connection (a Sentinel failover), kombu closes the old
        # channel after its connection, and closing asks for a pool the closed connection
        # can no longer describe: an AttributeError, which ends the worker. A connection
        # error instead is ignored by that recovery; the channel's unacknowledged
        # messages come back after the visibility timeout.
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous)

    def parked_lists(self) -> list[str]:
        """The queue lists this channel consumes, whose parked messages it moves."""
        queues = [q for q in list(self.active_queues) if q not in self._fanout_queues]
        return list(dict.fromkeys(self._q_for_pri(q, pri) for q in queues for pri in self.priority_steps))

    def renew_leases(self, client: Any) -> None:
        """Mark every message this channel holds as just delivered, so Redis keeps it here.

        ``XX`` only touches entries still in the index: an acknowledged message never
        comes back.
        """
        tags = list(self.qos._delivered)
        if tags:
            now = time.time()
            client.zadd(self.unacked_index_key, dict.fromkeys(tags, now), xx=True)

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's ``_brpop_read``, with poison set aside instead of raised."""
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            message, problem = poison_reason(item, job=dest in self.job_queues)
            if problem is not None:
                self._set_aside(dest, item, problem)
                return True
            self.connection._deliver(message, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _set_aside(self, queue: str, raw: bytes, reason: str) -> None:
        try:
            with self.conn_or_acquire() as client:
                DeadLetters(client).store(queue, raw, reason)
        except self.connection_errors:
            log.error("refused a message from queue %s (%s) and could not keep it: Redis is "
                      "unreachable", queue, reason)
            return
        log.error("refused a message from queue %s: %s (%d bytes); it is kept for "
                  "`reqworker dead-letters`", queue, reason, len(raw))


def repark(task_id: str, delay_ms: int, rewrite: Rewrite) -> bool:
    """Send the message of ``task_id`` this process holds back to wait ``delay_ms`` in Redis.

    The message is rewritten (``rewrite``) and parked in place of the held one, which is
    acknowledged in the same step: one Redis call instead of a new Celery message and an
    acknowledgement. False when no consuming channel of this process holds exactly one
    message of ``task_id`` (a prefork child, another broker): then send a new message.
    """
    found = [(channel, tag, m) for channel in list(_consuming) for tag, m in channel.held(task_id)]
    if len(found) != 1:
        return False
    channel, tag, message = found[0]
    return channel.repark(tag, message, delay_ms, rewrite)


class Transport(kombu_redis.Transport):
    Channel = ParkingChannel


class SentinelChannel(ParkingChannel, kombu_redis.SentinelChannel):
    """The same channel, reaching its Redis through Sentinel."""

    from_transport_options: tuple[str, ...] = (  # type: ignore[assignment]
        *kombu_redis.SentinelChannel.from_transport_options, "job_queues")


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
