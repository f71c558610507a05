"""The museum on a tiny pipeline: a task end to end, its losses, exports in stock diffusers and resume
(tests/test_museum_files.py: style folders in, the ingest command, kills mid-ingest)."""

import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from generators import diffusion, miniworld
from generators.museum import losses
from generators.museum.config import MuseumConfig
from generators.museum.engine import learn, load_museum_pipeline
from generators.museum.export import export_style
from generators.run import Run
from styles.folder import read_style_folder
from styles.museum import Museum
from styles.reference import apply_style


def make_style_folder(root, style, n=4, seed=0, captions=True):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = miniworld.generate(seed, i)
        apply_style(style, s.image, seed=i).save(root / f"{i:03d}.png")
        if captions:
            (root / f"{i:03d}.txt").write_text(s.attributes.caption)
    return root


def stop_after(steps: int):
    """A should_stop() that turns true once `steps` training steps have run (it is asked once per step)."""
    calls = itertools.count(1)
    return lambda: next(calls) > steps


def tiny_cfg(**kw):
    """Small sizes, and every loss term on (the weight term too, which the defaults leave off), so
    each term's code runs in these tests."""
    return MuseumConfig(**{"steps": 6, "batch_size": 2, "replay_pool": 4, "replay_batch": 2, "sample_steps": 2,
                           "checkpoint_every": 2, "use_weight_reg": True, **kw})


@pytest.fixture
def museum_two_styles(tiny_pipeline_dir, tmp_path):
    museum = Museum.open(tmp_path / "m", base=str(tiny_pipeline_dir), create=True)
    for k, style in enumerate(["sepia", "pixel_art"]):
        folder = make_style_folder(tmp_path / "in" / style, style, seed=k)
        learn(museum, read_style_folder(folder, 32), tiny_cfg(), str(tiny_pipeline_dir), "cpu")
    return museum


def test_task_end_to_end_and_museum_layout(museum_two_styles):
    m = museum_two_styles
    assert [s.name for s in m.styles] == ["sepia", "pixel_art"]
    assert [s.task for s in m.styles] == [1, 2]
    assert sorted(p.name for p in (m.root / "lora").iterdir()) == ["task-002.safetensors"]
    man = m.manifest("pixel_art")
    assert man["token"] == "<pixel_art>" and len(man["images"]) == 4 and man["config"]["steps"] == 6
    assert set(man["result"]["loss_terms"]) == {"diff", "sdl", "weight", "feature"}
    assert list(m.embedding("sepia")) == ["<sepia>"]
    index = json.loads((m.root / "museum.json").read_text())
    assert index["base"] == m.base


def test_one_shared_lora_whatever_the_number_of_styles(tiny_pipeline_dir, tmp_path):
    """Storage per style is its token: each task's LoRA state replaces the last one, and a museum
    written when every task's state was kept loses the older ones at its next task."""
    museum = Museum.open(tmp_path / "m", base=str(tiny_pipeline_dir), create=True)
    states, sizes = [], []
    for k, style in enumerate(["sepia", "pixel_art", "halftone"]):
        if k == 2:  # the former layout: every earlier state beside the latest
            shutil.copy(museum.lora_path(2), museum.lora_path(1))
        learn(museum, read_style_folder(make_style_folder(tmp_path / "in" / style, style, seed=k), 32), tiny_cfg(),
              str(tiny_pipeline_dir), "cpu")
        states.append(museum.lora_state())
        sizes.append(sum(f.stat().st_size for f in (museum.root / "lora").iterdir()))
        assert [p.name for p in (museum.root / "lora").iterdir()] == [f"task-{k + 1:03d}.safetensors"]
    assert sizes[0] == sizes[1] == sizes[2]
    assert any(not torch.equal(states[0][key], states[1][key]) for key in states[0])  # the shared LoRA moved


def test_museum_refuses_another_base(museum_two_styles, tmp_path):
    with pytest.raises(ValueError, match="was built on base"):
        Museum.open(museum_two_styles.root, base="studio-mini")


