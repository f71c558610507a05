"""Evaluators: tiny nets and a tiny training run (fast), plus the committed evaluator's accuracy."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from generators import evaluator_sets as es
from generators import evaluator_training as tr
from generators import evaluators as ev
from generators import miniworld
from generators.run import Run

TINY = dict(widths=(8, 8, 12, 12, 16), spatial_channels=4, feature_dim=16)


def tiny_evaluator(seed: int = 0) -> ev.Evaluator:
    torch.manual_seed(seed)
    config = ev.EvaluatorConfig(labels=ev.EvaluatorConfig.default().labels, **TINY)
    return ev.Evaluator(ev.EvaluatorNet(config), config)


def images(n: int, seed: int = 3) -> list:
    return [miniworld.generate(seed, i).image for i in range(n)]


def test_heads_and_default_net_size():
    config = ev.EvaluatorConfig.default()
    assert tuple(config.labels) == ev.HEADS
    sizes = {h: len(v) for h, v in config.labels.items()}
    assert sizes["kind"] == 11 and sizes["subclass"] == 12 and sizes["color"] == 8 and sizes["position"] == 9
    assert config.labels["style"][0] == "plain" and len(config.labels["style"]) >= 11
    assert 500_000 <= ev.count_parameters(ev.EvaluatorNet(config)) <= 2_000_000


def test_facing_is_invisible_only_on_mirror_symmetric_kinds():
    assert ev.mirror_symmetric_kinds() == ("star", "heart", "tree")
    assert ev.EvaluatorConfig.default().facing_invisible_kinds == ["star", "heart", "tree"]


def test_predict_probabilities_features_on_pil_and_tensor():
    evaluator = tiny_evaluator()
    pics = images(3)
    pred = evaluator.predict(pics)
    assert set(pred) == set(ev.HEADS) and all(len(v) == 3 for v in pred.values())
    assert all(p in evaluator.labels["kind"] for p in pred["kind"])
    probs = evaluator.probabilities(pics)
    assert torch.allclose(probs["style"].sum(-1), torch.ones(3), atol=1e-5)
    tensor = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1).float() / 127.5 - 1 for p in pics])
    assert evaluator.predict(tensor) == pred
    assert torch.allclose(evaluator.features(tensor), evaluator.features(pics), atol=1e-5)
    assert evaluator.features(pics).shape == (3, TINY["feature_dim"])
    big = [p.resize((128, 128)) for p in pics]  # other sizes are resized to 64
    assert evaluator.features(big).shape == (3, TINY["feature_dim"])


def test_perceptual_distance():
    evaluator = tiny_evaluator()
    a, b = images(4, seed=1), images(4, seed=2)
    same = evaluator.perceptual_distance(a, a)
    assert same.shape == (4,) and torch.all(same.abs() < 1e-6)
    d_ab, d_ba = evaluator.perceptual_distance(a, b), evaluator.perceptual_distance(b, a)
    assert torch.all(d_ab > 0)
    assert torch.allclose(d_ab, d_ba, atol=1e-6)
    with pytest.raises(ValueError):
        evaluator.perceptual_distance(a, b[:2])


def test_frechet_distance():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 8))
    assert ev.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    d_small = ev.frechet_distance(feats, feats + 0.5)
    d_big = ev.frechet_distance(feats, feats + 2.0)
    assert d_small == pytest.approx(8 * 0.25, rel=1e-6)  # a pure mean shift adds |shift|^2
    assert 0 < d_small < d_big
    other = rng.normal(size=(300, 8))
    assert 0 < ev.frechet_distance(torch.from_numpy(feats), torch.from_numpy(other)) < 1.0
    evaluator = tiny_evaluator()
    assert ev.mini_fid(evaluator, images(6, 1), images(6, 1)) == pytest.approx(0.0, abs=1e-4)


def test_tiny_training_run_writes_and_reloads(tmp_path):
    config = ev.EvaluatorConfig(labels=ev.EvaluatorConfig.default().labels, **TINY)
    calls = []
    accuracy = tr.train_evaluators(tmp_path, seconds=5, device="cpu", seed=1, n_train=40, n_eval=16,
                                   n_eval_birds=8, n_eval_styled=16, batch_size=16, config=config,
                                   run=Run(progress=lambda s, t, **info: calls.append((info["phase"], s, t))))
    for name in ("evaluator.safetensors", "config.json", "accuracy.json", "training_options.json"):
        assert (tmp_path / name).is_file(), name
    # the run seam: one progress over the call (seconds of the budget), done rising to its total at the end
    done, totals = [s for _, s, _ in calls], {t for _, _, t in calls}
    assert totals == {5} and done == sorted(done) and done[-1] == 5 and 5 not in done[:-1], calls
    phases = [p for p, _, _ in calls]
    assert set(phases) == {"render", "train"} and phases == sorted(phases), calls  # render first, then train
    assert "stopped" not in accuracy
    saved = json.loads((tmp_path / "accuracy.json").read_text())
    assert saved == json.loads(json.dumps(accuracy))
    assert all(0 <= saved[h] <= 1 for h in ev.HEADS)
    assert 0 <= saved["facing_all"] <= 1 and 0 <= saved["kind_styled"] <= 1
    options = json.loads((tmp_path / "training_options.json").read_text())
    assert options["steps"] >= 1 and options["options"]["seconds"] == 5 and options["device"] == "cpu"

    a, b = ev.load_evaluator(tmp_path), ev.load_evaluator(tmp_path)
    pics = images(5)
    assert a.predict(pics) == b.predict(pics)
    assert torch.equal(a.features(pics), b.features(pics))
    # the reloaded weights reproduce the accuracy measured right after training
    jobs = es.eval_jobs(config.labels, seed=1, n_plain=16, n_birds=8, n_styled=16)
    sets = {k: es.render_set(v) for k, v in jobs.items()}
    again = es.measure_accuracy(a.net, sets, torch.device("cpu"))
    assert {h: again[h] for h in ev.HEADS} == {h: saved[h] for h in ev.HEADS}


def test_ignored_head_gets_no_gradient(tmp_path):
    """ignore_heads=("subclass",): a backbone that never sees subclass labels (bench/synthetic.py)."""
    config = ev.EvaluatorConfig(labels=ev.EvaluatorConfig.default().labels, **TINY)
    tr.train_evaluators(tmp_path, seconds=3, device="cpu", seed=1, n_train=40, n_eval=8, n_eval_birds=8,
                        n_eval_styled=8, batch_size=16, config=config, ignore_heads=("subclass",))
    options = json.loads((tmp_path / "training_options.json").read_text())
    assert options["options"]["ignore_heads"] == ["subclass"]
    net = ev.load_evaluator(tmp_path).net
    x = torch.zeros(2, 3, 64, 64)
    y = torch.full((2, len(ev.HEADS)), -1, dtype=torch.long)
    y[:, ev.HEADS.index("kind")] = 0
    tr._loss(net(x), y).backward()
    assert net.heads["subclass"].weight.grad.abs().sum() == 0 and net.heads["kind"].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown head"):
        tr.train_evaluators(tmp_path / "b", seconds=3, device="cpu", n_train=8, n_eval=4, n_eval_birds=4,
                            n_eval_styled=4, config=config, ignore_heads=("beak",))


def test_stop_ends_training_and_writes_what_it_has(tmp_path):
    config = ev.EvaluatorConfig(labels=ev.EvaluatorConfig.default().labels, **TINY)
    small = dict(seconds=30, device="cpu", seed=1, n_train=40, n_eval=8, n_eval_birds=8, n_eval_styled=8,
                 batch_size=16, config=config)
    polls = iter(range(1000))
    result = tr.train_evaluators(tmp_path / "a", run=Run(should_stop=lambda: next(polls) >= 4), **small)
    options = json.loads((tmp_path / "a" / "training_options.json").read_text())
    assert result["stopped"] and options["stopped_early"] and 1 <= options["steps"] <= 4
    assert "stopped" not in json.loads((tmp_path / "a" / "accuracy.json").read_text())
    assert tr.train_evaluators(tmp_path / "b", run=Run(should_stop=lambda: True), **small) == {"stopped": True}
    assert not (tmp_path / "b" / "evaluator.safetensors").exists()  # nothing trained, nothing written


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ev.load_evaluator(tmp_path)
    with pytest.raises(ValueError):
        tr.train_evaluators(tmp_path, seconds=5, precision="fp8")


def test_cli_parser_and_user_errors(tmp_path):
    from studio.commands import pretrain_evaluators

    parser = argparse.ArgumentParser()
    pretrain_evaluators.add_parser(parser.add_subparsers(dest="what"))
    args = parser.parse_args(["evaluators", "--out", str(tmp_path), "--seconds", "0"])
    with pytest.raises(ValueError):
        args.run(args)
    args = parser.parse_args(["evaluators", "--out", str(tmp_path), "--precision", "fp16"])
    with pytest.raises(ValueError):
        args.run(args)
    args = parser.parse_args(["evaluators"])
    assert args.out == ev.DEFAULT_FOLDER and args.n_train > 0 and args.device == "auto"


@pytest.mark.skipif(not (ev.DEFAULT_FOLDER / ev.WEIGHTS_FILE).is_file(), reason="no committed evaluator in assets/evaluators")
def test_committed_evaluator_accuracy():
    evaluator = ev.load_evaluator()
    samples = [miniworld.generate(es.EVAL_WORLD_SEED + 12345, i) for i in range(200)]
    pred = evaluator.predict([s.image for s in samples])
    for head in ("kind", "color", "background"):
        truth = [getattr(s.attributes, head) for s in samples]
        accuracy = np.mean([p == t for p, t in zip(pred[head], truth)])
        assert accuracy >= 0.9, (head, accuracy)
