"""Every benchmark still runs: each script in benchmarks/ with --quick exits 0 and prints its table."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(ROOT.glob("benchmarks/*.py"))  # a new benchmark is covered (and must support --quick)


@pytest.mark.parametrize("script", BENCHMARKS, ids=[path.name for path in BENCHMARKS])
def test_benchmark_runs_quick_and_prints_its_table(script):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # this checkout's dva
        "OMP_NUM_THREADS": "1",  # the speed is not under test; torch's thread pool spin-waits on a busy machine (5x slower)
    }
    done = subprocess.run([sys.executable, str(script.relative_to(ROOT)), "--quick"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^\| .+ \|\n\| *-{3}", done.stdout, re.MULTILINE), f"no markdown table header in:\n{done.stdout}"
