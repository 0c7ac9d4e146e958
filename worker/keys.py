"""Every Redis key reqworker writes itself, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``REQWORKER_KEY_PREFIX``, default "reqworker")."""

    prefix: str = "reqworker"

    def cache_namespace(self, profile: str) -> str:
        """requests-cache namespace of a profile's GET cache."""
        return f"{self.prefix}:cache:{profile}"

    def batch(self, batch_id: str) -> str:
        """Hash: a batch's name, creation time and counts."""
        return f"{self.prefix}:batch:{batch_id}"

    def batch_jobs(self, batch_id: str) -> str:
        """List: one JSON entry per accepted job (id, line, the job; ``same_as`` for a duplicate)."""
        return f"{self.prefix}:batch:{batch_id}:jobs"

    def batch_rejected(self, batch_id: str) -> str:
        """List: one JSON entry per refused input line (line, field, message)."""
        return f"{self.prefix}:batch:{batch_id}:rejected"

    def batch_done(self, batch_id: str) -> str:
        """Set: ids of the batch's jobs that finished, so a job is counted once."""
        return f"{self.prefix}:batch:{batch_id}:done"

    def batch_retrying(self, batch_id: str) -> str:
        """Set: ids of the batch's jobs waiting for a retry."""
        return f"{self.prefix}:batch:{batch_id}:retrying"

    def batch_waiting(self, batch_id: str) -> str:
        """Set: ids of the batch's jobs waiting for pacing (rate budget, a slot, a pause)."""
        return f"{self.prefix}:batch:{batch_id}:waiting"

    def batch_enqueuing(self, batch_id: str) -> str:
        """String with a short expiry: refreshed while a process enqueues the batch."""
        return f"{self.prefix}:batch:{batch_id}:enqueuing"

    def job_sent(self, job_id: str) -> str:
        """String with an expiry: an unsafe job's request went out and its outcome is not stored."""
        return f"{self.prefix}:sent:{job_id}"

    def job_handed(self, job_id: str) -> str:
        """String with an expiry: a job left its bundle to run again alone (``worker.handoff``)."""
        return f"{self.prefix}:handed:{job_id}"

    def batch_seen(self, batch_id: str) -> str:
        """Hash: fingerprint of each GET in the batch to the id of the job that runs it."""
        return f"{self.prefix}:batch:{batch_id}:seen"

    def batches(self) -> str:
        """Sorted set of batch ids by creation time: only batches whose records have not
        expired, at most ``producer.batches.MAX_INDEXED``; it expires itself when idle."""
        return f"{self.prefix}:batches"

    def rate(self, profile: str) -> str:
        """String: the profile's shared rate budget (GCRA theoretical arrival time)."""
        return f"{self.prefix}:rate:{profile}"

    def pause(self, profile: str) -> str:
        """String with an expiry: the profile is paused for every worker until it expires."""
        return f"{self.prefix}:pause:{profile}"

    def inflight(self, profile: str) -> str:
        """Sorted set: leases of requests in flight for the profile's concurrency cap."""
        return f"{self.prefix}:inflight:{profile}"

    def token(self, profile: str) -> str:
        """String with an expiry: the profile's shared OAuth token (JSON)."""
        return f"{self.prefix}:token:{profile}"

    def token_failure(self, profile: str) -> str:
        """String with a short expiry: why the token endpoint last refused (never a token)."""
        return f"{self.prefix}:token:{profile}:failure"

    def token_lock(self, profile: str) -> str:
        """String with a lease: held by the one process renewing the profile's token."""
        return f"{self.prefix}:token:{profile}:lock"
