"""The job contract shared by producer and worker: one place that says what a job may be."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from worker.profiles import Profile
from worker.redact import shown_url
from worker.urls import HEADER_NAME, under_base_problem

#: The registered name of the Celery task that runs a job (``worker.tasks.request``).
TASK_NAME = "reqworker.request"
#: The registered name of the task that runs several jobs of one message (``worker.bundles``).
BUNDLE_TASK_NAME = "reqworker.bundle"
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
#: Methods whose request may have changed something even when no answer came back.
UNSAFE_METHODS = frozenset({"POST", "PATCH"})
FIELDS = frozenset(
    {"api", "method", "path", "url", "params", "json", "data", "headers", "cache", "refresh",
     "key", "retry_unsafe", "paginate", "page", "pages_seen"}
)
#: One step of a JSON path: ``.name``, ``[0]``, ``['name']`` or ``["name"]``.
JSON_PATH_STEP = r"\.([A-Za-z0-9_@$-]+)|\[(\d+)\]|\['([^'\]]+)'\]|\[\"([^\"\]]+)\"\]"
_JSON_PATH = re.compile(rf"^\$(?:{JSON_PATH_STEP})+\Z")
_PAGE_ID = re.compile(r"^[0-9a-f]{16}\Z")
#: Headers a job may not set: where the request goes and how it is framed belong to the
#: worker, cookies and credentials to nobody, and the rewrite/override headers would let
#: a job reach a method or path other than the one it names.
FORBIDDEN_HEADERS = frozenset({
    "host", "cookie", "connection", "keep-alive", "transfer-encoding", "content-length", "te",
    "trailer", "upgrade", "accept-encoding", "forwarded", "x-http-method-override",
    "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url",
})
FORBIDDEN_HEADER_PREFIXES = ("proxy-", "x-forwarded-")
#: A header value: printable Latin-1 (and tab inside), nothing that http.client would refuse.
_HEADER_VALUE = re.compile(r"^([\x21-\x7e\xa0-\xff]([\t\x20-\x7e\xa0-\xff]*[\x21-\x7e\xa0-\xff])?)?\Z")


#: How deep a job's ``json`` body may nest: every step from reading it to publishing it
#: must be able to handle it without running out of stack.
MAX_JSON_DEPTH = 200


def _too_deep(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists or objects more than ``limit`` deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class JobError(ValueError):
    """A job breaks the contract; ``field`` names the part that is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Job:
    """A validated request job, with its URL resolved against the profile."""

    api: str
    url: str
    method: str = "GET"
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    data: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    cache: bool = True
    refresh: bool = False
    key: str | int | None = None
    retry_unsafe: bool = False
    #: How to find the next page: {"next": "$.field" | "link", "max_pages": n}.
    paginate: dict[str, Any] | None = None
    #: Which page of a paginated collection this job fetches (1 for the first).
    page: int = 1
    #: Short names (``worker.paginate.page_id``) of the pages before this one, to stop a loop.
    pages_seen: tuple[str, ...] = ()

    def to_message(self) -> dict[str, Any]:
        """The JSON-safe form carried in the task message (and accepted by ``parse_job``)."""
        return {name: getattr(self, name) for name in _JOB_FIELDS}

    @property
    def uses_cache(self) -> bool:
        return self.method == "GET" and self.cache

    def summary(self) -> str:
        """A one-line description that holds no secret: for logs and Flower."""
        label = f" key={self.key}" if self.key is not None else ""
        return f"{self.api} {self.method} {shown_url(self.url)}{label}"

    def shown_arguments(self, batch_id: str | None) -> str:
        """The task arguments Flower shows for this job: its summary, never headers or body."""
        return json.dumps({"job": self.summary(), "batch_id": batch_id})


_JOB_FIELDS = tuple(f.name for f in fields(Job))


