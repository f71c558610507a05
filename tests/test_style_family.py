"""studio-mini 2's pretraining world: the style family, the product's caption forms, chunked resume."""

import numpy as np
import pytest
import torch

from generators import miniworld
from generators.sd_mini import style_family as sf


def test_components_are_seeded_distinct_groups_in_order_and_change_the_image():
    sample = miniworld.generate(3, 0, size=64, held_out=False, with_mask=True)
    image = sample.image
    for i in range(400):
        names = sf.sample_components(np.random.default_rng([1, i]))
        assert 1 <= len(names) <= 3 and sf.compatible(names)
        groups = [next(c.group for c in sf.COMPONENTS if c.name == n) for n in names]
        assert len(set(groups)) == len(groups)
        assert list(names) == sorted(names, key=sf.COMPONENT_NAMES.index)
    for c in sf.COMPONENTS:
        a = sf.apply_components(image, (c.name,), np.random.default_rng(5), sample.mask)
        b = sf.apply_components(image, (c.name,), np.random.default_rng(5), sample.mask)
        assert a.size == image.size and np.array_equal(np.asarray(a), np.asarray(b)), c.name
        assert np.abs(np.asarray(a, np.float32) - np.asarray(image, np.float32)).mean() > 1, c.name
    with pytest.raises(ValueError, match="unknown style components"):
        sf.apply_components(image, ("sepia",), np.random.default_rng(0))
    with pytest.raises(ValueError, match="with_mask=True"):
        sf.apply_components(image, ("black background",), np.random.default_rng(0))


def test_family_emphasis_shifts_the_mix_toward_its_components_and_rejects_unknown_names():
    from collections import Counter

    from generators.config import with_overrides
    from generators.sd_mini.config import MiniBaseConfig

    def shares(emphasis):
        counts = Counter(c for i in range(3000) for c in sf.sample_components(np.random.default_rng([2, i]), emphasis=emphasis))
        return {n: counts[n] / 3000 for n in sf.COMPONENT_NAMES}

    plain, weighted = shares(None), shares({"pixelated": 4, "dotted": 4})
    assert weighted["pixelated"] > 1.6 * plain["pixelated"] and weighted["dotted"] > 1.6 * plain["dotted"]
    assert weighted["blurry"] < plain["blurry"]  # the same group's other members give way
    assert shares({}) == plain  # empty: the uniform draw earlier bases were trained on, stream included
    for i in range(200):
        names = sf.sample_components(np.random.default_rng([3, i]), emphasis={"pixelated": 4})
        assert sf.compatible(names) and len({next(c.group for c in sf.COMPONENTS if c.name == n) for n in names}) == len(names)
    cfg = with_overrides(MiniBaseConfig(), ['family_emphasis={"posterized": 3}'])
    assert MiniBaseConfig.from_dict(cfg.to_dict()).family_emphasis == {"posterized": 3}
    with pytest.raises(ValueError, match="names no component"):
        MiniBaseConfig(family_emphasis={"pixel art": 2})
    with pytest.raises(ValueError, match="positive"):
        MiniBaseConfig(family_emphasis={"dotted": 0})


def test_a_background_replacement_keeps_the_object_and_overrides_the_named_background():
    plain = miniworld.generate(4, 2, size=64, held_out=False)
    sample = miniworld.generate(4, 2, size=64, held_out=False, with_mask=True)
    assert np.array_equal(np.asarray(plain.image), np.asarray(sample.image)) and plain.mask is None
    mask = sample.mask
    assert mask.shape == (64, 64) and 0 <= mask.min() and mask.max() <= 1
    assert 0.01 < (mask > 0.5).mean() < 0.9  # the object, not the scene
    out = np.asarray(sf.apply_components(sample.image, ("black background",), np.random.default_rng(0), mask), np.float32)
    src = np.asarray(sample.image, np.float32)
    assert np.array_equal(out[mask == 1], src[mask == 1])
    assert out[mask == 0].max() < 0.15 * 255
    assert not sf.compatible(("black background", "inverted colours")) and sf.compatible(("black background", "greyscale"))


def test_family_keeps_out_of_the_reference_styles():
    from styles.reference import REFERENCE_STYLES

    assert not set(sf.COMPONENT_NAMES) & set(REFERENCE_STYLES)


