"""`dva ablate`: a grid of `dva fit` variants x seeds from one load of the store.

Results are appended to results.csv as each variant finishes, so a rerun skips what is
done; results.md and ablation.png summarise mean +- std per variant, best first.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dva.errors import ConfigError
from dva.trainer.fit import FitSettings, load_features, train

METRICS = ("ccc_v", "ccc_a", "p_va")
CSV_FIELDS = ("variant", "seed", "epoch", *METRICS, "seconds")


def parse_value(key: str, text: str):
    """A grid/fixed value typed like the FitSettings field it sets."""
    fields = {f.name: f for f in dataclasses.fields(FitSettings)}
    if key not in fields or key in ("features", "out", "descriptions"):
        settable = sorted(set(fields) - {"features", "out", "descriptions", "seed"})
        raise ConfigError(f"--grid/--set: unknown setting {key!r}; use one of {', '.join(settable)}")
    default = getattr(FitSettings(), key)
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"--grid/--set: {key}={text!r} is not a valid {type(default).__name__}") from None
    return text.replace("+", ",") if key == "modalities" else text  # visual+audio means both


def parse_grid(items: list[str]) -> dict[str, list]:
    """["fusion=concat,hierarchical", "modalities=visual,audio,visual+audio"] -> {key: [values]}."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,...")
        grid[key] = [parse_value(key, v.strip()) for v in values.split(",") if v.strip()]
    return grid


def parse_fixed(items: list[str]) -> dict:
    fixed = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        fixed[key] = parse_value(key, value.strip())
    return fixed


def variant_name(choice: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in choice.items()) or "base"


@dataclass(frozen=True)
class Job:
    variant: str
    seed: int
    settings: FitSettings


def plan_jobs(base: FitSettings, grid: dict[str, list], seeds: int) -> list[Job]:
    jobs = []
    for values in itertools.product(*grid.values()) if grid else [()]:
        choice = dict(zip(grid, values))
        for seed in range(base.seed, base.seed + seeds):
            settings = dataclasses.replace(base, **choice, seed=seed)
            settings.validate()
            jobs.append(Job(variant_name(choice), seed, settings))
    return jobs


def read_done(path: Path) -> dict[tuple[str, int], dict]:
    if not path.is_file():
        return {}
    with path.open() as handle:
        return {(row["variant"], int(row["seed"])): row for row in csv.DictReader(handle)}


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row[k] for k in CSV_FIELDS})


def run_job(job: Job, features_by_align: dict) -> dict:
    """Train one variant; the features were loaded once by the caller (or scattered to this worker)."""
    result = train(job.settings, features_by_align[job.settings.audio_align], progress=False)
    return {"variant": job.variant, "seed": job.seed, **{k: result.best[k] for k in ("epoch", *METRICS)}, "seconds": round(result.seconds, 2)}


def ablate(base: FitSettings, grid: dict[str, list], seeds: int, out: Path, workers: int = 0, progress: bool = True) -> list[dict]:
    """Run every variant x seed not yet in out/results.csv; write the summaries; return the summary rows."""
    from tqdm import tqdm

    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_csv = out / "results.csv"
    jobs = plan_jobs(base, grid, seeds)
    done = read_done(results_csv)
    todo = [job for job in jobs if (job.variant, job.seed) not in done]
    if todo:
        aligns = sorted({job.settings.audio_align for job in todo})
        features_by_align = {align: load_features(base.features, align) for align in aligns}
        bar = tqdm(total=len(todo), desc="ablate", unit="variant", disable=not progress)
        for row in _run_all(todo, features_by_align, workers):
            append_row(results_csv, row)
            bar.set_postfix_str(f"{row['variant']} seed {row['seed']}: P_VA {row['p_va']:.3f}")
            bar.update(1)
        bar.close()
    wanted = {(job.variant, job.seed) for job in jobs}
    rows = [row for key, row in read_done(results_csv).items() if key in wanted]
    summary = summarise(rows)
    (out / "results.md").write_text(markdown_table(summary))
    plot_summary(out / "ablation.png", summary)
    return summary


def _run_all(todo: list[Job], features_by_align: dict, workers: int):
    if workers <= 0:
        for job in todo:
            yield run_job(job, features_by_align)
        return
    from dask.distributed import Client, LocalCluster, as_completed

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        shared = client.scatter(features_by_align, broadcast=True)  # one copy per worker, not per task
        futures = [client.submit(run_job, job, shared, pure=False) for job in todo]
        for future in as_completed(futures):
            yield future.result()


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and std of each metric per variant, best mean P_VA first."""
    by_variant: dict[str, list[dict]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    summary = []
    for variant, group in by_variant.items():
        entry = {"variant": variant, "seeds": len(group)}
        for metric in METRICS:
            values = np.array([float(r[metric]) if r[metric] not in ("", None) else math.nan for r in group])
            entry[metric] = float(np.nanmean(values)) if not np.isnan(values).all() else math.nan
            entry[metric + "_std"] = float(np.nanstd(values)) if len(group) > 1 else 0.0
        summary.append(entry)
    return sorted(summary, key=lambda e: -e["p_va"] if not math.isnan(e["p_va"]) else math.inf)


def markdown_table(summary: list[dict]) -> str:
    lines = ["| variant | seeds | CCC_V | CCC_A | P_VA |", "| --- | ---: | ---: | ---: | ---: |"]
    for e in summary:
        cells = [f"{e[m]:.4f} ± {e[m + '_std']:.4f}" for m in METRICS]
        lines.append(f"| {e['variant']} | {e['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_summary(path: Path, summary: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["variant"] for e in summary][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    y = np.arange(len(names))
    for offset, metric in zip((-0.25, 0, 0.25), METRICS):
        values = [e[metric] for e in summary][::-1]
        errors = [e[metric + "_std"] for e in summary][::-1]
        ax.barh(y + offset, values, height=0.25, xerr=errors, label=metric.upper().replace("_", " "))
    ax.set_yticks(y, names)
    ax.set(xlabel="validation score (mean ± std over seeds)", title="ablation")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
