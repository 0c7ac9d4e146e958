"""reqworker's worker side: the Celery app and everything that executes a job.

The modules ``settings``, ``profiles``, ``jobs``, ``keys``, ``durations`` and
``secret`` use the standard library only: the producer imports them to share the
job contract without needing the worker's dependencies. Importing this package
imports nothing else.
"""