def test_product_captions_cover_the_prompt_forms_and_name_the_components():
    from generators.sd_mini.data import render_dataset

    images, captions = render_dataset(400, 9, 32, workers=1, bird_share=0.25, family_share=0.5, product_captions=True)
    assert images.shape == (400, 32, 32, 3)
    styled = [c for c in captions if c.rsplit(", ", 1)[-1] in sf.COMPONENT_NAMES]
    assert 0.45 < len(styled) / len(captions) <= 0.55
    subjects = [c.split(" on the ")[0].split(",")[0].split() for c in captions]
    assert any(s[-1] == "bird" and s[-2] in miniworld.BIRD_SUBCLASSES and s[1] not in miniworld.COLORS for s in subjects)
    assert any(s[-1] in sf.CATEGORY_WORDS for s in subjects)  # "a fish picture"
    no_colour = [c for c in captions if " background" in c and c.split()[1] not in miniworld.COLORS]
    assert len(no_colour) > 100  # the background followed without a colour word
    assert any(" on the " not in c for c in captions)  # DataDream's "a sparrow bird"
    with pytest.raises(ValueError, match="needs product_captions"):
        render_dataset(10, 0, 32, workers=1, family_share=0.5)


def test_a_chunk_resumes_exactly_from_its_train_state(tmp_path):
    from safetensors.torch import load_file

    from generators.sd_mini.pretrain import TRAIN_STATE, pretrain_base
    from tests.test_bases import TINY_BASE

    base = tmp_path / "base"
    campaign = {**TINY_BASE, "family_share": 0.5, "product_captions": True, "lr_schedule": "constant"}
    first = pretrain_base(base, campaign, vae_seconds=1, unet_seconds=1, device="cpu", workers=1)
    assert "pixelated" in first["tokens_added"] and "picture" in first["tokens_added"]
    state = load_file(base / TRAIN_STATE)
    assert int(state["global_step"]) == first["unet_steps"] == first["global_step"] > 0
    assert any(k.startswith("opt.") and k.endswith(".exp_avg_sq") for k in state)
    second = pretrain_base(base, None, unet_seconds=1, device="cpu", workers=1, resume=True)
    assert second["global_step"] == first["unet_steps"] + second["unet_steps"]
    adam_steps = [float(v) for k, v in load_file(base / TRAIN_STATE).items() if k.endswith(".step")]
    assert adam_steps and min(adam_steps) == second["global_step"]  # AdamW's moments carried over
    assert second["tokens_added"] == []  # the words were added once
    pretrain_base(base, None, unet_seconds=0, device="cpu", workers=1, resume=True)
    assert (base / TRAIN_STATE).is_file()  # a run without UNet steps keeps the state
    # the autoencoder trains on only when asked, anchored, keeping its scaling factor
    vae_before = load_file(base / "vae" / "diffusion_pytorch_model.safetensors")
    third = pretrain_base(base, None, vae_seconds=1, unet_seconds=1, device="cpu", workers=1, resume=True)
    vae_after = load_file(base / "vae" / "diffusion_pytorch_model.safetensors")
    assert third["vae_steps"] > 0 and any(not torch.equal(vae_before[k], vae_after[k]) for k in vae_before)
    assert third["latent_scaling_factor"] == first["latent_scaling_factor"]
    assert third["global_step"] == second["global_step"] + third["unet_steps"]
    with pytest.raises(ValueError, match="lr_schedule"):
        pretrain_base(tmp_path / "other", {**TINY_BASE, "lr_schedule": "linear"}, device="cpu")