def test_museum_refuses_a_base_retrained_with_other_layer_widths(museum_two_styles, tiny_pipeline_dir, tmp_path):
    """The base's name is the museum's, but its UNet was rebuilt wider (a campaign's new layout):
    the shared LoRA cannot fit, and the museum says so in one line instead of a shape error."""
    from dataclasses import replace

    from generators.errors import UserError
    from generators.museum.engine import lora_misfit
    from generators.sd_mini.config import MiniBaseConfig
    from generators.sd_mini.models import build_unet

    state = museum_two_styles.lora_state()
    pipe = diffusion.load_base(str(tiny_pipeline_dir), "cpu")
    assert lora_misfit(pipe.unet, state) is None
    assert "has no layer down_blocks.9" in lora_misfit(pipe.unet, {"unet.down_blocks.9.attn.to_q.lora_A.weight": torch.zeros(4, 32)})

    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_pipeline_dir, retrained)
    cfg = replace(MiniBaseConfig(), resolution=32, unet_channels=(48, 48, 48), text_width=32, unet_heads=2)
    shutil.rmtree(retrained / "unet")
    build_unet(cfg).save_pretrained(retrained / "unet")
    with pytest.raises(UserError, match="shared LoRA does not fit") as err:
        load_museum_pipeline(museum_two_styles, str(retrained), "cpu")
    assert "width 48 in the base and 32 in the LoRA" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="shared LoRA does not fit"):  # nor does a new task start on it
        learn(museum_two_styles, read_style_folder(make_style_folder(tmp_path / "in" / "halftone", "halftone"), 32),
              tiny_cfg(), str(retrained), "cpu")


@pytest.mark.parametrize("switch, term", [("use_sdl", "sdl"), ("use_weight_reg", "weight"), ("use_feature_reg", "feature"),
                                          (None, "weight")])
def test_each_loss_term_switches_off(museum_two_styles, tiny_pipeline_dir, tmp_path, switch, term):
    """Every term on, one off; (None, "weight"): the defaults, where the weight term is off."""
    folder = make_style_folder(tmp_path / "in3" / "halftone", "halftone", seed=5)
    cfg = tiny_cfg(**{switch: False}) if switch else tiny_cfg(use_weight_reg=MuseumConfig().use_weight_reg)
    manifest = learn(museum_two_styles, read_style_folder(folder, 32), cfg, str(tiny_pipeline_dir), "cpu")
    assert term not in manifest["result"]["loss_terms"]
    assert {"diff", "sdl", "weight", "feature"} - {term} == set(manifest["result"]["loss_terms"])


@torch.no_grad()
def _plain_prompt_drift(museum, base, captions) -> float:
    """Mean squared change of the UNet's noise prediction on plain captions (no style token),
    the museum's latest LoRA against the base, on fixed noisy latents."""
    outs = []
    for lora in (False, True):
        pipe = load_museum_pipeline(museum, base, "cpu", lora=lora)
        ids = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        g = torch.Generator().manual_seed(0)
        size = diffusion.base_resolution(pipe) // pipe.vae_scale_factor
        z = torch.randn(len(captions), pipe.unet.config.in_channels, size, size, generator=g)
        t = torch.full((len(captions),), 500)
        outs.append(pipe.unet(z, t, encoder_hidden_states=pipe.text_encoder(ids)[0]).sample)
    return float((outs[0] - outs[1]).pow(2).mean())


def test_preserve_base_keeps_plain_prompts_where_the_base_had_them(tiny_pipeline_dir, tmp_path):
    """The base's plain prompts join the feature term's replay from the first task on, so the
    style goes behind its token instead of restyling every prompt."""
    folder = make_style_folder(tmp_path / "in" / "neon_glow", "neon_glow", n=4)
    style = read_style_folder(folder, 32)
    drift = {}
    for preserve in (True, False):
        museum = Museum.open(tmp_path / f"m{preserve}", base=str(tiny_pipeline_dir), create=True)
        cfg = tiny_cfg(preserve_base=preserve, steps=30, lora_lr=1e-2, replay_share=1.0, lambda_f=10.0)
        manifest = learn(museum, style, cfg, str(tiny_pipeline_dir), "cpu")
        assert ("feature" in manifest["result"]["loss_terms"]) is preserve
        drift[preserve] = _plain_prompt_drift(museum, str(tiny_pipeline_dir), [im.caption for im in style.images])
    assert drift[True] < 0.5 * drift[False], drift
    # the base's replay samples weighted 0: the term runs on them and holds nothing
    museum = Museum.open(tmp_path / "m-w0", base=str(tiny_pipeline_dir), create=True)
    learn(museum, style, tiny_cfg(steps=30, lora_lr=1e-2, replay_share=1.0, lambda_f=10.0, replay_base_weight=0.0),
          str(tiny_pipeline_dir), "cpu")
    assert _plain_prompt_drift(museum, str(tiny_pipeline_dir), [im.caption for im in style.images]) > 2 * drift[True]


