"""Lifelong few-shot GAN (LFS-GAN): LeFT modulators, cluster-wise mode seeking, the task store and its CLI.

Everything runs on a tiny random base (16 px) saved to a temporary folder; of the trained gan-mini
only its config is read (the storage bound).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch

from generators import miniworld
from generators.gan.left import (
    LeFTConfig,
    LeFTConv,
    LeFTLinear,
    attach_left,
    bake,
    count_left_parameters,
    detach_left,
    left_modules,
    left_parameters,
)
from generators.gan.folder import read_config, save_discriminator, save_generator
from generators.gan.lifelong import learn_task, load_task_generator, read_task_images, sample_task
from generators.gan.mode_seeking import (
    ModeSeekingConfig,
    PixelDistance,
    assign_clusters,
    cluster_pairs,
    mode_seeking_loss,
)
from generators.gan.sampling import seeded_z
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator, count_params
from generators.gan.task_store import MODULATORS_FILE, TASK_FILE, list_tasks
from generators.gan.task_trainer import TrainConfig
from generators.run import Run
from styles.reference import apply_style

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TINY = GANConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channels=(16, 16, 8))
PIXEL_MS = ModeSeekingConfig(distance="pixel")


def fast_train(**kw) -> TrainConfig:
    opts = dict(iters=4, batch=4, checkpoint_every=2, r1_interval=2, w_avg_samples=64)
    opts.update(kw)
    return TrainConfig(**opts)


def tiny_g(seed=0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(TINY).eval()
    with torch.no_grad():  # non-zero noise strengths and biases, so those paths matter
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.normal_(0, 0.1)
    return G.requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan-base")
    G = tiny_g()
    save_generator(G, TINY, root)
    torch.manual_seed(1)
    save_discriminator(Discriminator(TINY), TINY, root)
    return root


def task_folder(root: Path, style: str, n: int = 10, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        apply_style(style, miniworld.generate(seed, i, size=32).image, seed=i).save(root / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan-tasks")
    return {s: task_folder(root / s, s, seed=k) for k, s in enumerate(("pixel_art", "sepia", "thermal"))}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- LeFT


@pytest.mark.parametrize("rank", [1, 3])
def test_identity_at_init_and_bake(rank):
    G = tiny_g()
    z = seeded_z(6, TINY.z_dim, 3)
    with torch.no_grad():
        base = G(z)
        base_train = G.train()(z, noise_mode="const")
        G.eval()
    mods = attach_left(G, LeFTConfig(rank=rank))
    # every conv / FC of G: mapping FCs, style affines, synthesis convs, toRGB
    assert set(mods) == {n for n, _ in G.named_modules() if n and hasattr(G.get_submodule(n), "effective_weight")}
    assert any(n.startswith("mapping.fcs") for n in mods) and any(n.endswith(".affine") for n in mods)
    assert any(n.endswith("torgb") for n in mods) and any(n.endswith("conv0") for n in mods)
    with torch.no_grad():
        assert torch.equal(G(z), base)  # fused path, bitwise
        assert torch.equal(G.train()(z, noise_mode="const"), base_train)  # unfused path
        G.eval()
        assert torch.equal(bake(G)(z), base)
    detach_left(G)
    with torch.no_grad():
        assert torch.equal(G(z), base)


def test_multiplier_is_tucker_reconstruction_through_relu():
    cfg = LeFTConfig(rank=2)
    m = LeFTConv(5, 4, 3, cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    # M[o, c, s] = Σ_i A_in[c, i] relu(Σ_j A_out[o, j] G[i, j, s] + add1[o, s])   (docs/methods.md §2.1)
    add1 = m.add1_out @ m.add1_k.T
    inner = torch.einsum("oj,ijs->ios", m.a_out, m.core) + add1[None]
    expect = torch.einsum("ci,ios->ocs", m.a_in, torch.relu(inner)).reshape(5, 4, 3, 3)
    assert torch.allclose(m.multiplier(), expect, atol=1e-5)
    add = torch.einsum("ijs,ci,oj->ocs", m.add_core, m.add_in, m.add_out).reshape(5, 4, 3, 3)
    assert torch.allclose(m.additive_term(), add, atol=1e-5)
    fc = LeFTLinear(5, 4, cfg, has_bias=True, generator=torch.Generator().manual_seed(0))
    w = torch.randn(5, 4)
    assert torch.equal(fc(w), w * (fc.u @ fc.v.T) + fc.weight_rms * (fc.p @ fc.q.T))


def test_additive_branch_trains():
    G = tiny_g().train()
    attach_left(G, LeFTConfig(rank=1))
    params = left_parameters(G)
    opt = torch.optim.Adam(params, lr=0.002, betas=(0.0, 0.99))
    target = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def grads():
        opt.zero_grad(set_to_none=True)
        img, _ = G.synthesis(G.mapping(seeded_z(4, TINY.z_dim, 1)), noise_mode="const", return_features=True)
        ((img - target) ** 2).mean().backward()
        return {(name, k): p.grad for name, mod in left_modules(G).items() for k, p in mod.named_parameters()}

    g0 = grads()
    # at the start the zero-initialised factor of every additive term already has a gradient
    for (name, k), g in g0.items():
        if k in ("add_out", "add1_out", "p", "b_add"):
            assert g is not None and g.abs().sum() > 0, (name, k)
    opt.step()
    g1 = grads()
    additive = ("add_out", "add_in", "add_core", "add1_out", "add1_k", "p", "q", "b_add")
    seen = set()
    for (name, k), g in g1.items():
        assert g is not None and torch.isfinite(g).all(), (name, k)
        if k in additive:
            seen.add(k)
            assert g.abs().sum() > 0, f"additive factor {name}.{k} gets no gradient after one step"
        else:
            assert g.abs().sum() > 0, f"multiplicative factor {name}.{k} gets no gradient"
    assert seen == set(additive)
    # and the additive terms are no longer zero
    mods = left_modules(G)
    assert all(m.additive_term().abs().sum() > 0 for m in mods.values())


@pytest.mark.parametrize("config", ["default", "committed gan-mini"])
def test_storage_at_rank_one_is_under_one_percent_of_the_generator(config):
    G = Generator(GANConfig() if config == "default" else read_config(ASSETS / "gan-mini"))
    attach_left(G, LeFTConfig(rank=1))
    base = sum(p.numel() for n, p in G.named_parameters() if "weight_modulator" not in n)
    stored = count_left_parameters(G) + G.w_dim  # + the task's w_avg
    assert stored / base <= 0.01, stored / base


# --------------------------------------------------------------------------- mode seeking


def test_mode_seeking_compares_pairs_inside_each_cluster():
    # three real images (flat grey levels) and six fakes near them: clusters {0: [1, 5], 1: [3], 2: [0, 2, 4]}
    reals = torch.stack([torch.full((3, 8, 8), v) for v in (-0.8, 0.0, 0.8)])
    near = [2, 0, 2, 1, 2, 0]
    fakes = torch.stack([reals[c] + 0.01 * (i + 1) for i, c in enumerate(near)])
    assignment = assign_clusters(PixelDistance(reals)(fakes))
    assert assignment.tolist() == near
    pairs = cluster_pairs(assignment)
    assert sorted(pairs) == [(0, 1, 5), (2, 0, 2), (2, 0, 4), (2, 2, 4)]
    # never the released code's "first |C| samples of the batch" (it would compare (0, 1), (0, 2), (1, 2), ...)
    assert all(assignment[p] == assignment[q] == c for c, p, q in pairs)

    # the loss uses exactly those pairs: L = 1 / (S + eps), S = (1/K) Σ pairs [...]
    z = torch.randn(6, 4)
    w = torch.randn(6, 5)
    feats = [torch.randn(6, 2, 4, 4), torch.randn(6, 3, 2, 2)]
    loss, info = mode_seeking_loss(z, w, feats, fakes, assignment, weight=1.0, eps=1e-5)
    d = lambda a, b: (a - b).abs().mean()  # noqa: E731
    s = 0.0
    for _, p, q in pairs:
        s += d(w[p], w[q]) / d(z[p], z[q])
        s += sum(d(f[p], f[q]) / d(w[p], w[q]) for f in feats) / len(feats)
        s += d(fakes[p], fakes[q]) / d(w[p], w[q])
    s = s / 2  # K = 2 clusters with at least two members
    assert info == {"S": pytest.approx(float(s), rel=1e-5), "clusters": 2, "pairs": 4}
    assert torch.allclose(loss, 1.0 / (s + 1e-5), rtol=1e-5)
    # no cluster with two members: no loss
    none, info = mode_seeking_loss(z[:3], w[:3], feats, fakes[:3], torch.tensor([0, 1, 2]))
    assert none is None and info["pairs"] == 0


def test_perceptual_distance_matrix_matches_evaluator():
    evaluators = Path(__file__).resolve().parents[1] / "assets" / "evaluators" / "evaluator.safetensors"
    if not evaluators.is_file():
        pytest.skip("no committed evaluators")
    from generators.evaluators import load_evaluator
    from generators.gan.mode_seeking import PerceptualDistance

    ev = load_evaluator()
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1, torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    m = PerceptualDistance(ev, b)(a)
    for i in range(3):
        ref = ev.perceptual_distance(a[i:i + 1].expand(4, -1, -1, -1), b)
        assert torch.allclose(m[i], ref, atol=1e-4)


# --------------------------------------------------------------------------- tasks


def test_zero_forgetting_across_tasks(tiny_base, folders, tmp_path):
    store = tmp_path / "store"
    base_sha = sha(tiny_base / "generator.safetensors")
    m1 = learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=fast_train(), mode_seeking=PIXEL_MS)
    assert m1["index"] == 1 and len(m1["images"]) == 10
    before = sample_task(store, "pixel", n=6, seed=11)
    files_before = {p.name: sha(p) for p in (store / "tasks" / "pixel").iterdir()}
    has_evaluators = (Path(__file__).resolve().parents[1] / "assets" / "evaluators" / "evaluator.safetensors").is_file()
    ms = ModeSeekingConfig() if has_evaluators else PIXEL_MS  # the default: perceptual assignment
    m2 = learn_task(store, "sepia", folders["sepia"], train=fast_train(seed=1), mode_seeking=ms)
    assert m2["config"]["mode_seeking"]["distance"] == ms.distance and m2["index"] == 2
    learn_task(store, "thermal", folders["thermal"], train=fast_train(seed=2),
               mode_seeking=ModeSeekingConfig(enabled=False))
    after = sample_task(store, "pixel", n=6, seed=11)
    assert torch.equal(before, after)  # bitwise
    assert {p.name: sha(p) for p in (store / "tasks" / "pixel").iterdir()} == files_before
    assert sha(tiny_base / "generator.safetensors") == base_sha
    # tasks differ from each other and from the base
    other = sample_task(store, "sepia", n=6, seed=11)
    assert not torch.equal(other, after)
    assert [t["name"] for t in list_tasks(store)] == ["pixel", "sepia", "thermal"]
    assert not (store / "work").exists()


def test_task_files_storage_and_baked_sampling(tiny_base, folders, tmp_path):
    from safetensors.torch import load_file

    store = tmp_path / "store"
    meta = learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=fast_train(), mode_seeking=PIXEL_MS)
    saved = json.loads((store / "tasks" / "pixel" / TASK_FILE).read_text())
    assert saved == json.loads(json.dumps(meta))
    tensors = load_file(str(store / "tasks" / "pixel" / MODULATORS_FILE))
    n = sum(t.numel() for t in tensors.values())
    assert meta["storage"]["params"] == n
    assert meta["storage"]["base_params"] == count_params(tiny_g())
    assert meta["storage"]["percent_of_G"] == pytest.approx(100 * n / meta["storage"]["base_params"], abs=1e-3)
    assert set(meta["config"]) == {"left", "mode_seeking", "train", "gan"}
    assert meta["discriminator"].startswith("fine-tuned from the base")
    assert {"setup_s", "train_s", "s_per_iter"} <= set(meta["timings"]) and "loss_G" in meta["losses"]
    # baked = modulated, and the baked generator is a plain Generator of the base's shape (same sampling cost)
    baked, _ = load_task_generator(store, "pixel")
    hooked, _ = load_task_generator(store, "pixel", baked=False)
    z = seeded_z(5, TINY.z_dim, 2)
    with torch.no_grad():
        assert torch.equal(baked(z), hooked(z))
    assert type(baked) is Generator and not left_modules(baked)
    base = tiny_g()
    assert [(n, p.shape) for n, p in baked.named_parameters()] == [(n, p.shape) for n, p in base.named_parameters()]


def test_resume_after_kill_equals_uninterrupted(tiny_base, folders, tmp_path):
    train = fast_train(iters=6, checkpoint_every=2)
    ref = learn_task(tmp_path / "a", "pixel", folders["pixel_art"], base=tiny_base, train=train, mode_seeking=PIXEL_MS)

    class Killed(Exception):
        pass

    calls = {"n": 0}

    def kill_at_iteration_4():  # polled before each iteration: dies after 3 (last checkpoint at 2)
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed

    store = tmp_path / "b"
    with pytest.raises(Killed):
        learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=train, mode_seeking=PIXEL_MS,
                   run=Run(should_stop=kill_at_iteration_4))
    assert not (store / "tasks" / "pixel").exists()
    assert json.loads((store / "work" / "pixel" / "checkpoint.json").read_text())["step"] == 2
    # a clean stop (Ctrl-C) checkpoints where it is
    stopped = learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=train, mode_seeking=PIXEL_MS,
                         run=Run(should_stop=iter([False, True]).__next__))
    assert stopped["stopped"] and stopped["step"] == 3
    # other options cannot resume it
    with pytest.raises(ValueError, match="other images or options"):
        learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=fast_train(iters=6, seed=5),
                   mode_seeking=PIXEL_MS)
    meta = learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=train, mode_seeking=PIXEL_MS)
    assert meta["timings"]["runs"] == 3
    assert torch.equal(sample_task(store, "pixel", 4, seed=0), sample_task(tmp_path / "a", "pixel", 4, seed=0))
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "tasks" / "pixel" / MODULATORS_FILE))
    b = load_file(str(store / "tasks" / "pixel" / MODULATORS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ref["losses"]["step"] == meta["losses"]["step"] == 6
    assert not (store / "work").exists()


def test_bad_input_stores_nothing(tiny_base, folders, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"not a png")
    (junk / "notes.pdf").write_bytes(b"%PDF")
    apply_style("sepia", miniworld.generate(0, 0, size=32).image).save(junk / "only.png")
    store = tmp_path / "store"
    with pytest.raises(ValueError, match=r"has 1 usable images, needs at least 2.*a.png: not a readable image"):
        learn_task(store, "junk", junk, base=tiny_base, train=fast_train(), mode_seeking=PIXEL_MS)
    assert not store.exists()
    with pytest.raises(FileNotFoundError, match=r"^no GAN base at nowhere/gan; train one with `studio pretrain gan` "
                                                r"or pass --base$"):
        learn_task(store, "x", folders["sepia"], base="nowhere/gan")
    with pytest.raises(ValueError, match="task name"):
        learn_task(store, "Bad Name", folders["sepia"], base=tiny_base)
    with pytest.raises(FileNotFoundError, match="task folder"):
        learn_task(store, "x", tmp_path / "missing", base=tiny_base)
    assert not store.exists()
    # a usable folder with some junk: learns from the good images, lists the rejected ones
    mixed = task_folder(tmp_path / "mixed", "sepia", n=3)
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8junk")
    meta = learn_task(store, "mixed", mixed, base=tiny_base, train=fast_train(iters=2), mode_seeking=PIXEL_MS)
    assert len(meta["images"]) == 3 and [r[0] for r in meta["rejected"]] == ["broken.jpg"]
    with pytest.raises(FileExistsError, match="already in store"):
        learn_task(store, "mixed", mixed, base=tiny_base, train=fast_train(iters=2), mode_seeking=PIXEL_MS)
    other = tmp_path / "other-base"
    save_generator(tiny_g(seed=5), TINY, other)
    with pytest.raises(ValueError, match="built on another base"):
        learn_task(store, "y", mixed, base=other, train=fast_train(iters=2), mode_seeking=PIXEL_MS)
    with pytest.raises(FileNotFoundError, match="no task 'nope'"):
        sample_task(store, "nope", 2)


def test_images_are_validated_and_normalised(folders):
    x, used, rejected = read_task_images(folders["sepia"], 16)
    assert x.shape == (10, 3, 16, 16) and x.min() >= -1 and x.max() <= 1 and not rejected
    assert [u["file"] for u in used] == [f"{i:02d}.png" for i in range(10)]


# --------------------------------------------------------------------------- the run seam (generators/run.py)


class Listener:
    """A Run whose callables record what learn_task reports; should_stop() is true at poll number `stop_at`."""

    def __init__(self, preview_every: int = 0, stop_at: int | None = None):
        self.progress, self.previews, self.lines, self.polls, self.stop_at = [], [], [], 0, stop_at
        self.run = Run(progress=lambda done, total, **info: self.progress.append((done, total)),
                       should_stop=self.should_stop, preview_every=preview_every, log=self.lines.append,
                       preview=lambda step, images, captions: self.previews.append((step, images, captions)))

    def should_stop(self) -> bool:
        self.polls += 1
        return self.polls == self.stop_at


def check_progress(calls: list, total: int, last: int) -> None:
    """run.py: total > 0 and fixed for the call; done ints, non-decreasing, ending at `last`."""
    assert calls and {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert all(isinstance(d, int) for d in done) and done == sorted(done) and done[-1] == last


SEAM_ITERS = 6
SEAM_CASES = {  # name: (preview_every, should_stop true at poll, the steps previews arrive at)
    "progress only": (0, None, []),
    "previews every 2": (2, None, [2, 4]),  # none at the last iteration: the finished task's samples stand for it
    "previews every 4": (4, None, [4]),
    "stopped after 3 iterations, resumed": (2, 4, [2, 4]),  # polled before every iteration
}


@pytest.fixture(scope="module")
def uninterrupted(tiny_base, folders, tmp_path_factory):
    """The modulators of a task learnt without a Run, with the seam cases' options."""
    from safetensors.torch import load_file

    store = tmp_path_factory.mktemp("seam-reference")
    learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=fast_train(iters=SEAM_ITERS),
               mode_seeking=PIXEL_MS)
    return load_file(str(store / "tasks" / "pixel" / MODULATORS_FILE))


