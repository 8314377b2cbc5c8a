"""The tables of an ablation: its summary rows (`summarise`: each variant's seed-ensemble figure, shown and ranked,
with its seeds' own figures beside it), results.md (`markdown_table`) and ablation.png (`plot_summary`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dva.trainer.compare import difference_cell, difference_caption
from dva.trainer.paired import LEVEL, scores

TASK_METRICS = {"va": ("ccc_v", "ccc_a", "p_va"), "expr": ("expr_f1",), "au": ("au_f1",), "mtl": ("ccc_v", "ccc_a", "expr_f1", "au_f1", "p_mtl")}  # a row's figures; the last ranks
METRICS = tuple(dict.fromkeys(m for metrics in TASK_METRICS.values() for m in metrics))
LABELS = {"ccc_v": "CCC_V", "ccc_a": "CCC_A", "p_va": "P_VA", "expr_f1": "EXPR F1", "au_f1": "AU F1", "p_mtl": "P_MTL"}
FIGURES = {"best_val": "best_val: the epoch selected on val and scored on val (optimistic)",
           "oof": "oof: out of fold over train+val, each fold's epoch chosen on the other folds (nothing selected on the frames it scores)",
           "oof_selected": "oof_selected: out of fold, each fold's epoch selected on its own held-out fold (optimistic; what an older dva called oof)"}


def summarise(rows: list[dict], task: str = "va", helds: dict | None = None) -> list[dict]:
    """One entry per variant, best first by its shown figure. Shown: the task's metrics (CCC_V, CCC_A, P_VA; EXPR F1; AU F1)
    of the variant's seed ensemble (helds: `variant_helds`, its seeds' held-out predictions averaged frame by frame, what
    a submission of it would be); with one seed and nothing kept, that seed's own figures (its own ensemble); NaN (and a
    note) when several seeds kept nothing. Beside them each seed's own figures (per_seed), their mean (METRIC_seed_mean)
    and sample std over seeds (METRIC_seed_std, ddof=1; None with one seed)."""
    by_variant: dict[str, list[dict]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    summary = []
    for variant, group in by_variant.items():
        entry = {"variant": variant, "task": task, "seeds": len(group), "figure": "/".join(sorted({r.get("figure") or "best_val" for r in group})),
                 "untrained": "+".join(sorted({t for r in group for t in (r.get("untrained") or "").split("+") if t})), "note": "", "per_seed": {}}
        held = (helds or {}).get(variant)
        shown = scores(held.pred, held.labels) if held is not None else None
        for metric in TASK_METRICS[task]:
            values = np.array([float(r[metric]) if r.get(metric) not in ("", None) else math.nan for r in group])
            finite = values[~np.isnan(values)]
            entry["per_seed"][metric] = [float(v) for v in values]
            entry[metric + "_seed_mean"] = float(finite.mean()) if finite.size else math.nan
            entry[metric + "_seed_std"] = float(finite.std(ddof=1)) if finite.size > 1 else None  # one seed: no sample std
            entry[metric] = shown[metric] if shown is not None else float(values[0]) if len(group) == 1 else math.nan
        if shown is None and len(group) > 1:
            entry["note"] = "its seeds kept no predictions (rows of an older dva), so there is no ensemble figure to show: delete its rows from results.csv to train it again"
        summary.append(entry)
    ranked = TASK_METRICS[task][-1]
    return sorted(summary, key=lambda e: -e[ranked] if not math.isnan(e[ranked]) else math.inf)


def summary_metrics(summary: list[dict]) -> tuple[str, ...]:
    """The metrics of a summary's task, the ranking one last."""
    return TASK_METRICS[summary[0]["task"] if summary else "va"]


def shown_line(summary: list[dict]) -> str:
    """The line above the table: which figure is shown and ranked, and what the seeds' std is."""
    name = LABELS[summary_metrics(summary)[-1]]
    return (f"shown and ranked: each variant's seed ensemble (its seeds' held-out predictions averaged frame by frame, as a submission of it "
            f"would be), scored over every held-out frame; \"seeds' {name}\": each seed's own {name}, mean ± sample std over seeds (ddof=1)")


def markdown_table(summary: list[dict]) -> str:
    metrics = summary_metrics(summary)
    name = LABELS[metrics[-1]]
    figures = sorted({f for e in summary for f in e["figure"].split("/")})
    caption = "; ".join(FIGURES.get(f, f) for f in figures)
    if metrics[-1] == "au_f1":  # what selected the epochs; the per-unit thresholds a run keeps are tuned after
        caption += "; AU F1 with every unit at 0.5"
    if metrics[-1] == "p_mtl":
        caption += "; P_MTL = (CCC_V + CCC_A) / 2 + EXPR F1 + AU F1"
    compared = "baseline" in (summary[0] if summary else {})
    lines = [shown_line(summary), caption, ""]
    if compared:
        lines += [difference_caption(summary, name), ""]
    lines += ["| variant | seeds | figure | " + " | ".join(LABELS[m] for m in metrics) + f" | seeds' {name} |" + (f" Δ{name} vs baseline [{LEVEL:.0%} CI] |" if compared else ""),
              "| --- | ---: | --- |" + " ---: |" * (len(metrics) + 1) + (" ---: |" if compared else "")]
    notes = []
    number = lambda x: "—" if x is None or math.isnan(x) else f"{x:.4f}"  # noqa: E731
    for e in summary:
        cells = [number(e[m]) for m in metrics]
        std = e[metrics[-1] + "_seed_std"]
        cells.append(number(e[metrics[-1] + "_seed_mean"]) + (" (one seed)" if e["seeds"] == 1 else f" ± {number(std)}"))
        if compared:
            cells.append(difference_cell(e, notes))
        elif e["note"]:
            notes.append(f"[{len(notes) + 1}] {e['variant']}: {e['note']}")
            cells[-1] += f" [{len(notes)}]"
        variant = e["variant"] + (f" (its {e['untrained'].replace('+', ' and ')} loss term trains nothing)" if e.get("untrained") else "")
        lines.append(f"| {variant} | {e['seeds']} | {e['figure']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot_summary(path: Path, summary: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["variant"] for e in summary][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(names) + 1.5))
    y = np.arange(len(names))
    metrics = summary_metrics(summary)
    height = 0.75 / len(metrics)
    for k, metric in enumerate(metrics):
        at = y + (k - (len(metrics) - 1) / 2) * height
        ax.barh(at, [e[metric] for e in summary][::-1], height=height, label=LABELS[metric])
        seeds = [(position, value) for position, e in zip(at, summary[::-1]) for value in e["per_seed"][metric] if not math.isnan(value)]
        if seeds:  # each seed's own figure, a dot on its variant's bar
            ax.plot([v for _, v in seeds], [p for p, _ in seeds], "o", color="black", markersize=3, label="each seed" if k == 0 else None)
    ax.set_yticks(y, names)
    figures = "/".join(sorted({e["figure"] for e in summary}))
    seeds = sorted({e["seeds"] for e in summary})
    ax.set(xlabel=f"{figures} score of each variant's seed ensemble ({'/'.join(map(str, seeds))} seeds; dots: each seed's own)",
           title=f"ablation, ranked by the seed ensemble's {figures} {LABELS[metrics[-1]]}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: bars start at 0 and fill the axes
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
