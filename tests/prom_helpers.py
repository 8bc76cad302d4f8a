"""A real Prometheus (server or agent) on a free loopback port, for the integration tests."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from edgeprof import dashboards
from edgeprof.ros.rosbridge import free_port


def wait_until(pred, timeout_s: float, what: str, every: float = 0.5):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Prom:
    """A real Prometheus (server or agent) from a shipped config, on a free loopback port."""

    def __init__(self, tmp: Path, name: str, config: dict, *flags: str, agent: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        cfg = tmp / f"{name}.yml"
        cfg.write_text(yaml.safe_dump(config))
        store = "--storage.agent.path" if agent else "--storage.tsdb.path"
        self.log_path = tmp / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"{store}={tmp / (name + '-data')}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", *flags],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._ready, 60, f"{name} /-/ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
        try:
            return urllib.request.urlopen(self.url + "/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        return dashboards.prom_query(self.url, expr)

    def by_robot(self, expr: str) -> dict[str, float]:
        return {r["metric"].get("robot"): float(r["value"][1]) for r in self.query(expr)}

    def api(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.load(resp)["data"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def scalar(self, expr: str) -> float | None:
        r = self.query(expr)
        return float(r[0]["value"][1]) if r else None