def test_weighted_feature_loss_is_the_plain_mean_at_weight_one():
    student, teacher = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    plain = losses.feature_distillation_loss(student, teacher)
    assert torch.allclose(losses.feature_distillation_loss(student, teacher, torch.ones(4)), plain)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0])
    per_sample = (student - teacher).pow(2).flatten(1).mean(1)
    assert torch.allclose(losses.feature_distillation_loss(student, teacher, w), (per_sample * w).sum() / 4)


def test_content_prompts_keep_other_plain_prompts_when_a_folder_has_no_captions(tiny_pipeline_dir, tmp_path):
    """Without captions the base's replay holds one prompt, "a picture"; base_replay_prompts adds
    content prompts, so plain prompts of content the style images never showed drift less."""
    from generators.museum.train import content_prompts

    assert content_prompts(5, 0) == content_prompts(5, 0) and len(set(content_prompts(5, 0))) == 5
    style = read_style_folder(make_style_folder(tmp_path / "in" / "neon_glow", "neon_glow", n=4, captions=False), 32)
    assert all(im.caption is None for im in style.images)
    held_out = content_prompts(8, seed=99)  # not the replay's prompts (seed 0)
    drift = {}
    for n in (0, 32):
        museum = Museum.open(tmp_path / f"m{n}", base=str(tiny_pipeline_dir), create=True)
        cfg = tiny_cfg(steps=30, lora_lr=1e-2, replay_share=1.0, lambda_f=10.0, replay_pool=32, base_replay_prompts=n)
        learn(museum, style, cfg, str(tiny_pipeline_dir), "cpu")
        drift[n] = _plain_prompt_drift(museum, str(tiny_pipeline_dir), held_out)
    assert drift[32] < 0.7 * drift[0], drift


@pytest.mark.parametrize("options, atol", [
    ({"gradient_checkpointing": True}, 1e-5),  # recomputation changes memory, not the result
    ({"precision": "bf16"}, 5e-2),  # autocast: the LoRA stays fp32 and lands near the fp32 run
])
def test_memory_options_train_the_same_style(museum_two_styles, tiny_pipeline_dir, tmp_path, options, atol):
    folder = make_style_folder(tmp_path / "in3" / "halftone", "halftone", seed=5)
    style = read_style_folder(folder, 32)
    museums = []
    for name, cfg in (("ref", tiny_cfg()), ("opt", tiny_cfg(**options))):
        # the same two earlier tasks in both, so every loss term is live
        shutil.copytree(museum_two_styles.root, tmp_path / name)
        museum = Museum.open(tmp_path / name, base=str(tiny_pipeline_dir))
        manifest = learn(museum, style, cfg, str(tiny_pipeline_dir), "cpu")
        assert set(manifest["result"]["loss_terms"]) == {"diff", "sdl", "weight", "feature"}
        assert np.isfinite(manifest["result"]["final_loss"])
        museums.append(museum)
    a, b = museums[0].lora_state(), museums[1].lora_state()
    assert all(v.dtype == torch.float32 for v in b.values())
    assert all(torch.allclose(a[k], b[k], atol=atol) for k in a)
    assert not all(torch.equal(a[k], b[k]) for k in a) or options.get("gradient_checkpointing")


@pytest.mark.parametrize("change", [{"rank": 4, "alpha": 4.0}, {"alpha": 16.0}, {"target_modules": ("to_q", "to_v")}])
def test_the_shared_lora_shape_is_fixed_by_the_first_task(museum_two_styles, tiny_pipeline_dir, tmp_path, change):
    folder = make_style_folder(tmp_path / "in3" / "halftone", "halftone", seed=5)
    with pytest.raises(ValueError, match=next(iter(change))):
        learn(museum_two_styles, read_style_folder(folder, 32), tiny_cfg(**change), str(tiny_pipeline_dir), "cpu")
    assert museum_two_styles.n_tasks == 2


