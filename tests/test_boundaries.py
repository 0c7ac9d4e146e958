"""The producer side stands apart: enqueueing loads neither the worker's HTTP stack nor the demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO

#: What the producer's import must not bring in: the worker's HTTP libraries, and the demo
#: (its loopback server, its local Redis), which only ``reqworker demo`` loads.
FORBIDDEN = ("requests", "requests_cache", "producer.demo")


def loaded_by(module: str) -> list[str]:
    """The forbidden modules in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    code = (f"import json, sys; import {module}; "
            f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.mark.parametrize("module", ["producer", "producer.client", "producer.cli", "producer.cli.submit"])
def test_the_producer_and_its_enqueue_command_load_no_http_stack_and_no_demo(module: str) -> None:
    assert loaded_by(module) == []


def test_the_check_sees_a_module_that_loads_them() -> None:
    assert loaded_by("producer.demo") == ["requests", "producer.demo"]  # the demo checks Flower with requests
    assert loaded_by("worker.executor") == ["requests", "requests_cache"]
