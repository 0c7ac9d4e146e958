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
        """List: one JSON entry per accepted job (id, key, line, api, method, url)."""
        return f"{self.prefix}:batch:{batch_id}:jobs"

    def batch_rejected(self, batch_id: str) -> str:
        """List: one JSON entry per refused input line (line, field, message)."""
        return f"{self.prefix}:batch:{batch_id}:rejected"

    def batches(self) -> str:
        """Sorted set of batch ids by creation time."""
        return f"{self.prefix}:batches"
