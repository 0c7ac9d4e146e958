"""Flower as a subprocess for the integration tests: ``reqworker flower`` with basic auth."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import requests

from producer.demo.localredis import free_port
from producer.demo.processes import stop_group
from producer.flower import LOOPBACK
from tests.support import REQWORKER, eventually

USER, PASSWORD = "ops", "flower-pw-8d1c0b7e"
LOGIN = (USER, PASSWORD)


class FlowerProcess:
    """``reqworker flower`` as a subprocess, with its log in a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, address: str = LOOPBACK) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*REQWORKER, "flower", "--port", str(self.port), "--address", address],
            env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, *, auth: tuple[str, str] | None = LOGIN,
            params: Mapping[str, str] | None = None) -> requests.Response:
        return requests.get(self.url + path, auth=auth, params=params, timeout=30)

    def wait_ready(self) -> FlowerProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"flower exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.get("/healthcheck", auth=None).status_code == 200
            except requests.ConnectionError:
                return False

        eventually(ready, within_s=60, every_s=0.2, what="flower start")
        return self

    def stop(self) -> None:
        stop_group(self.proc)
        self._log.close()
