"""Every benchmark still runs: each script in benchmarks/ with --quick exits 0 and prints its table."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(ROOT.glob("benchmarks/*.py"))  # a new benchmark is covered (and must support --quick)
VARIANTS = {"extract.py": [["--scale", "release"], ["--scale", "release", "--split-cores"]]}  # more ways a script runs, each with --quick
# Runs `benchmarks/gpu_check.sh --dry-run` makes itself (its bench-* steps, each on the CPU with --quick): checked there,
# table and all, not twice.
IN_GPU_CHECK = {("extract.py", ("--scale", "release")): "bench-extract-release", ("fit.py", ()): "bench-fit"}
CASES = [(path, extra) for path in BENCHMARKS for extra in [[], *VARIANTS.get(path.name, [])] if (path.name, tuple(extra)) not in IN_GPU_CHECK]
TABLE = re.compile(r"^\| .+ \|\n\| *-{3}", re.MULTILINE)


@pytest.mark.parametrize("script, extra", CASES, ids=[" ".join([path.name, *extra]) for path, extra in CASES])
def test_benchmark_runs_quick_and_prints_its_table(script, extra):
    if "--split-cores" in extra and len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2:
        pytest.skip("--split-cores pins threads to cores: it needs Linux and two usable cores")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # this checkout's dva
        "OMP_NUM_THREADS": "1",  # the speed is not under test; torch's thread pool spin-waits on a busy machine (5x slower)
    }
    done = subprocess.run([sys.executable, str(script.relative_to(ROOT)), "--quick", *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert TABLE.search(done.stdout), f"no markdown table header in:\n{done.stdout}"


@pytest.mark.longest
def test_gpu_check_runs_every_step_in_its_dry_mode_and_ends_with_its_table(tmp_path):
    # benchmarks/gpu_check.sh is for a machine with a GPU; its dry mode (bash -n, every step on the CPU, tiny sizes) keeps it from rotting
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", str(tmp_path / "check")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    table = (tmp_path / "check" / "summary.md").read_text()
    assert done.returncode == 0, table + done.stderr[-2000:]
    steps = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert steps == ["environment", "prepare", "extract-cpu-decoder", "extract-nvjpeg", "decoder-difference", "extract-dask-2-workers", "fit", "predict",
                     "ablate-2-workers", "bench-extract-release", "bench-fit", "bench-fit-temporal"]
    assert all("| ok |" in line for line in table.splitlines()[2:]), table
    for step in (*IN_GPU_CHECK.values(), "bench-fit-temporal"):  # the benchmarks' own tables, as test_benchmark_runs_quick_and_prints_its_table checks the rest
        assert TABLE.search((tmp_path / "check" / f"{step}.log").read_text()), step
    assert "max |cpu - nvjpeg| 0.0000" in (tmp_path / "check" / "decoder-difference.log").read_text()  # one decoder twice on the CPU: equal
