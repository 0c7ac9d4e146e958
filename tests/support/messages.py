"""Reading task messages off a Redis queue, as the tests look at them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

from worker.jobs import BUNDLE_TASK_NAME


def job_ids(raw_messages: Iterable[bytes]) -> list[str]:
    """The job ids the messages carry: a job's task id, or each job id of a bundle."""
    ids: list[str] = []
    for raw in raw_messages:
        message = json.loads(raw)
        if message["headers"]["task"] != BUNDLE_TASK_NAME:
            ids.append(message["headers"]["id"])
            continue
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        ids.extend(entry["id"] for entry in kwargs["jobs"])
    return ids