def parse_job(raw: Any, profiles: Mapping[str, Profile]) -> Job:
    """Check a job (a decoded JSON object) and resolve it; raises ``JobError``."""
    if not isinstance(raw, Mapping):
        raise JobError("", f"a job is a JSON object, not {type(raw).__name__}")
    if not FIELDS.issuperset(raw):
        unknown = sorted(set(raw) - FIELDS)
        raise JobError(unknown[0], f"unknown field; known: {', '.join(sorted(FIELDS))}")
    get = raw.get
    api = get("api")
    if not isinstance(api, str) or not api:
        raise JobError("api", "is required: the name of a profile in apis.toml")
    profile = profiles.get(api)
    if profile is None:
        known = ", ".join(sorted(profiles)) or "none"
        raise JobError("api", f"no profile named {api!r} (profiles: {known})")
    method = get("method", "GET")
    if type(method) is not str or method not in METHODS:  # the common case costs no upper()
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise JobError("method", f"{method!r} is not one of {' '.join(METHODS)}")
        method = method.upper()
    body, data = get("json"), get("data")
    if body is not None and data is not None:
        raise JobError("json", "give either json or data, not both")
    if body is not None and _too_deep(body, MAX_JSON_DEPTH):
        raise JobError("json", f"is nested more than {MAX_JSON_DEPTH} deep")
    cache, refresh = _flag(raw, "cache", True), _flag(raw, "refresh", False)
    if refresh and not cache:
        raise JobError("refresh", "refresh re-stores a cache entry, so it needs cache: true")
    # Every field is checked: the job is made without the frozen dataclass's __init__ (a
    # setattr per field), its fields in their declared order.
    job = object.__new__(Job)
    job.__dict__.update(
        api=api,
        url=_resolve_url(raw, profile),
        method=method,
        params=_params(get("params")),
        json=body,
        data=_data(data),
        headers=_headers(get("headers"), profile),
        cache=cache,
        refresh=refresh,
        key=_key(get("key")),
        retry_unsafe=_flag(raw, "retry_unsafe", False),
        paginate=_paginate(get("paginate"), method),
        page=_page(get("page", 1)),
        pages_seen=_pages_seen(get("pages_seen")),
    )
    return job


def _pages_seen(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) and _PAGE_ID.match(v) for v in value):
        raise JobError("pages_seen", "is kept by the worker: a list of page ids")
    return tuple(value)


