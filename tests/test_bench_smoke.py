"""The benchmark harness works end to end (bench/run.py); nothing about speed.

One tiny interleaved round through a real private Postfix: no milter and
postwarden. Proves the sink counted every message, the JSON table has a row per
variant, and the milter's CPU was attributed to it (so Postfix really went
through the milter). Takes ~15 s, mostly Postfix start, two reloads and stop.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """smtp-sink writes its dump as user nobody: pytest's 0700 tmp dirs will not do."""
    d = Path(tempfile.mkdtemp(prefix="postwarden-bench-smoke-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.e2e
def test_bench_smoke(workdir: Path) -> None:
    out, dump = workdir / "bench.json", workdir / "sink" / "dump"
    dump.parent.mkdir()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rounds", "1", "--messages", "100",
         "--sizes", "4", "--sessions", "5", "--warmup", "0",
         "--variants", "none,postwarden", "--json", str(out), "--dump", str(dump)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()  # run.py stops its Postfix, DNS and milters on SIGTERM
        output, _ = proc.communicate(timeout=30)
        raise AssertionError(f"bench/run.py hung:\n{output}") from None
    assert proc.returncode == 0, output
    report = json.loads(out.read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"none", "postwarden"}
    assert rows["none"]["ratio"] == 1.0
    assert all(r["runs"] == 1 and r["median"] > 0 for r in rows.values())
    assert rows["none"]["milter_cpu_ms"] == 0
    # CPU comes in 10 ms clock ticks: 100 messages at ~0.5 ms each are several ticks,
    # 20 were not always one.
    assert rows["postwarden"]["milter_cpu_ms"] > 0
    assert [r["messages"] for r in report["runs"]] == [100, 100]
    # every message of every run reached smtp-sink, each exactly once
    delivered = dump.read_text(errors="replace").count("X-Mail-Args: <bench@example.com>")
    assert delivered == 200
    assert "| postwarden | 4 KB |" in output
    print(f"bench smoke run took {time.monotonic() - started:.1f}s")
