"""Learning-rate schedule, optimizer parameter groups, the sharded resumable data order."""

import pytest
import torch
from torch import nn

from slotssm.train.config import OptimConfig
from slotssm.params import no_decay
from slotssm.train.optim import build_optimizer, split_decay_params
from slotssm.train.sampler import DataPosition, ShardedBatchSampler
from slotssm.train.schedule import build_scheduler, lr_multiplier


def test_warmup_then_cosine_to_min_ratio():
    f = lambda s: lr_multiplier(s, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)  # noqa: E731
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.55)  # half-way through the decay: (1 + 0.1) / 2
    assert f(14) == pytest.approx(0.1) and f(1000) == pytest.approx(0.1)
    values = [f(s) for s in range(4, 15)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing after the warmup
    assert lr_multiplier(0, warmup_steps=0, total_steps=10, min_lr_ratio=0.0) == 1.0
    assert lr_multiplier(5, warmup_steps=0, total_steps=10, min_lr_ratio=0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="step"):
        lr_multiplier(-1, warmup_steps=0, total_steps=10, min_lr_ratio=0.0)


def test_scheduler_follows_the_multiplier():
    model = nn.Linear(2, 2)
    optim_cfg = OptimConfig(lr=0.5, warmup_steps=3, min_lr_ratio=0.2)
    opt = build_optimizer(model, optim_cfg)
    sched = build_scheduler(opt, optim_cfg, total_steps=10)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5 * lr_multiplier(s, warmup_steps=3, total_steps=10, min_lr_ratio=0.2) for s in range(12)]
    assert seen == pytest.approx(expected)
    assert all(isinstance(v, (int, float, list, type(None), bool)) for v in sched.state_dict().values())


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.pos_embed = no_decay(nn.Parameter(torch.zeros(3, 4)))
        self.table = nn.Parameter(torch.zeros(3, 4))  # untagged 2-D: decayed, whatever its name
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.special = nn.Parameter(torch.zeros(2, 2))

    def no_weight_decay(self):
        return {"special"}


def test_weight_decay_only_on_weight_matrices():
    decay, no_decay = split_decay_params(_Net())
    assert decay == ["table", "proj.weight"]
    assert set(no_decay) == {"embed.weight", "pos_embed", "proj.bias", "norm.weight", "norm.bias", "special"}
    opt = build_optimizer(_Net(), OptimConfig(weight_decay=0.3))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]


@pytest.mark.parametrize("name", ["slotssm", "oc_slotssm", "single_state_ssm", "slot_transformer", "savi", "psb",
                                  "rim", "slot_rnn"])
def test_dynamics_and_slot_starts_are_not_decayed(name):
    from slotssm.models import build_model

    model = build_model(name, preset="tiny")
    decay, _ = split_decay_params(model)
    leaves = {n.rsplit(".", 1)[-1] for n in decay}
    assert not leaves & {"A_log", "D", "dt_bias", "cls", "slots_init", "init_slots", "slot_embed", "rel_bias", "h0"}
    assert all(n.rsplit(".", 1)[-1].startswith("weight") for n in decay), decay  # weight matrices only (GRU's too)


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_shards_are_disjoint_equal_and_cover_the_epoch():
    shards = [ShardedBatchSampler(23, 3, seed=1, rank=r, world_size=2) for r in range(2)]
    assert shards[0].batches_per_epoch == 3  # 11 items per rank, 3 full batches of 3
    epoch0 = [shard.rank_indices(0).tolist() for shard in shards]
    assert len(epoch0[0]) == len(epoch0[1]) == 11
    assert not set(epoch0[0]) & set(epoch0[1]) and set(epoch0[0]) | set(epoch0[1]) <= set(range(23))
    batches = _take(shards[0], 6)
    assert sum(batches[:3], []) == epoch0[0][:9]  # epoch 0, then epoch 1 in a new order
    assert sum(batches[3:], []) == shards[0].rank_indices(1).tolist()[:9] != epoch0[0][:9]


def test_starting_mid_epoch_continues_the_same_order():
    full = _take(ShardedBatchSampler(20, 4, seed=3), 12)
    position = DataPosition()
    for _ in range(7):
        position.advance(5)
    assert (position.epoch, position.position) == (1, 2)
    resumed = _take(ShardedBatchSampler(20, 4, seed=3, start=position), 5)
    assert resumed == full[7:]
    assert _take(ShardedBatchSampler(20, 4, seed=4), 5) != full[:5]


def test_sampler_rejects_a_dataset_smaller_than_a_batch():
    with pytest.raises(ValueError, match="batch_size=8"):
        ShardedBatchSampler(10, 8, seed=0, world_size=2)
    assert ShardedBatchSampler(16, 8, seed=0, world_size=2).batches_per_epoch == 1
