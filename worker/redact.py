"""URLs as they may be shown: no credential from a query string in a record, Flower or a log.

Graph-style APIs put ``access_token=`` (or a signature) in their next-page links; the
URL is still followed as given, only what is shown is redacted.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Query parameter names that carry a credential (compared in lower case, ``-`` as ``_``).
_SECRET_PARAM = re.compile(
    r"(^|_)(access_token|refresh_token|id_token|token|api_?key|key|secret|client_secret|password|"
    r"passwd|pwd|sig|signature|x_amz_signature|x_goog_signature|x_amz_credential|"
    r"x_amz_security_token|code|auth|authorization|session|sessionid|sid|credential)s?$"
)
REDACTED = "REDACTED"


#: Page cursors look like tokens but are not credentials: they stay visible.
_CURSOR = re.compile(r"page|next|cursor|continu|offset|skip")


def secret_param(name: str) -> bool:
    """True when a query parameter of this name carries a credential."""
    lowered = name.lower().replace("-", "_")
    return bool(_SECRET_PARAM.search(lowered)) and not _CURSOR.search(lowered)


def shown_url(url: str) -> str:
    """``url`` with the values of credential-like query parameters (and any user-info) redacted."""
    if "?" not in url and "@" not in url:
        return url  # no query and no user-info: nothing to redact, no need to parse it
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    if not parts.query and netloc == parts.netloc:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(secret_param(name) for name, _ in pairs) and netloc == parts.netloc:
        return url
    query = urlencode([(name, REDACTED if secret_param(name) else value) for name, value in pairs])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def url_secrets(url: str) -> list[str]:
    """The values of ``url``'s credential-like query parameters, to scrub from error text."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return []
    return [value for name, value in parse_qsl(query, keep_blank_values=True)
            if value and secret_param(name)]
