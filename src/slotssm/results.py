"""Results pages of `slotssm reproduce`: mean +- std over seeds, a plot, and what the paper reports beside them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

# What the paper reports for each comparison (SlotSSM paper, NeurIPS 2024), to read our numbers against.
PAPER = {
    "video_prediction": (
        "Fig. 4 (bouncing balls, 10 context frames, then a 20-frame rollout): SlotSSM's rollout error is below the "
        "single-state SSM's, its split variant's, RIM's and the Transformer's, and close to SlotTransformer's."
    ),
    "blinking_balls": (
        "Fig. 6 (Blinking Color Balls, 80 to 2560 steps): SlotSSM stays accurate as the sequence grows; "
        "SlotTransformer matches it at short lengths at a quadratic cost; RIM fails to learn the colour rules; the "
        "single-state SSM and SlotRNN fall behind."
    ),
    "object_centric": (
        "§7.3 (MOVi-A/B): OC-SlotSSM beats SAVi on FG-ARI, mIoU and the position / colour / shape probes, with "
        "tighter masks and less object splitting; SAVi tends to collapse into one slot when trained long. PSB is "
        "not in the paper's comparison: it is here as the parallel slot learner whose inverted attention "
        "OC-SlotSSM uses."
    ),
    "snitch_localization": (
        "Table 1 (CATER, top-1 %): trained directly, OC-SlotSSM 61.6 > SlotTransformer 41.1 > SlotSSM 25.6 > "
        "single-state SSM 10.3; pre-trained on reconstruction, then fine-tuned, OC-SlotSSM 69.3 > SlotSSM 54.7 > "
        "SlotTransformer 49.2 > single-state SSM 41.2. Pre-training improves every model, SlotSSM the most."
    ),
}


def _stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(a)), float(np.nanstd(a))


def summarise(exp, results: dict) -> dict:
    """{variant: {model: {metric: (mean, std, n)}}} over seeds (pre-training runs left out)."""
    table: dict = {}
    for (variant, model, _seed, pre), res in results.items():
        if pre:
            continue
        cell = table.setdefault(variant, {}).setdefault(model, {})
        for m in exp.metrics:
            if m in res:
                cell.setdefault(m, []).append(res[m])
    return {v: {mod: {m: (*_stats(vals), len(vals)) for m, vals in cols.items()} for mod, cols in rows.items()}
            for v, rows in table.items()}


def _ranking(exp, rows: dict) -> list[str]:
    head = exp.metrics[0]
    sign = -1 if exp.higher_is_better else 1
    return sorted(rows, key=lambda mod: sign * rows[mod].get(head, (np.nan,))[0])


def _cell(mean: float, std: float, n: int) -> str:
    """mean +- std over seeds; one seed has no spread to show (a "+- 0.0000" would claim one)."""
    return f"{mean:.4f} +- {std:.4f}" if n > 1 else f"{mean:.4f} (1 seed)"


def _order_line(exp, rows: dict) -> str:
    """Best first; '>' only where two neighbours' means differ by more than the sum of their stds, else '~'."""
    head, order = exp.metrics[0], _ranking(exp, rows)
    parts = [order[0]]
    for a, b in zip(order, order[1:]):
        (ma, sa, _), (mb, sb, _) = rows[a][head], rows[b][head]
        parts += [">" if abs(ma - mb) > sa + sb else "~", b]
    return f"Order by `{head}` (best first; `~`: means closer than the sum of their stds): " + " ".join(parts)