@pytest.mark.parametrize("case", SEAM_CASES)
def test_learn_task_run_seam(case, tiny_base, folders, tmp_path, uninterrupted):
    from PIL import Image
    from safetensors.torch import load_file

    from generators.gan.sampling import PREVIEW_N

    preview_every, stop_at, preview_steps = SEAM_CASES[case]
    store, train = tmp_path / "store", fast_train(iters=SEAM_ITERS)
    first = Listener(preview_every, stop_at)
    result = learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=train, mode_seeking=PIXEL_MS,
                        run=first.run)
    listeners = [first]
    if stop_at is not None:
        done = stop_at - 1
        assert result == {"stopped": True, "step": done, "iters": SEAM_ITERS, "work": str(store / "work" / "pixel")}
        check_progress(first.progress, SEAM_ITERS, done)
        assert json.loads((store / "work" / "pixel" / "checkpoint.json").read_text())["step"] == done
        resumed = Listener(preview_every)
        result = learn_task(store, "pixel", folders["pixel_art"], base=tiny_base, train=train, mode_seeking=PIXEL_MS,
                            run=resumed.run)
        assert resumed.progress[0][0] == done + 1
        assert any(f"at iteration {done}/{SEAM_ITERS}" in line for line in resumed.lines)
        listeners.append(resumed)
    check_progress(listeners[-1].progress, SEAM_ITERS, SEAM_ITERS)
    assert "stopped" not in result and result["timings"]["runs"] == len(listeners)
    previews = [p for listener in listeners for p in listener.previews]
    assert [step for step, _, _ in previews] == preview_steps
    for step, images, captions in previews:
        assert len(images) == len(captions) == PREVIEW_N and set(captions) == {f"iteration {step}"}
        assert all(isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (16, 16) for im in images)
    # previews, a stop and a resume leave the training alone: the modulators of a run without a Run
    mods = load_file(str(store / "tasks" / "pixel" / MODULATORS_FILE))
    assert mods.keys() == uninterrupted.keys() and all(torch.equal(mods[k], uninterrupted[k]) for k in mods)


