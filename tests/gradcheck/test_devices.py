"""Sharding over devices and processes gives the same report as one device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parents[1]  # tests/, where the sharded worker lives


def _env(n_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


#: What the check modes of the worker's cases must show in their reports (a check that
#: silently fell back to another mode would compare equal too).
EXPECTED = {
    "full": {"order": 1, "autodiff": "reverse", "entries": "full", "output": "scalar"},
    "sample": {"order": 1, "autodiff": "reverse", "entries": "sample", "output": "scalar"},
    "directional": {
        "order": 1,
        "autodiff": "reverse",
        "entries": "directional",
        "output": "scalar",
    },
    "both": {"order": 1, "autodiff": "both", "entries": "full", "output": "scalar"},
    "order2": {"order": 2, "autodiff": "both", "entries": "directional", "output": "scalar"},
    "vector": {"order": 1, "autodiff": "reverse", "entries": "full", "output": "float64[16]"},
}
#: Not a property of the check's result: wall time, and ``n_evaluations``, which counts the
#: padded rows of the last chunk of each kernel (a chunk is a multiple of the device count).
NOT_COMPARED = ("seconds", "n_evaluations", "stages")


def _differences(a, b, path=""):
    """The paths where two JSON values differ (floats compared exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(a.keys() | b.keys())
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, x in enumerate(a) for d in _differences(x, b[i], f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _same_report(a: dict, b: dict, case: str, ignore: tuple[str, ...] = NOT_COMPARED) -> None:
    # Same per-device batch, and per-entry computations are the same ops on every device:
    # identical numbers (relative errors, noise floors, worst entries' values), not close.
    a, b = ({k: v for k, v in r.items() if k not in ignore} for r in (a, b))
    diffs = _differences(a, b)
    assert not diffs, f"{case}: {len(diffs)} differences\n" + "\n".join(diffs[:20])


def _same_reports(got: dict) -> None:
    """Every case's report on all devices equals its report on one device."""
    assert sorted(got["cases"]) == sorted(EXPECTED)
    for case, runs in got["cases"].items():
        one, every = runs["one"], runs["all"]
        want = EXPECTED[case]
        assert one["ok"], case
        assert (one["order"], one["autodiff"]) == (want["order"], want["autodiff"]), case
        assert one["entries"].startswith(want["entries"])
        assert one["output"].startswith(want["output"])
        ads = {leaf["autodiff"] for leaf in one["leaves"]}
        assert ads == ({"reverse", "forward"} if want["autodiff"] == "both" else {"reverse"}), case
        assert all(leaf["worst"] for leaf in one["leaves"]), case  # values to compare
        _same_report(one, every, case)


@pytest.mark.slow
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
    _same_reports(got)


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
        _same_reports(r)  # every process gets the full, same report
    for case in EXPECTED:
        a, b = (r["cases"][case]["all"] for r in reports)
        _same_report(a, b, case, ignore=("seconds", "stages"))