def _verdict(exp, rows: dict, refs: dict) -> str | None:
    """A sentence on the headline metric against the best model-free reference (not an upper bound,
    `exp.upper_references`): which models clear it by more than their std over seeds, and a warning when none
    does."""
    head = exp.metrics[0]
    ref_vals = {k: v[head] for k, v in refs.items()
                if head in v and np.isfinite(v[head]) and k not in exp.upper_references}
    if not ref_vals:
        return None
    pick = max if exp.higher_is_better else min
    best_ref = pick(ref_vals, key=ref_vals.get)
    sign = 1 if exp.higher_is_better else -1
    margin = {m: sign * (rows[m][head][0] - ref_vals[best_ref]) - rows[m][head][1] for m in rows if head in rows[m]}
    better = [m for m, v in margin.items() if v > 0]
    if better:
        return (f"Better than the reference *{best_ref}* on `{head}` by more than their std over seeds: "
                f"{', '.join(better)}.")
    return (f"**No model is better than the reference *{best_ref}* on `{head}` by more than its std over seeds**: at "
            "this budget the order above says nothing about the paper's claims on this metric (the other columns may "
            "still separate the models from the references).")


HEALTH_COLUMNS = ("slot_cosine", "slot_sensitivity", "pred_sensitivity", "constant_predictions")


def _health_lines(exp, results: dict, variant: str) -> list[str]:
    """A table of the training-health summary (slotssm.train.health) per model at the end of training, mean over
    seeds; `constant_predictions` is the fraction of seeds whose last probe found a constant prediction."""
    rows = {}
    for (v, model, _seed, pre), res in results.items():
        if v == variant and not pre and any(k.startswith("health/") for k in res):
            for c in HEALTH_COLUMNS:
                rows.setdefault(model, {}).setdefault(c, []).append(res.get(f"health/{c}", np.nan))
    if not rows:
        return []
    out = ["Training health at the last probe (mean over seeds): slot pairwise cosine (near 1: collapsed slots), "
           "slot and prediction sensitivity to the input (near 0: the input is ignored), fraction of seeds with "
           "constant predictions.", "", "| model | " + " | ".join(HEALTH_COLUMNS) + " |",
           "|---" * (len(HEALTH_COLUMNS) + 1) + "|"]
    for model in exp.models:
        if model in rows:
            vals = [float(np.nanmean(rows[model][c])) if np.isfinite(rows[model][c]).any() else np.nan
                    for c in HEALTH_COLUMNS]
            out.append(f"| {model} | " + " | ".join("-" if not np.isfinite(x) else f"{x:.3g}" for x in vals) + " |")
    return out + [""]


def identical_models(exp, rows: dict) -> list[tuple[str, str]]:
    """Pairs of models whose every reported metric has the same mean to 4 decimals: a sign that both return the
    same (often constant) answer, not that they are equally good."""
    pairs = []
    for a, b in itertools.combinations([m for m in exp.models if m in rows], 2):
        shared = [m for m in exp.metrics if m in rows[a] and m in rows[b]]
        if shared and all(round(rows[a][m][0], 4) == round(rows[b][m][0], 4) for m in shared):
            pairs.append((a, b))
    return pairs


def _plot(name: str, exp, summary: dict, results: dict, path: Path, refs: dict) -> Path:
    from slotssm import viz

    head = exp.metrics[0]
    if name == "video_prediction":
        curves = {}
        for model in exp.models:
            runs = [r for (v, m, _, pre), r in results.items() if m == model and not pre]
            steps = sorted(int(k.rsplit("_", 1)[1]) for k in runs[0] if k.startswith("mse_step_"))
            curves[model] = [float(np.mean([r[f"mse_step_{s}"] for r in runs])) for s in steps]
        for ref, vals in refs.get("", {}).items():
            curves[f"reference: {ref}"] = [vals[f"mse_step_{s}"] for s in steps]
        return viz.plot_curves(curves, path, "rollout step", "MSE per pixel", "Rollout error (mean over seeds)")
    groups = {v: {m: summary[v][m][head][:2] for m in exp.models if head in summary[v].get(m, {})} for v in summary}
    lines = {v: {k: r[head] for k, r in refs.get(v, {}).items() if head in r} for v in summary}
    return viz.plot_bars(groups, path, head, f"{head} (mean, std over seeds; black: references)", refs=lines)


def effective_overrides(overrides) -> tuple[str, ...]:
    """KEY=VALUE overrides as they act: one per key, at its first place, with its last value (a later one replaces
    an earlier one when the config is built), so a page does not list `a=1 ... a=2`."""
    out: dict[str, str] = {}
    for item in overrides:
        out[item.split("=", 1)[0]] = item
    return tuple(out.values())