@pytest.mark.parametrize("num_vectors", [1, 3])
def test_a_long_caption_never_cuts_the_style_token_off(tiny_pipeline_dir, num_vectors):
    """Nor any vector of a multi-vector token, which the pipeline writes out as its entries."""
    from transformers import CLIPTokenizer

    from generators.diffusion_training import expand_tokens, token_vector_names
    from generators.museum.train import fit_prompt

    tok = CLIPTokenizer.from_pretrained(tiny_pipeline_dir / "tokenizer")
    entries = token_vector_names("<ink>", num_vectors)
    tok.add_tokens(entries)
    long = " ".join(["a red fish on the sea background"] * 20)
    prompt = fit_prompt(tok, long, ["<ink>"])
    ids = tok(expand_tokens(tok, prompt)).input_ids
    assert len(ids) <= tok.model_max_length and set(tok.convert_tokens_to_ids(entries)) <= set(ids)
    assert prompt.startswith("a red fish") and fit_prompt(tok, "a star", ["<ink>"]) == "a star, <ink>"


def test_resume_starts_over_when_the_museum_moved_on(tiny_pipeline_dir, tmp_path):
    """A style stopped before another one was learnt must not restore the older shared LoRA."""
    first = read_style_folder(make_style_folder(tmp_path / "in" / "mosaic", "mosaic"), 32)
    second = read_style_folder(make_style_folder(tmp_path / "in" / "sepia", "sepia", seed=1), 32)
    museum = Museum.open(tmp_path / "m", base=str(tiny_pipeline_dir), create=True)
    assert learn(museum, first, tiny_cfg(), str(tiny_pipeline_dir), "cpu", run=Run(should_stop=stop_after(3))).get("stopped")
    learn(museum, second, tiny_cfg(), str(tiny_pipeline_dir), "cpu")
    manifest = learn(museum, first, tiny_cfg(), str(tiny_pipeline_dir), "cpu")
    assert manifest["result"]["resumed_from"] == 0 and museum.n_tasks == 2


def test_v_prediction_base_trains(tiny_pipeline_dir, tmp_path):
    base = tmp_path / "vpred"
    shutil.copytree(tiny_pipeline_dir, base)
    sched = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps({**sched, "prediction_type": "v_prediction"}))
    museum = Museum.open(tmp_path / "m", base=str(base), create=True)
    folder = make_style_folder(tmp_path / "in" / "sepia", "sepia")
    manifest = learn(museum, read_style_folder(folder, 32), tiny_cfg(), str(base), "cpu")
    assert np.isfinite(manifest["result"]["final_loss"]) and museum.n_tasks == 1


def test_noise_offset_changes_what_the_task_learns(tiny_pipeline_dir, tmp_path):
    """kohya's noise_offset: on, the style's noise gets a per-channel constant and the LoRA differs."""
    folder = make_style_folder(tmp_path / "in" / "sepia", "sepia")
    loras = {}
    for name, offset in (("off", 0.0), ("on", 0.1)):
        museum = Museum.open(tmp_path / name, base=str(tiny_pipeline_dir), create=True)
        learn(museum, read_style_folder(folder, 32), tiny_cfg(noise_offset=offset), str(tiny_pipeline_dir), "cpu")
        loras[name] = museum.lora_state()
    assert any(not torch.allclose(loras["off"][k], loras["on"][k]) for k in loras["off"])
    with pytest.raises(ValueError, match="noise_offset"):
        MuseumConfig(noise_offset=-0.1)