# --------------------------------------------------------------------------- CLI


def run_cli(argv) -> int:
    """studio's main() with the gan command registered (as studio/commands wires it)."""
    from studio.cli import USER_ERRORS
    from studio.commands import gan

    parser = argparse.ArgumentParser(prog="studio")
    sub = parser.add_subparsers(dest="command", required=True)
    gan.register(sub)
    args = parser.parse_args([str(a) for a in argv])
    try:
        return args.run(args) or 0
    except USER_ERRORS as err:
        print(f"studio: error: {err}")
        return 2


def test_cli_learn_sample_tasks(tiny_base, folders, tmp_path, capsys):
    store, out = tmp_path / "store", tmp_path / "out"
    assert run_cli(["gan", "learn", folders["pixel_art"], "--task", "pixel", "--store", store, "--iters", "3",
                    "--base", tiny_base, "--ms-distance", "pixel", "--checkpoint-every", "2"]) == 0
    text = capsys.readouterr().out
    assert "learnt task pixel (#1)" in text and "% of G" in text
    assert run_cli(["gan", "sample", "--task", "pixel", "--store", store, "--n", "3", "--seed", "4", "--out", out]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"pixel-seed4-{i:04d}.png" for i in range(3)]
    from PIL import Image

    assert Image.open(pngs[0]).size == (16, 16)
    capsys.readouterr()
    assert run_cli(["gan", "tasks", "--store", store, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in data["tasks"]] == ["pixel"] and data["tasks"][0]["storage_params"] > 0
    assert run_cli(["gan", "tasks", "--store", tmp_path / "nostore"]) == 2
    assert "no task store at" in capsys.readouterr().out
    assert run_cli(["gan", "learn", folders["sepia"], "--task", "s", "--store", tmp_path / "s2",
                    "--base", tmp_path / "nobase"]) == 2
    assert f"no GAN base at {tmp_path / 'nobase'}; train one with `studio pretrain gan` or pass --base" in \
        capsys.readouterr().out
