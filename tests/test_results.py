"""Results pages: the order line and the verdict against the model-free references."""

from slotssm.reproduce import Experiment
from slotssm.results import _order_line, _verdict

HIGHER = Experiment("t", ("a", "b"), ("acc",), higher_is_better=True)
LOWER = Experiment("t", ("a", "b"), ("mse",))


def test_order_line_ties_when_means_are_within_the_stds():
    rows = {"a": {"acc": (0.50, 0.01, 3)}, "b": {"acc": (0.52, 0.02, 3)}}
    assert _order_line(HIGHER, rows).endswith("b ~ a")
    rows["b"]["acc"] = (0.60, 0.02, 3)
    assert _order_line(HIGHER, rows).endswith("b > a")


def test_verdict_needs_a_margin_larger_than_the_std():
    refs = {"chance": {"acc": 0.10}, "better guess": {"acc": 0.20}}
    rows = {"a": {"acc": (0.22, 0.05, 3)}, "b": {"acc": (0.30, 0.05, 3)}}
    assert _verdict(HIGHER, rows, refs).endswith("*better guess* on `acc` by more than their std over seeds: b.")
    rows["b"]["acc"] = (0.21, 0.05, 3)
    assert "No model is better than the reference *better guess*" in _verdict(HIGHER, rows, refs)
    lower = {"a": {"mse": (0.05, 0.001, 3)}, "b": {"mse": (0.09, 0.001, 3)}}
    assert _verdict(LOWER, lower, {"blank": {"mse": 0.06}, "worse": {"mse": 0.08}}).endswith(": a.")
    assert _verdict(LOWER, lower, {"no mse here": {"other": 1.0}}) is None


def test_verdict_leaves_out_the_upper_bounds():
    """A reference that uses what no model is given (the snitch's gold tracker) bounds the models from above; the
    verdict compares them with the best model-free answer instead."""
    exp = Experiment("t", ("a", "b"), ("acc",), higher_is_better=True, upper_references=("tracker",))
    refs = {"prior": {"acc": 0.05}, "tracker": {"acc": 0.8}}
    rows = {"a": {"acc": (0.09, 0.01, 3)}, "b": {"acc": (0.03, 0.01, 3)}}
    assert _verdict(exp, rows, refs).endswith("*prior* on `acc` by more than their std over seeds: a.")
    assert "*tracker*" in _verdict(HIGHER, rows, refs)  # without the mark it would be the reference to beat
    assert _verdict(exp, rows, {"tracker": {"acc": 0.8}}) is None


def test_page_names_each_variants_overrides_and_its_pretraining(tmp_path):
    from slotssm.results import write_results

    exp = Experiment("snitch_localization", ("a",), ("top1",), variants={"plain": (), "pre": ("x=1",)},
                     pretrain={"pre": ("data.objective=reconstruct", "data.r=32", "data.q=1", "data.r=16")},
                     higher_is_better=True)
    results = {(v, "a", s, p): {"top1": 0.1 * (s + 1)} for v in ("plain", "pre") for s in (0, 1) for p in (False,)}
    results[("pre", "a", 0, True)] = {"recon_mse": 0.01}
    page = write_results("snitch_localization", exp, results, 5, 60.0, tmp_path).read_text()
    # a key given twice is named once, with the value that acts (the last)
    assert ("## pre\n\nOverrides: `x=1`. Each run first pre-trains a model with `data.objective=reconstruct "
            "data.r=16 data.q=1`, then") in page
    assert "## plain\n\n| model |" in page and "| a | 0.1500 +- 0.0500 |" in page
    marked = Experiment("snitch_localization", ("a",), ("top1",), higher_is_better=True, upper_references=("tracker",))
    refs = {"": {"prior": {"top1": 0.05}, "tracker": {"top1": 0.8}}}
    page = write_results("snitch_localization", marked, {("", "a", 0, False): {"top1": 0.1}}, 5, 60.0, tmp_path,
                         references=refs).read_text()
    assert "| *reference: prior* | 0.0500 |" in page and "| *upper bound: tracker* | 0.8000 |" in page


def test_one_seed_shows_no_spread(tmp_path):
    from slotssm.results import write_results

    exp = Experiment("object_centric", ("a", "b"), ("fg_ari",), higher_is_better=True)
    results = {("", "a", 0, False): {"fg_ari": 0.3}, ("", "b", 0, False): {"fg_ari": 0.2},
               ("", "b", 1, False): {"fg_ari": 0.4}}
    page = write_results("object_centric", exp, results, 5, 60.0, tmp_path).read_text()
    assert "| a | 0.3000 (1 seed) |" in page and "+- 0.0000" not in page
    assert "| b | 0.3000 +- 0.1000 |" in page


def test_identical_models_health_table_and_slot_pictures(tmp_path):
    from slotssm.results import identical_models, write_results

    exp = Experiment("snitch_localization", ("a", "b", "c"), ("top1", "top5"), higher_is_better=True)
    health = {"health/slot_cosine": 0.99, "health/slot_sensitivity": 1e-6, "health/pred_sensitivity": 1e-7,
              "health/constant_predictions": 1.0}
    results = {("", "a", s, False): {"top1": 0.05, "top5": 0.2, **health} for s in (0, 1)}
    results.update({("", "b", s, False): {"top1": 0.05, "top5": 0.2} for s in (0, 1)})
    results.update({("", "c", s, False): {"top1": 0.05, "top5": 0.3 + s / 10} for s in (0, 1)})
    rows = {m: {k: (0.05 if k == "top1" else r, 0.0, 2) for k, r in (("top1", 0), ("top5", 0.2 if m != "c" else .35))}
            for m in "abc"}
    assert identical_models(exp, rows) == [("a", "b")]
    page = write_results("snitch_localization", exp, results, 5, 60.0, tmp_path,
                         pictures={"": {"a": "snitch_slots/main-a.png"}}).read_text()
    assert "**a and b return identical metrics**" in page and "**a and c" not in page
    assert "| a | 0.99 | 1e-06 | 1e-07 | 1 |" in page  # health of the runs that logged it
    assert "![a: slots](snitch_slots/main-a.png)" in page
