"""Model sizes, defined once: every registered model's presets are `tiny` (its test size) and one per scale here.

Legend: D slot width, K slots, E expanded SSM channels (E = expand * D).

A scale is SlotSSM's size: slot width D, slot count K and the SSM's expand. Each model file turns a scale into its
own config values with a one-line rule (`scaled(TINY, rule)`): the slot models take D and K; the baselines that
are matched to SlotSSM's parameter count derive their own widths, depths or active modules from D and K
(`tests/models/test_parallel_baselines.py` and `test_recurrent_baselines.py` check the match at every scale).
A task preset names the scale its models use (`tasks.presets.Preset.model_preset`).

Names: `w{D}k{K}` at the SSM's default expand 2; the paper's Table 2 columns by name (`paper_blinking`,
`paper_movi`: expand 1.25). A new size is one line in `SCALES`. The dataset names the presets had before
(`blinking_balls`, `bouncing_balls`, `snitch`, `movi`) are aliases of the scales that hold the same values; run
directories store the resolved model config, so they load without either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """SlotSSM's size: D, K and the SSM's expand; `note` says where it comes from (listings only)."""

    d_model: int  # D
    num_slots: int  # K
    expand: float = 2.0  # E / D of SlotSSM's, OC-SlotSSM's and the single-state SSM's Mamba blocks
    note: str = ""

    def slots(self, **fields) -> dict:
        """D and K as config values, with a model's own `fields`."""
        return dict(d_model=self.d_model, num_slots=self.num_slots, **fields)


SCALES: dict[str, Scale] = {
    "w64k6": Scale(64, 6),
    "w128k8": Scale(128, 8),
    "w192k11": Scale(192, 11),
    "paper_blinking": Scale(64, 6, expand=1.25, note="paper Table 2, Blinking Color Balls column"),
    "paper_movi": Scale(192, 11, expand=1.25, note="paper Table 2, MOVi column"),
}

ALIASES: dict[str, str] = {  # the dataset-named presets of before -> the scale with the same values
    "blinking_balls": "paper_blinking",
    "bouncing_balls": "w64k6",
    "snitch": "w128k8",
    "movi": "paper_movi",
}


class ScaledPresets(Mapping):
    """A model's presets: "tiny", then one per scale of `SCALES`, each `rule(scale)` with `exceptions[name]` on top.

    Read at every look-up, so a scale added to `SCALES` is a preset of every model at once.
    """

    def __init__(self, tiny: dict, rule: Callable[[Scale], dict], exceptions: dict[str, dict]):
        unknown = sorted(set(exceptions) - set(SCALES))
        if unknown:
            raise ValueError(f"exceptions: unknown scale(s) {unknown}; scales: {', '.join(SCALES)}")
        self.tiny, self.rule, self.exceptions = dict(tiny), rule, exceptions

    def __getitem__(self, name: str) -> dict:
        if name == "tiny":
            return dict(self.tiny)
        return {**self.rule(SCALES[name]), **self.exceptions.get(name, {})}  # KeyError for an unknown name

    def __contains__(self, name) -> bool:
        return name == "tiny" or name in SCALES

    def __iter__(self) -> Iterator[str]:
        return iter(["tiny", *SCALES])

    def __len__(self) -> int:
        return 1 + len(SCALES)


def scaled(tiny: dict, rule: Callable[[Scale], dict], **exceptions: dict) -> ScaledPresets:
    """A model's presets from its test size `tiny` and its `rule` (a scale -> its config values).

    An exception keeps, for one scale, a value that was measured and that the rule does not give.
    """
    return ScaledPresets(tiny, rule, exceptions)


def resolve_preset(preset: str) -> str:
    """A preset name with the old dataset-named aliases mapped to their scale; other names unchanged."""
    return ALIASES.get(preset, preset)


def describe_scales() -> list[str]:
    """One line per scale and one for the aliases: what `slotssm list` prints."""
    width = max(map(len, SCALES)) + 2
    lines = [f"  {'tiny':<{width}}each model's test size"]
    for name, s in SCALES.items():
        note = f"  ({s.note})" if s.note else ""
        lines.append(f"  {name:<{width}}D={s.d_model} K={s.num_slots} expand={s.expand}{note}")
    lines.append("  old names: " + ", ".join(f"{old} = {new}" for old, new in ALIASES.items()))
    return lines