def write_results(name: str, exp, results: dict, steps: int, run_s: float, out_dir: Path, preset: str = "small",
                  overrides: tuple[str, ...] = (), references: dict | None = None,
                  pictures: dict | None = None, commits: tuple[str, ...] = ()) -> Path:
    """Write out_dir/NAME.md, .png and .json. run_s: summed wall time of the runs; references: {variant: {name:
    metrics}} of model-free answers (`Task.reference_metrics`), listed under the models; pictures: {variant:
    {model: path relative to out_dir}} of each model's slot masks / decoder attention (paper App. D.1); commits:
    the commits the runs were made at (from their records)."""
    references = references or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(exp, results)
    seeds = max(s for (_, _, s, _) in results) + 1
    plot = _plot(name, exp, summary, results, out_dir / f"{name}.png", references)
    lines = [f"# {name}: CPU-scale reproduction", "",
             f"Generated by `slotssm reproduce {name}`: {len(exp.models)} models x {seeds} seeds, each trained for "
             f"{steps} steps (equal for every model) on the task's `{preset}` preset "
             + (f"with the overrides `{' '.join(effective_overrides(overrides))}`" if overrides else "as it is")
             + f"; {run_s / 60:.0f} min of run time in all on this machine (runs go in "
             f"parallel, one thread each). Mean +- std over "
             f"seeds; {'higher' if exp.higher_is_better else 'lower'} is better for `{exp.metrics[0]}`."
             + (f" Runs made at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)} (each run's record in "
                f"`{name}_runs/` says which)." if commits else ""), "",
             "**The paper** (its orderings; its numbers come from GPU-scale training and are not comparable): "
             + PAPER[name], ""]
    for variant, rows in summary.items():
        if variant:
            lines += [f"## {variant}", ""]
            extra, pre = exp.variants.get(variant, ()), exp.pretrain.get(variant)
            said = ([f"Overrides: `{' '.join(effective_overrides(extra))}`."] if extra else []) + (
                [f"Each run first pre-trains a model with `{' '.join(effective_overrides(pre))}`, then trains from "
                 "its encoder and sequence model."] if pre else [])
            lines += [" ".join(said), ""] if said else []
        lines += ["| model | " + " | ".join(exp.metrics) + " |", "|---" * (len(exp.metrics) + 1) + "|"]
        for model in _ranking(exp, rows):
            cells = [_cell(*rows[model][m]) if m in rows[model] else "-" for m in exp.metrics]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        refs = references.get(variant, {})
        for ref, vals in refs.items():
            cells = [f"{vals[m]:.4f}" if m in vals and np.isfinite(vals[m]) else "-" for m in exp.metrics]
            kind = "upper bound" if ref in exp.upper_references else "reference"
            lines.append(f"| *{kind}: {ref}* | " + " | ".join(cells) + " |")
        lines += ["", _order_line(exp, rows), ""]
        verdict = _verdict(exp, rows, refs)
        if verdict:
            lines += [verdict, ""]
        for a, b in identical_models(exp, rows):
            lines += [f"**{a} and {b} return identical metrics** (every mean equal to 4 decimals): most likely the "
                      "same constant answer; see their prediction sensitivity below.", ""]
        lines += _health_lines(exp, results, variant)
        for model, picture in (pictures or {}).get(variant, {}).items():
            lines += [f"![{model}: slots]({picture})", ""]
    lines += [f"![{name}]({plot.name})", "", "Raw numbers: `" + f"{name}.json" + "`.", ""]
    page = out_dir / f"{name}.md"
    page.write_text("\n".join(lines))
    raw = {f"{v}|{m}|{s}|{'pre' if p else 'main'}": r for (v, m, s, p), r in results.items()}
    meta = {"steps": steps, "run_s": run_s, "runs": raw, "references": references, "commits": list(commits)}
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1))
    return page