def test_a_checkpoint_from_before_a_new_config_field_still_resumes(tiny_pipeline_dir, tmp_path):
    """A checkpoint whose stored config lacks a field added since (noise_offset) resumes with
    what that run trained with: no noise offset (MuseumConfig.ABSENT_MEANS), not today's default."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    style = read_style_folder(make_style_folder(tmp_path / "in" / "mosaic", "mosaic"), 32)
    museum = Museum.open(tmp_path / "m", base=str(tiny_pipeline_dir), create=True)
    old_run = tiny_cfg(noise_offset=0.0)
    assert learn(museum, style, old_run, str(tiny_pipeline_dir), "cpu", run=Run(should_stop=stop_after(3))).get("stopped")
    ckpt = museum.work_dir("mosaic") / "checkpoint.safetensors"
    with safe_open(ckpt, "pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    old_config = {k: v for k, v in json.loads(meta["config"]).items() if k != "noise_offset"}
    save_file(tensors, ckpt, metadata={**meta, "config": json.dumps(old_config)})
    manifest = learn(museum, style, old_run, str(tiny_pipeline_dir), "cpu")
    assert manifest["result"]["resumed_from"] == 3 and museum.n_tasks == 1
    assert manifest["config"]["noise_offset"] == 0.0 and MuseumConfig().noise_offset == 0.1


def test_weight_direction_loss_forms():
    """The factored loss equals cos²(ΔW_t, U) ("cosine"), cos² · (‖ΔW_t‖ / ‖U‖)² ("projection") or
    cos² · min(1, ‖ΔW_t‖² / ‖U‖²) ("gated") of the full out×in matrices; the projection's and the
    gated form's gradients vanish with the update, the cosine's grows."""
    g = torch.Generator().manual_seed(0)
    lora = lambda: losses.lora_factors(torch.randn(2, 5, generator=g), torch.randn(6, 2, generator=g), 0.5)  # noqa: E731
    full = lambda f: f[0] @ f[1]  # noqa: E731
    now, before, past = lora(), lora(), losses.factor_difference(lora(), lora())
    update = full(now) - full(before)
    cosine = (update.flatten() @ full(past).flatten()) / (update.norm() * full(past).norm())
    relative = (update.norm() / full(past).norm()).item()
    assert losses.weight_direction_loss([now], [before], [[past]]).item() == pytest.approx(cosine.item() ** 2, rel=1e-4)
    assert losses.weight_direction_loss([now], [before], [[past]], "projection").item() == pytest.approx(
        cosine.item() ** 2 * relative ** 2, rel=1e-4)
    assert losses.weight_direction_loss([now], [None], [[(-2 * now[0], now[1])]]).item() == pytest.approx(1.0, abs=1e-5)
    # undoing half of the earlier update costs 0.25 in the projection form
    assert losses.weight_direction_loss([(-0.5 * now[0], now[1])], [None], [[now]], "projection").item() == pytest.approx(0.25, abs=1e-5)
    orth = (torch.eye(6)[:, :1], torch.eye(5)[:1])  # ΔW = e0 e0ᵀ
    w = (torch.eye(6)[:, 1:3], torch.randn(2, 5, generator=g))  # rows 1-2 only: orthogonal to it
    # gated: the projection's value while the update is smaller than U, the cosine's once larger
    assert losses.weight_direction_loss([(-0.5 * now[0], now[1])], [None], [[now]], "gated").item() == pytest.approx(0.25, abs=1e-5)
    assert losses.weight_direction_loss([(-3 * now[0], now[1])], [None], [[now]], "gated").item() == pytest.approx(1.0, abs=1e-5)
    for form in ("cosine", "projection", "gated"):
        assert losses.weight_direction_loss([w], [None], [[orth]], form).item() == pytest.approx(0.0, abs=1e-6)
    grads = {}
    for form in ("cosine", "projection", "gated"):
        for size in (1e-1, 1e-3):  # an update near U's direction, small and smaller
            step = ((size * (now[0] + 0.3 * past[0][:, :2])).requires_grad_(), now[1])
            losses.weight_direction_loss([step], [None], [[now]], form).backward()
            grads[form, size] = step[0].grad.norm().item()
    assert grads["projection", 1e-3] < 0.02 * grads["projection", 1e-1]
    assert grads["cosine", 1e-3] > 50 * grads["cosine", 1e-1]
    assert grads["gated", 1e-3] < 0.02 * grads["gated", 1e-1]


def test_weight_direction_loss_takes_conv_loras():
    """A peft conv LoRA (A: r×in×k×k, B: out×r×1×1) is the product on the flattened kernel."""
    g = torch.Generator().manual_seed(1)
    (a1, b1), (a2, b2) = [(torch.randn(2, 3, 3, 3, generator=g), torch.randn(4, 2, 1, 1, generator=g)) for _ in range(2)]
    kernel = lambda a, b: torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)  # noqa: E731  1×1 conv after k×k conv
    d1, d2 = kernel(a1, b1), kernel(a2, b2)
    cosine = (d1.flatten() @ d2.flatten()) / (d1.norm() * d2.norm())
    now, past = losses.lora_factors(a1, b1, 1.0), losses.lora_factors(a2, b2, 1.0)
    assert losses.weight_direction_loss([now], [None], [[past]]).item() == pytest.approx(cosine.item() ** 2, rel=1e-4)


def test_sdl_is_zero_when_statistics_match_and_positive_otherwise():
    z = torch.randn(3, 4, 8, 8)
    stats = losses.latent_statistics(z[:1]).mean(0)
    ones = torch.ones(1)
    assert losses.style_distillation_loss(z[:1], stats, 1.0, ones).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.style_distillation_loss(z[1:2] * 3 + 1, stats, 1.0, ones).item() > 1e-3


def test_exports_load_in_stock_diffusers_and_match_studio(museum_two_styles, tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    m = museum_two_styles
    out_d, out_k = export_style(m, "sepia", "diffusers", tmp_path / "d"), export_style(m, "sepia", "kohya", tmp_path / "k")
    prompt = "a red star on the grass background, <sepia>"
    studio_pipe = load_museum_pipeline(m, str(tiny_pipeline_dir), "cpu")
    s = diffusion.GenerationSettings(prompt=prompt, seed=3, steps=4, width=32, height=32)
    ours = np.asarray(diffusion.generate(studio_pipe, [s])[0], np.float32)

    stock = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir, local_files_only=True, safety_checker=None)
    stock.set_progress_bar_config(disable=True)
    plain = np.asarray(stock(prompt, num_inference_steps=4, guidance_scale=5.0, height=32, width=32,
                             generator=torch.Generator().manual_seed(3)).images[0], np.float32)
    stock.load_lora_weights(out_d, weight_name="pytorch_lora_weights.safetensors")
    stock.load_textual_inversion(str(out_d / "sepia.safetensors"))
    theirs = np.asarray(stock(prompt, num_inference_steps=4, guidance_scale=5.0, height=32, width=32,
                              generator=torch.Generator().manual_seed(3)).images[0], np.float32)
    assert np.abs(ours - theirs).mean() <= 2.0
    assert np.abs(plain - theirs).mean() > np.abs(ours - theirs).mean()  # the export is no silent no-op

    with safe_open(out_k / "sepia.safetensors", "pt") as fh:
        keys, meta = list(fh.keys()), fh.metadata()
        alphas = [fh.get_tensor(k).item() for k in keys if k.endswith(".alpha")]
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert alphas and set(alphas) == {8.0}
    assert meta["modelspec.trigger_phrase"] == "<sepia>" and meta["ss_network_dim"] == "8" and meta["ss_network_alpha"] == "8.0"
    assert "bundle_emb.sepia.string_to_param.*" in keys


@pytest.mark.parametrize("precision, num_vectors", [("fp32", 1), ("fp16", 1), ("fp32", 3)])
def test_interrupted_task_resumes_to_the_same_result(tiny_pipeline_dir, tmp_path, precision, num_vectors):
    from safetensors import safe_open

    folder = make_style_folder(tmp_path / "in" / "mosaic", "mosaic")
    style = read_style_folder(folder, 32)
    cfg = tiny_cfg(precision=precision, num_vectors=num_vectors)
    straight = Museum.open(tmp_path / "a", base=str(tiny_pipeline_dir), create=True)
    learn(straight, style, cfg, str(tiny_pipeline_dir), "cpu")

    resumed = Museum.open(tmp_path / "b", base=str(tiny_pipeline_dir), create=True)
    manifest = learn(resumed, style, cfg, str(tiny_pipeline_dir), "cpu", run=Run(should_stop=stop_after(3)))
    assert manifest.get("stopped") and resumed.n_tasks == 0
    with safe_open(resumed.work_dir("mosaic") / "checkpoint.safetensors", "pt") as fh:
        # the fp16 loss scale is part of the resume point; Adam holds moments of the LoRA and the
        # token vector only (no vocabulary-sized row of the text encoder's embedding)
        assert ("scaler.scale" in fh.keys()) == (precision == "fp16")
        size = lambda k: int(np.prod(fh.get_slice(k).get_shape()))  # noqa: E731
        trained = sum(size(k) for k in fh.keys() if k.startswith("lora.") or k == "token")
        assert sum(size(k) for k in fh.keys() if k.endswith(".exp_avg")) == trained
    manifest = learn(resumed, style, cfg, str(tiny_pipeline_dir), "cpu")
    assert manifest["result"]["resumed_from"] == 3
    a, b = straight.lora_state(), resumed.lora_state()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert torch.allclose(straight.embedding("mosaic")["<mosaic>"], resumed.embedding("mosaic")["<mosaic>"], atol=1e-6)
    assert not resumed.work_dir("mosaic").exists()


def test_checkpoint_round_trips_the_fp16_loss_scale(tmp_path):
    from generators.museum.train import _load_checkpoint, _save_checkpoint

    def parts():
        vector = torch.nn.Parameter(torch.ones(4))
        opt = torch.optim.AdamW([vector], lr=0.1)
        return vector, opt, torch.amp.GradScaler("cpu"), torch.Generator().manual_seed(0)

    cfg = tiny_cfg(precision="fp16")
    vector, opt, scaler, gen = parts()
    for _ in range(3):  # three finite steps: the growth tracker counts them
        scaler.scale(vector.square().sum()).backward()
        scaler.step(opt)
        scaler.update()
    scaler.update(new_scale=1024.0)
    assert scaler.state_dict()["_growth_tracker"] == 3
    _save_checkpoint(tmp_path / "ckpt.safetensors", {}, vector, opt, scaler, gen, 3, cfg, 0)
    vector2, opt2, scaler2, gen2 = parts()
    assert _load_checkpoint(tmp_path / "ckpt.safetensors", {}, vector2, opt2, scaler2, gen2, cfg, 0) == 3
    assert scaler2.get_scale() == 1024.0 and scaler2.state_dict()["_growth_tracker"] == 3
    assert torch.equal(vector2, vector) and torch.equal(opt2.state[vector2]["exp_avg"], opt.state[vector]["exp_avg"])


def test_only_the_new_token_learns_and_the_embedding_returns(tiny_pipeline_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    from generators.diffusion_training import add_style_token
    from generators.museum.train import trainable_token

    tok = CLIPTokenizer.from_pretrained(tiny_pipeline_dir / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(tiny_pipeline_dir / "text_encoder").requires_grad_(False)
    text_encoder.to(torch.bfloat16)  # a half-precision encoder trains an fp32 vector and still reports its own dtype
    token_id = add_style_token(tok, text_encoder, "<ink>")
    embedding = text_encoder.get_input_embeddings()
    before = embedding.weight.detach().clone()
    ids = tok(["a red fish, <ink>", "a blue star"], padding="max_length", return_tensors="pt").input_ids
    with pytest.raises(RuntimeError, match="interrupted"), trainable_token(text_encoder, [token_id]) as vector:
        assert [p for p in text_encoder.parameters() if p.requires_grad] == [vector] and vector.shape == (1, before.shape[1])
        assert vector.dtype == torch.float32 and text_encoder.dtype == torch.bfloat16
        text_encoder(ids)[0].float().square().mean().backward()
        assert vector.grad.abs().sum() > 0
        with torch.no_grad():
            vector.add_(1.0)
        raise RuntimeError("interrupted")  # an exception still puts the learnt vector back
    assert text_encoder.get_input_embeddings() is embedding
    assert torch.equal(embedding.weight[:token_id], before[:token_id])
    assert torch.allclose(embedding.weight[token_id].float(), before[token_id].float() + 1.0, atol=1e-2)


def test_a_token_starts_at_its_init_words_or_the_vocabulary_mean(tiny_pipeline_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    from generators.diffusion_training import add_style_token

    tok = CLIPTokenizer.from_pretrained(tiny_pipeline_dir / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(tiny_pipeline_dir / "text_encoder")
    rows = text_encoder.get_input_embeddings().weight.detach().clone()
    words = [tok(w, add_special_tokens=False).input_ids[0] for w in ("red", "blue")]
    token_id = add_style_token(tok, text_encoder, "<ink>", ("red", "blue"))
    assert torch.allclose(text_encoder.get_input_embeddings().weight[token_id], rows[words].mean(0))
    token_id = add_style_token(tok, text_encoder, "<wash>")
    assert torch.allclose(text_encoder.get_input_embeddings().weight[token_id], text_encoder.get_input_embeddings().weight[:token_id].mean(0))
    with pytest.raises(ValueError, match="'crimson-ish' is not one token"):
        add_style_token(tok, text_encoder, "<dot>", ("crimson-ish",))
    assert MuseumConfig.from_dict(MuseumConfig(token_init=("red",)).to_dict()).token_init == ("red",)


def test_the_token_term_keeps_a_new_token_off_the_earlier_ones_direction(tiny_pipeline_dir, tmp_path):
    """With token_orthogonality the second style's token leaves the vocabulary's mean at a smaller
    angle overlap with the first's than without it (same data, same seeds)."""
    from transformers import CLIPTextModel

    mean = CLIPTextModel.from_pretrained(tiny_pipeline_dir / "text_encoder").get_input_embeddings().weight.detach().mean(0)
    overlap = {}
    for lam in (0.0, 100.0):
        museum = Museum.open(tmp_path / f"m{lam}", base=str(tiny_pipeline_dir), create=True)
        for k, style in enumerate(["sepia", "pixel_art"]):
            folder = make_style_folder(tmp_path / f"in{lam}" / style, style, seed=k)
            cfg = tiny_cfg(steps=20, token_lr=5e-2, token_orthogonality=lam, num_vectors=1)  # one direction each
            manifest = learn(museum, read_style_folder(folder, 32), cfg, str(tiny_pipeline_dir), "cpu")
        assert ("token" in manifest["result"]["loss_terms"]) is (lam > 0)
        a, b = (museum.embedding(s)[f"<{s}>"].reshape(-1) - mean for s in ("sepia", "pixel_art"))
        overlap[lam] = float(torch.nn.functional.cosine_similarity(a, b, dim=0)) ** 2
    assert overlap[0.0] > 0.05 and overlap[100.0] < 0.5 * overlap[0.0], overlap


