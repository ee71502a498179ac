"""Curricula (`train.stages`): runs trained one after another, each starting from the weights of the one before.

    train.stages = ("data.num_frames=1 train.steps=2500", "data.num_frames=2 train.steps=1500")

trains OUT/stages/stage1 (the run's own config with the first stage's overrides, starting from `train.init_from`
when that is set), then OUT/stages/stage2 starting from stage1's `train.stage_modules`, then the run itself in OUT
starting from stage2's. Each stage is an ordinary run directory (config.json, metrics, checkpoints, eval.json), so
its curves and pictures are there to read, and the chain resumes anywhere: a finished stage is not trained again
(it is checked for the same settings), one stopped mid-way continues from its checkpoint. The run's config.json,
written before the first stage, holds the whole chain, so `slotssm train --resume --out OUT` continues it.

Carrying weights across stages needs the same parameter shapes in every stage: `check_stages` builds each stage's
model on the meta device and names the first tensor that differs (say, a frame-index table sized by the number of
frames: Blinking Color Balls' `data.max_frames`), before anything is trained.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from slotssm.config import RunConfig, apply_overrides


def stage_dir(out_dir, index: int) -> Path:
    """The run directory of stage `index` (0-based) of the run in `out_dir`."""
    return Path(out_dir) / "stages" / f"stage{index + 1}"


def stage_overrides(config: RunConfig, index: int) -> list[str]:
    """The `key=value` overrides of stage `index` of `config`."""
    return config.train.stages[index].split()


def stage_configs(config: RunConfig) -> list[RunConfig]:
    """The config of each stage of `config`: its own, without stages, with the stage's overrides applied (a bad
    override raises ValueError naming the stage). The first stage keeps `train.init_from`; where the others start
    is the chain's (`train`), not part of their configs, so a run directory can move without its stages changing."""
    base = dataclasses.replace(config, train=dataclasses.replace(config.train, stages=()))
    out = []
    for i in range(len(config.train.stages)):
        try:
            cfg = apply_overrides(base, stage_overrides(config, i))
        except ValueError as err:
            raise ValueError(f"train.stages[{i}]: {err}") from None
        if i:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=""))
        out.append(cfg)
    return out


def check_stages(config: RunConfig, data_dir) -> None:
    """Every stage of `config` builds, and the `train.stage_modules` of each one load into the next (and the last
    into the run): the same sequence-model config and the same parameter shapes. Models are built on the meta
    device (shapes only); ValueError naming the stage and the first mismatch otherwise."""
    import torch

    from slotssm.tasks.registry import get_task

    if not config.train.stages:
        return
    configs = stage_configs(config)
    names = config.train.stage_modules
    chain = configs + [config]

    def build(cfg, where):
        try:
            with torch.device("meta"):
                return get_task(cfg.task)(cfg, data_dir).build_model()
        except (RuntimeError, TypeError, ZeroDivisionError) as err:
            raise ValueError(f"{where}: the model does not build ({' '.join(str(err).split())[:200]})") from None

    models = [build(cfg, f"train.stages[{i}]") for i, cfg in enumerate(configs)] + [build(config, "the run")]
    for i in range(len(configs)):
        nxt = f"train.stages[{i + 1}]" if i + 1 < len(configs) else "the run"
        if "seq" in names and chain[i].model != chain[i + 1].model:
            raise ValueError(f"train.stages[{i}]: its model config differs from {nxt}'s, into which "
                             f"train.stage_modules carries the sequence model; set model.* on the run, not a stage")
        for name in names:
            mine, theirs = getattr(models[i], name, None), getattr(models[i + 1], name, None)
            if not isinstance(mine, torch.nn.Module) or not isinstance(theirs, torch.nn.Module):
                raise ValueError(f"train.stage_modules: {name!r} is not a module of the model")
            a, b = mine.state_dict(), theirs.state_dict()
            for key in sorted(a.keys() | b.keys()):
                sa = tuple(a[key].shape) if key in a else None
                sb = tuple(b[key].shape) if key in b else None
                if sa != sb:
                    raise ValueError(
                        f"train.stages[{i}]: {name}.{key} has shape {sa} there and {sb} in {nxt}, so the stage's "
                        f"weights cannot start it; give every stage the same shapes (a table sized by a length "
                        f"needs the longest length at every stage, e.g. Blinking Color Balls' data.max_frames)")
