"""Following a paginated collection: where the next page is, from the body or the Link header.

A chain of pages ends when there is no next page, at ``max_pages`` (the profile's, which
a job may only lower), when a next URL repeats a page already fetched, or when the
next value is not a URL under base_url; the last record says why in ``pagination_stopped``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from worker.jobs import JSON_PATH_STEP, Job
from worker.profiles import Profile
from worker.redact import shown_url
from worker.urls import is_under_base

_STEP = re.compile(JSON_PATH_STEP)


def json_path(body: Any, path: str) -> Any:
    """The value at a simple JSON path ("$.paging.next", "$.links[0]", "$['@odata.nextLink']")."""
    value = body
    for name, index, quoted, double in _STEP.findall(path[1:]):
        key = name or quoted or double
        if key and isinstance(value, dict):
            value = value.get(key)
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value


def page_id(url: str) -> str:
    """A short, stable name of a page's URL (its query in a stable order), to spot a repeat."""
    parts = urlsplit(url)
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    normal = urlunsplit(parts._replace(query=query, fragment=""))
    return hashlib.blake2b(normal.encode(), digest_size=8).hexdigest()


def next_page(
    job: Job, response: requests.Response, body: Any, profile: Profile
) -> tuple[Job | None, str | None]:
    """The job for the next page (same profile and settings, the API's next URL as given),
    and why the chain stops here when it stops for a reason other than reaching its end."""
    if not job.paginate:
        return None, None
    where = job.paginate["next"]
    found = response.links.get("next", {}).get("url") if where == "link" else json_path(body, where)
    if found is None or found == "":
        return None, None
    if not isinstance(found, str) or not found.startswith(("http://", "https://", "/", "?")):
        return None, (f"{where} gave {str(found)[:40]!r}, which is not a URL (a cursor must be "
                      "turned into a URL by the producer); no next page")
    url = urljoin(response.url or job.url, found)
    if not is_under_base(url, profile.base_url):
        return None, f"the next URL {shown_url(url)} is not under base_url; no next page"
    limit = min(job.paginate.get("max_pages") or profile.max_pages, profile.max_pages)
    if job.page >= limit:
        return None, f"max_pages ({limit}) reached"
    this = requests.Request("GET", job.url, params=job.params).prepare().url or job.url
    seen = [*job.pages_seen, page_id(this)]
    if page_id(url) in seen:
        return None, f"the next URL {shown_url(url)} repeats a page already fetched"
    # The API's next URL carries the query it wants; the first page's params would repeat it.
    return replace(job, url=url, params={}, page=job.page + 1, pages_seen=tuple(seen)), None