def test_a_multi_vector_token_trains_exports_and_loads_in_stock_diffusers(tiny_pipeline_dir, tmp_path):
    """num_vectors: each of the token's entries learns its own vector, an earlier multi-vector token
    reloads for the next task (with the token term over every vector), and the export is a
    multi-vector embedding that stock diffusers loads to the same image (A1111's bundle too)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    museum = Museum.open(tmp_path / "m", base=str(tiny_pipeline_dir), create=True)
    for k, (style, n) in enumerate([("sepia", 2), ("pixel_art", 3)]):
        folder = make_style_folder(tmp_path / "in" / style, style, seed=k)
        manifest = learn(museum, read_style_folder(folder, 32), tiny_cfg(num_vectors=n, token_orthogonality=1.0),
                         str(tiny_pipeline_dir), "cpu")
    assert manifest["config"]["num_vectors"] == 3 and "token" in manifest["result"]["loss_terms"]
    emb = museum.embedding("pixel_art")["<pixel_art>"]
    assert emb.shape == (3, 32) and museum.embedding("sepia")["<sepia>"].shape == (2, 32)
    assert not torch.allclose(emb[0], emb[1])  # started equal (the same init words), learnt apart

    prompt = "a red star on the grass background, <pixel_art>"
    studio_pipe = load_museum_pipeline(museum, str(tiny_pipeline_dir), "cpu")
    assert studio_pipe.maybe_convert_prompt(prompt, studio_pipe.tokenizer).endswith("<pixel_art> <pixel_art>_1 <pixel_art>_2")
    s = diffusion.GenerationSettings(prompt=prompt, seed=3, steps=4, width=32, height=32)
    ours = np.asarray(diffusion.generate(studio_pipe, [s])[0], np.float32)
    out_d = export_style(museum, "pixel_art", "diffusers", tmp_path / "d")
    out_k = export_style(museum, "pixel_art", "kohya", tmp_path / "k")
    stock = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir, local_files_only=True, safety_checker=None)
    stock.set_progress_bar_config(disable=True)
    stock.load_lora_weights(out_d, weight_name="pytorch_lora_weights.safetensors")
    stock.load_textual_inversion(str(out_d / "pixel_art.safetensors"))
    theirs = np.asarray(stock(prompt, num_inference_steps=4, guidance_scale=5.0, height=32, width=32,
                              generator=torch.Generator().manual_seed(3)).images[0], np.float32)
    assert np.abs(ours - theirs).mean() <= 2.0
    assert load_file(out_k / "pixel_art.safetensors")["bundle_emb.pixel_art.string_to_param.*"].shape == (3, 32)