def _paginate(value: Any, method: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if method != "GET":
        raise JobError("paginate", "only GET jobs follow pages")
    if not isinstance(value, Mapping):
        raise JobError("paginate", 'must be an object like {"next": "$.next"} or {"next": "link"}')
    unknown = sorted(set(value) - {"next", "max_pages"})
    if unknown:
        raise JobError(f"paginate.{unknown[0]}", "unknown field; known: max_pages, next")
    where = value.get("next")
    if not isinstance(where, str) or not (where == "link" or _JSON_PATH.match(where)):
        raise JobError("paginate.next", f"{where!r} is neither \"link\" (the Link header) nor a "
                       "JSON path like \"$.next\", \"$.paging.next\" or \"$['@odata.nextLink']\"")
    max_pages = value.get("max_pages")
    if max_pages is not None and (isinstance(max_pages, bool) or not isinstance(max_pages, int)
                                  or max_pages < 1):
        raise JobError("paginate.max_pages", f"must be a whole number 1 or more, not {max_pages!r}")
    return {"next": where, "max_pages": max_pages}


def _page(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise JobError("page", f"must be a whole number 1 or more, not {value!r}")
    return value


def _flag(raw: Mapping[str, Any], name: str, default: bool) -> bool:
    value = raw.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise JobError(name, f"must be true or false, not {value!r}")
    return value


def _key(value: Any) -> str | int | None:
    if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
        return value
    raise JobError("key", f"must be a string or a number, not {value!r}")


def _params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise JobError("params", "must be an object of query parameters")
    for name, item in value.items():
        if not isinstance(item, _SCALAR) and not (
                isinstance(item, list) and all(isinstance(one, _SCALAR) for one in item)):
            raise JobError(f"params.{name}", "must be a string, a number or a list of them")
    return dict(value)


_SCALAR = (str, int, float, bool)


def _data(value: Any) -> Any:
    if value is None or isinstance(value, str | Mapping):
        return value
    raise JobError("data", "must be a string or an object of form fields")


def _headers(value: Any, profile: Profile) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise JobError("headers", "must be an object of header names to strings")
    forbidden = {name.lower() for name in profile.credential_headers}
    for name, item in value.items():
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            raise JobError("headers", f"{name!r} is not a valid header name")
        if name.lower() in forbidden:
            raise JobError(
                f"headers.{name}",
                "credentials come only from the profile's [auth] table, never from a job",
            )
        lower = name.lower()
        if lower in FORBIDDEN_HEADERS or lower.startswith(FORBIDDEN_HEADER_PREFIXES):
            raise JobError(f"headers.{name}", "a job may not set this header: the worker decides "
                           "where a request goes, how it is framed, and which cookies it carries")
        if not isinstance(item, str):
            raise JobError(f"headers.{name}", "must be a string")
        if not _HEADER_VALUE.match(item):
            raise JobError(f"headers.{name}", "must be printable Latin-1 text on one line, "
                           "without leading or trailing spaces")
    return dict(value)


def _resolve_url(raw: Mapping[str, Any], profile: Profile) -> str:
    path, url = raw.get("path"), raw.get("url")
    if (path is None) == (url is None):
        raise JobError("path", "give either path (under base_url) or url (absolute), not both")
    base_url = profile.base_url
    if path is not None:
        if not isinstance(path, str):
            raise JobError("path", "must be a string")
        if "://" in path or path.startswith("//"):
            raise JobError("path", "is a path under base_url; put an absolute URL in url")
        rest = path.lstrip("/")
        url, name = base_url + "/" + rest, "path"
        if _PLAIN_REST.match(rest) and _plain_base(base_url):
            return url
    else:
        if not isinstance(url, str):
            raise JobError("url", "must be a string")
        name = "url"
        if url.startswith(base_url + "/") and _PLAIN_REST.match(url, len(base_url) + 1) \
                and _plain_base(base_url):
            return url
    _check_under_base(url, base_url, name)
    return url


#: What may follow ``base_url + "/"`` in a URL that needs no parsing to be known under it:
#: segments of unreserved characters and sub-delimiters, none starting with a dot (so none
#: is ``.`` or ``..`` however read) and none empty, no ``%`` (nothing decodes to a slash or
#: a dot), then a query of printable ASCII without ``#`` or a backslash. Anything else goes
#: through ``_check_under_base``, which judges every URL this accepts the same way.
_PLAIN_SEGMENT = r"[A-Za-z0-9_~!$&'()*+,=-][A-Za-z0-9._~!$&'()*+,;=-]*"
_PLAIN_REST = re.compile(
    rf"(?:{_PLAIN_SEGMENT}(?:/{_PLAIN_SEGMENT})*/?)?(?:\?[\x21\x22\x24-\x5b\x5d-\x7e]*)?\Z")


@functools.lru_cache(maxsize=256)
def _plain_base(base_url: str) -> bool:
    """True when a plain rest (``_PLAIN_REST``) after ``base_url + "/"`` is surely under it:
    ``base_url`` is an http(s) URL without query or fragment that passes the full check."""
    if "?" in base_url or "#" in base_url or not base_url.lower().startswith(("http://", "https://")):
        return False
    try:
        _check_under_base(base_url + "/", base_url, "url")
    except (JobError, ValueError):
        return False
    return True


def _check_under_base(url: str, base_url: str, name: str) -> None:
    problem = under_base_problem(url, base_url)
    if problem is not None:
        raise JobError(name, problem)
