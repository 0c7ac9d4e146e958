"""`reqworker demo` and what it runs on: nothing here is needed to enqueue or to run jobs.

- ``run``: the demo itself (``run_demo``), started by ``reqworker demo``;
- ``api``: the demo API's handler (OAuth, a rate limit, trouble on purpose);
- ``loopback``: an HTTP server on loopback answering from a handler (the demo's API; the bench's
  too; the tests' scriptable one in ``tests.support.loopback`` builds on it);
- ``localredis``: a private redis-server on a free port (the demo's, the tests' and the bench's);
- ``processes``: stopping children started in process groups of their own.
"""

from producer.demo.run import run_demo

__all__ = ["run_demo"]
