"""Letting a retried run's memory go at once instead of at the next full garbage collection.

Every Celery retry leaves a reference cycle behind: the ``Retry`` exception holds its
traceback, whose frames (Celery's tracer) hold the exception and billiard's
``ExceptionInfo``, a copy of the traceback with every frame's code positions (about
300 KB). Such cycles reach Python's oldest generation, which is collected only after it
grew by a quarter, so a worker that parks thousands of waiting jobs would grow by tens
of MiB before they are freed. Cutting the exception's link to its traceback, once
Celery has stored and reported it, lets reference counting free it all when the run
ends.
"""

from __future__ import annotations

from typing import Any


def release_retry(einfo: Any) -> None:
    """Cut the cycle through a retried run's ``Retry`` exception.

    billiard wraps it: ``einfo.exception`` is an ``ExceptionWithTraceback`` whose
    ``exc`` is the ``Retry``.
    """
    wrapper = getattr(einfo, "exception", None)
    for exc in (wrapper, getattr(wrapper, "exc", None)):
        if isinstance(exc, BaseException):
            exc.__traceback__ = None
            exc.__context__ = None
