"""`reqworker demo` and what it runs on: nothing here is needed to enqueue or to run jobs.

- ``run``: the demo itself (``run_demo``), started by ``reqworker demo``;
- ``api``: the demo API's handler (OAuth, a rate limit, trouble on purpose);
- ``loopback``: a scriptable HTTP server on loopback (the demo's API; the tests' and the bench's too);
- ``localredis``: a private redis-server on a free port (the demo's, the tests' and the bench's);
- ``processes``: stopping children started in process groups of their own.
"""

from producer.demo.run import run_demo

__all__ = ["run_demo"]
