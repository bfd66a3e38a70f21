"""Sharding over devices and processes gives the same report as one device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _env(n_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _same_report(a: dict, b: dict) -> None:
    assert a["ok"] == b["ok"]
    for la, lb in zip(a["leaves"], b["leaves"], strict=True):
        assert la["path"] == lb["path"] and la["status"] == lb["status"]
        # per-entry computations are the same ops on every device: identical numbers
        assert la["relative_error"] == lb["relative_error"]
        assert [w["numerical"] for w in la["worst"]] == [w["numerical"] for w in lb["worst"]]


def test_four_host_devices_match_one(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run(
        [sys.executable, str(HERE / "_sharded_worker.py"), str(out)],
        env=_env(4),
        check=True,
        timeout=300,
    )
    got = json.loads(out.read_text())
    assert got["n_devices"] == 4
    _same_report(got["one"], got["all"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_two_devices_each_match_one_device(tmp_path):
    port = _free_port()
    procs, outs = [], []
    for pid in range(2):
        out = tmp_path / f"r{pid}.json"
        outs.append(out)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "_sharded_worker.py"),
                    str(out),
                    str(pid),
                    "2",
                    str(port),
                ],
                env=_env(2),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    logs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    reports = [json.loads(o.read_text()) for o in outs]
    for r in reports:
        assert r["n_processes"] == 2 and r["n_devices"] == 4
        _same_report(r["one"], r["all"])  # every process gets the full, same report
    _same_report(reports[0]["all"], reports[1]["all"])
