"""Following a paginated collection: where the next page is, from the body or the Link header."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import urljoin

import requests

from worker.jobs import Job, is_under_base

_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]")


def json_path(body: Any, path: str) -> Any:
    """The value at a simple JSON path ("$.paging.next", "$.links[0]"), or None."""
    value = body
    for name, index in _STEP.findall(path[1:]):
        if name and isinstance(value, dict):
            value = value.get(name)
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value


def next_page_url(job: Job, response: requests.Response, body: Any) -> str | None:
    """The absolute URL of the page after this one, or None when this is the last to fetch."""
    if not job.paginate:
        return None
    max_pages = job.paginate.get("max_pages")
    if max_pages is not None and job.page >= max_pages:
        return None
    where = job.paginate["next"]
    found = response.links.get("next", {}).get("url") if where == "link" else json_path(body, where)
    if not isinstance(found, str) or not found:
        return None
    return urljoin(response.url or job.url, found)


def next_page(job: Job, response: requests.Response, body: Any, base_url: str) -> Job | None:
    """The job for the next page: same profile and settings, the API's next URL as given."""
    url = next_page_url(job, response, body)
    if url is None or not is_under_base(url, base_url):
        return None
    # The API's next URL carries the query it wants; the first page's params would repeat it.
    return replace(job, url=url, params={}, page=job.page + 1)