def test_words_added_after_a_chunk_grow_its_train_state_and_keep_the_old_rows(tiny_pipeline_dir):
    from diffusers import StableDiffusionPipeline

    from generators.optim_state import load_optimizer
    from generators.sd_mini.models import add_style_words
    from generators.sd_mini.pretrain import grow_vocabulary_state, train_state_tensors

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir, safety_checker=None)
    unet, text = pipe.unet, pipe.text_encoder
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    ids = pipe.tokenizer(["a red fish"], return_tensors="pt").input_ids
    unet(torch.randn(1, unet.config.in_channels, 8, 8), 10, encoder_hidden_states=text(ids)[0]).sample.square().mean().backward()
    opt.step()
    state = train_state_tensors(unet, text, opt, 7)
    rows = text.get_input_embeddings().weight.shape[0]
    assert add_style_words(pipe.tokenizer, text, ["checkered"]) == ["checkered"]
    grown = grow_vocabulary_state(state, unet, text)
    assert grow_vocabulary_state(grown, unet, text) is grown  # once only
    text.load_state_dict({k[5:]: v for k, v in grown.items() if k.startswith("text.")})
    weight = text.get_input_embeddings().weight
    assert weight.shape[0] == rows + 1
    name = next(n for n, p in text.named_parameters() if p is weight)
    assert torch.equal(weight[:rows], state[f"text.{name}"])
    opt = torch.optim.AdamW(list(unet.parameters()) + list(text.parameters()), lr=1e-3)
    load_optimizer(opt, list(unet.parameters()) + list(text.parameters()), grown, "opt.")
    moment = opt.state[weight]["exp_avg"]
    assert moment.shape == weight.shape and not moment[rows:].any() and moment[:rows].any()


def test_sigterm_ends_a_chunk_cleanly_with_its_state(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from generators.sd_mini.pretrain import TRAIN_STATE
    from tests.test_bases import TINY_BASE

    out, log = tmp_path / "base", tmp_path / "log.jsonl"
    sets = [arg for k, v in TINY_BASE.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    cmd = [sys.executable, "-m", "studio", "pretrain", "base", "--out", str(out), "--vae-seconds", "1",
           "--unet-seconds", "600", "--device", "cpu", "--workers", "1", "--log", str(log), *sets]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and '"stage": "unet"' in log.read_text()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()[-2000:]
    options = json.loads((out / "training_options.json").read_text())
    assert options["finished"] and options["unet_steps"] >= 100 and (out / TRAIN_STATE).is_file()


def test_family_head_trains_measures_and_resumes(tmp_path):
    import json

    from generators.sd_mini import family_head

    from generators.run import Run

    calls = []
    acc = family_head.train(tmp_path / "head", seconds=2, batch=8, n_eval=32,
                            run=Run(progress=lambda done, total, **info: calls.append((done, total))))
    assert {t for _, t in calls} == {2} and calls[-1] == (2, 2) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert set(acc) >= {"detail_accuracy", "outline_accuracy", "exact_accuracy", "named_component_recall"}
    head = family_head.load(tmp_path / "head")
    assert set(head.config.labels) == set(sf.GROUPS)
    array, names = family_head.render(family_head.EVAL_SEED, 3)
    predicted = head.predict([__import__("PIL.Image", fromlist=["Image"]).fromarray(array)])
    assert family_head.components_found(predicted, 0) <= set(sf.COMPONENT_NAMES)
    stopped = family_head.train(tmp_path / "head", seconds=60, batch=8, resume=True, n_eval=32,
                                run=Run(should_stop=lambda: True))
    assert stopped["stopped"]  # a stop before the first step still measures and writes the head
    family_head.train(tmp_path / "head", seconds=1, batch=8, resume=True, n_eval=32)
    options = json.loads((tmp_path / "head" / "training_options.json").read_text())
    assert len(options["history"]) == 2 and options["images_seen_total"] > options["images_seen"]


def test_a_family_head_resumes_onto_a_grown_family(tmp_path):
    import json
    from dataclasses import replace

    from generators.evaluators import EvaluatorNet, save_evaluator
    from generators.sd_mini import family_head

    config = family_head.head_config()
    older = replace(config, labels={g: v for g, v in config.labels.items() if g != "backdrop"})  # before the backdrops
    save_evaluator(EvaluatorNet(older), tmp_path / "head")
    (tmp_path / "head" / "training_options.json").write_text(json.dumps({"images_seen": 0}))
    acc = family_head.train(tmp_path / "head", seconds=1, batch=8, resume=True, n_eval=16)
    options = json.loads((tmp_path / "head" / "training_options.json").read_text())
    assert sorted(options["started_fresh"]) == ["heads.backdrop.bias", "heads.backdrop.weight"]
    assert "backdrop_accuracy" in acc and set(family_head.load(tmp_path / "head").config.labels) == set(sf.GROUPS)
