"""Loading bases (embedded, local tiny, bad paths) and reproducible generation."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from generators import diffusion
from generators.base_source import base_source
from studio.cli import main


def test_tiny_pipeline_loads_in_stock_diffusers(tiny_pipeline_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir, local_files_only=True, safety_checker=None)
    assert pipe.tokenizer("a red star", add_special_tokens=False).input_ids.__len__() == 3
    pipe2 = diffusion.load_base(str(tiny_pipeline_dir), device="cpu")
    assert diffusion.base_resolution(pipe2) == 32


@pytest.mark.parametrize("base, message", [("/nonexistent/folder", "neither an existing pipeline folder"),
                                          ("{tmp}", "no model_index.json"),
                                          ("not a hub id!", "neither an existing pipeline folder")])
def test_bad_base_gives_one_line_error(tmp_path, base, message):
    proc = subprocess.run([sys.executable, "-m", "studio", "generate", "--prompt", "x", "--out", str(tmp_path / "o"),
                           "--base", base.format(tmp=tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_hub_id_offline_without_cache_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="could not load base 'someone/some-model'"):
        diffusion.load_base("someone/some-model", device="cpu")


def test_generate_is_deterministic_and_self_describing(tiny_pipeline_dir, tmp_path):
    args = ["generate", "--prompt", "a blue fish on the sea background", "--n", "2", "--seed", "5", "--steps", "3",
            "--base", str(tiny_pipeline_dir), "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    for name in ("seed5.png", "seed6.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "seed5.png").read_bytes() != (tmp_path / "a" / "seed6.png").read_bytes()
    meta = json.loads((tmp_path / "a" / "seed6.json").read_text())
    need = {"prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height", "base"}
    assert need <= set(meta) and meta["seed"] == 6 and meta["width"] == 32
    with Image.open(tmp_path / "a" / "seed6.png") as im:
        assert im.text["prompt"] == "a blue fish on the sea background" and im.text["seed"] == "6"
    # One image regenerated alone equals the same image drawn in a batch (its own seed).
    assert main(["generate", "--prompt", "a blue fish on the sea background", "--n", "1", "--seed", "6", "--steps", "3",
                 "--base", str(tiny_pipeline_dir), "--device", "cpu", "--out", str(tmp_path / "c")]) == 0
    a = np.asarray(Image.open(tmp_path / "a" / "seed6.png"), np.float32)
    c = np.asarray(Image.open(tmp_path / "c" / "seed6.png"), np.float32)
    assert np.abs(a - c).mean() < 1.0
    s = diffusion.read_settings(tmp_path / "a" / "seed6.png")
    assert s.seed == 6 and s.steps == 3


def test_generate_refuses_to_overwrite(tiny_pipeline_dir, tmp_path):
    args = ["generate", "--prompt", "x", "--n", "1", "--steps", "1", "--base", str(tiny_pipeline_dir),
            "--device", "cpu", "--out", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "seed0.png").read_bytes()
    assert main(args) == 2
    assert (tmp_path / "seed0.png").read_bytes() == before


def test_eval_base_writes_named_accuracies(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "e.json"
    assert main(["eval", "base", "--n", "4", "--steps", "2", "--base", str(tiny_pipeline_dir), "--device", "cpu",
                 "--json", str(out), "--samples", str(tmp_path / "s")]) == 0
    result = json.loads(out.read_text())
    for key in ("kind_accuracy", "color_accuracy", "background_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    assert result["n"] == 4 and len(list((tmp_path / "s").glob("*.png"))) == 4
    # The prompts are held-out triples: never in pretraining data.
    from generators import miniworld
    from generators.sd_mini.evaluate import held_out_prompts

    assert all(miniworld.is_held_out(a.kind, a.color, a.background) for a in held_out_prompts(50, 0))
    # Without the colour word (the product's own prompt form) the colour is neither asked for nor scored.
    assert main(["eval", "base", "--n", "2", "--steps", "2", "--base", str(tiny_pipeline_dir), "--device", "cpu",
                 "--json", str(out), "--prompt-form", "no-colour"]) == 0
    result = json.loads(out.read_text())
    assert "color_accuracy" not in result and result["prompt_form"] == "no-colour" and "background_accuracy" in result
    from generators.sd_mini.evaluate import prompt_for

    a = miniworld.Attributes("fish", "red", "sea", "top", "large", "upright", "left")
    assert prompt_for(a, "no-colour") == "a fish on the sea background, large, facing left, at the top"


def test_pretraining_data_excludes_held_out_triples():
    from generators import miniworld

    attrs = [miniworld.generate(1000, i, held_out=False).attributes for i in range(300)]
    assert not any(miniworld.is_held_out(a.kind, a.color, a.background) for a in attrs)


def test_species_pretraining_data_names_each_birds_subclass():
    from generators import miniworld
    from generators.sd_mini.data import render_dataset

    images, captions = render_dataset(200, 1000, 32, workers=1, species_captions=True, bird_share=0.5)
    assert images.shape == (200, 32, 32, 3)
    subjects = [c.split(" on the ")[0].split() for c in captions]
    birds = [words for words in subjects if words[-1] == "bird"]
    assert len(birds) >= 100  # the bird half, plus the birds among the other half
    assert all(words[-2] in miniworld.BIRD_SUBCLASSES for words in birds)
    assert {words[-2] for words in birds} == set(miniworld.BIRD_SUBCLASSES)
    # About half without the colour word, as the prompts that name a class are written.
    with_colour = sum(words[1] in miniworld.COLORS for words in birds)
    assert 0.3 < with_colour / len(birds) < 0.7
    _, plain = render_dataset(200, 1000, 32, workers=1)
    assert not any(word in miniworld.BIRD_SUBCLASSES for c in plain for word in c.split())
    a = miniworld.Attributes("bird", "red", "sky", "top", "large", "upright", "left", subclass="sparrow")
    assert a.species_caption() == "a red sparrow bird on the sky background, large, facing left, at the top"
    assert a.species_caption(with_colour=False) == "a sparrow bird on the sky background, large, facing left, at the top"


def test_style_pretraining_data_names_each_style_and_adds_its_token(tmp_path):
    import torch

    from generators import miniworld
    from generators.sd_mini.config import MiniBaseConfig
    from generators.sd_mini.models import add_style_words, build_text_encoder
    from generators.sd_mini.pretrain import pretrain_base
    from generators.sd_mini.data import render_dataset
    from generators.sd_mini.tokenizer import build_tokenizer
    from styles.reference import apply_style

    images, captions = render_dataset(100, 1000, 32, workers=1, caption_styles=("sepia", "pop_art"), style_share=0.4)
    styled = [c for c in captions if c.endswith((", sepia", ", pop_art"))]
    assert len(styled) == 40 and captions[60:] == styled  # the styled share last, the styles in turn
    assert {c.rsplit(", ", 1)[1] for c in styled} == {"sepia", "pop_art"}
    # Each styled image is its plain rendering through the reference renderer.
    first = miniworld.generate(1002, 0, size=32, held_out=False, kinds=miniworld.KINDS)
    assert captions[60] == first.attributes.caption + ", sepia"
    assert np.array_equal(images[60], np.asarray(apply_style("sepia", first.image, seed=0)))
    with pytest.raises(ValueError, match="more than the whole set"):
        render_dataset(10, 0, 32, workers=1, bird_share=0.6, caption_styles=("sepia",), style_share=0.6)
    with pytest.raises(ValueError, match="names no styles"):
        pretrain_base(tmp_path / "base", {"style_share": 0.5}, device="cpu")
    with pytest.raises(ValueError, match=r"\['neon'\] are not reference styles"):
        pretrain_base(tmp_path / "base", {"caption_styles": ("neon",), "style_share": 0.5}, device="cpu")
    with pytest.raises(ValueError, match=r"bird_share \(--bird-share\) must be in \(0, 1\], got 1.5"):
        pretrain_base(tmp_path / "base", {"bird_share": 1.5}, device="cpu")
    assert not (tmp_path / "base").exists()

    cfg = MiniBaseConfig(text_width=32, text_layers=1, text_heads=2)
    tokenizer = build_tokenizer(miniworld.caption_words(), tmp_path / "tok", cfg.max_length)
    encoder = build_text_encoder(cfg, tokenizer)
    before = encoder.get_input_embeddings().weight.detach().clone()
    ids = tokenizer("a red fish on the sea background").input_ids
    assert add_style_words(tokenizer, encoder, ("sepia", "pop_art")) == ["sepia", "pop_art"]
    assert add_style_words(tokenizer, encoder, ("sepia",)) == []  # already one token
    grown = encoder.get_input_embeddings().weight.detach()
    assert grown.shape[0] == before.shape[0] + 2 and torch.equal(grown[: before.shape[0]], before)
    assert torch.allclose(grown[-2:], before.mean(0).expand(2, -1))
    assert tokenizer("a red fish on the sea background").input_ids == ids
    assert len(tokenizer("a red fish, pop_art", add_special_tokens=False).input_ids) == 5  # a red fish , pop_art


def test_autoencoder_augmentation_is_varied_bounded_and_seeded():
    import torch

    from generators import miniworld
    from generators.sd_mini.data import generic_textures

    images = np.stack([np.asarray(miniworld.generate(3, i, size=32).image) for i in range(90)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    a = generic_textures(x, torch.Generator().manual_seed(0))
    b = generic_textures(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    changed = (a - x).abs().flatten(1).amax(1) > 1e-3
    assert 0.5 < changed.float().mean() < 0.85  # a third stays plain


def test_gradient_map_is_a_monotone_ramp_of_random_palettes():
    import torch

    from generators.sd_mini.data import gradient_map

    luma = torch.linspace(0, 1, 32).expand(6, 1, 8, 32)  # dark on the left, light on the right
    out = gradient_map(luma, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 8, 32) and out.min() >= -1 and out.max() <= 1
    assert (out.diff(dim=3) >= -1e-6).all()  # each channel rises with luminance: a ramp, not noise
    palettes = ((out[:, :, 0] + 1) * 4).round().permute(0, 2, 1).reshape(6, -1, 3)
    for palette in palettes:  # each image passes through at least 3 distinct colours
        assert len({tuple(c) for c in palette.tolist()}) >= 3
    assert len({tuple(p[-1].tolist()) for p in palettes}) == 6  # a different palette per image


def test_dot_screen_is_two_tone_with_ink_following_darkness():
    import torch

    from generators.sd_mini.data import dot_screen

    x = torch.zeros(8, 3, 48, 80)  # flat mid grey, not square: cells are in pixels, so any aspect works
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        out = dot_screen(x, torch.full((8, 1, 48, 80), level), torch.Generator().manual_seed(1))
        assert out.min() >= -1 and out.max() <= 1
        assert max(len(img.reshape(3, -1).unique(dim=1).T) for img in out) <= 2  # ink or paper, nothing between
        coverage = (out < 0).any(1).float().mean().item()  # ink is dark (< 0); paper is white or the grey
        assert abs(coverage - (1 - level)) < 0.1, (level, coverage)  # ink covers about 1 - luma


def test_autoencoder_augmentation_includes_gradient_maps_and_dot_screens():
    import torch

    from generators.sd_mini.data import generic_textures

    flat = torch.zeros(200, 3, 16, 16)  # mid grey everywhere: each variant leaves its own signature
    out = generic_textures(flat, torch.Generator().manual_seed(0))
    values = [img.reshape(3, -1).unique(dim=1) for img in out]
    mapped = [v for v in values if v.shape[1] == 1 and (v[:, 0].max() - v[:, 0].min()) > 0.05]  # flat, not grey
    screened = [v for v in values if v.shape[1] == 2]  # exactly ink and paper
    assert len(mapped) > 10 and len(screened) > 10


def test_embedded_bases_by_name(tmp_path):
    from generators.base_source import ASSETS, DEFAULT_BASE, base_path

    assert diffusion.base_name(None) == "studio-mini-2" and base_path(None) == DEFAULT_BASE == ASSETS / "studio-mini-2"
    assert diffusion.base_name("studio-mini-2") == "studio-mini-2" == diffusion.base_name(DEFAULT_BASE)
    assert base_source("studio-mini-2") == "folder" and diffusion.resolution_of("studio-mini-2") == 64
    assert diffusion.base_name("someone/some-model") == "someone/some-model"
    # The first embedded base left assets/: its name still means its folder, and asking for it says
    # in one line which commit restores it.
    assert base_path("studio-mini") == ASSETS / "studio-mini" and diffusion.base_name(ASSETS / "studio-mini") == "studio-mini"
    if (ASSETS / "studio-mini").exists():
        return  # restored for an old museum: it is a base like any other
    with pytest.raises(FileNotFoundError, match=r"git restore --source=[0-9a-f]{40} --worktree -- assets/studio-mini$") as err:
        base_source("studio-mini")
    assert "\n" not in str(err.value)
    proc = subprocess.run([sys.executable, "-m", "studio", "generate", "--prompt", "a red star", "--base", "studio-mini",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode != 0 and "left the repository" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_museum_on_the_first_embedded_base_asks_for_it_by_name(tmp_path):
    from styles.museum import Museum

    Museum.open(tmp_path / "m", base="studio-mini", create=True).write_new()
    with pytest.raises(ValueError, match="built on base 'studio-mini', not 'studio-mini-2'; pass --base studio-mini"):
        Museum.open(tmp_path / "m", base=diffusion.base_name(None))
    assert Museum.open(tmp_path / "m", base=diffusion.base_name("studio-mini")).base == "studio-mini"


TINY_BASE = dict(resolution=32, vae_channels=(16, 16), unet_channels=(32, 32, 32), text_width=32, text_layers=1,
                 text_heads=2, unet_heads=2, n_images=48, vae_batch=4, unet_batch=4, save_every_seconds=1e9)


def test_offset_noise_adds_one_constant_per_sample_and_channel():
    import torch

    from generators.diffusion_training import offset_noise

    plain = offset_noise((256, 4, 8, 8), 0.0, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(plain, torch.randn((256, 4, 8, 8), generator=torch.Generator().manual_seed(0)))  # same stream when off
    shifted = offset_noise((256, 4, 8, 8), 0.5, torch.Generator().manual_seed(0), "cpu")
    constant = shifted - plain  # the first draw is the same noise
    assert torch.allclose(constant, constant[:, :, :1, :1].expand_as(constant), atol=1e-6)
    assert 0.4 < float(constant[:, :, 0, 0].std()) < 0.6


def test_pretrain_resume_and_warm_start(tmp_path):
    from diffusers import StableDiffusionPipeline

    from generators.sd_mini.pretrain import pretrain_base

    first = tmp_path / "first"
    opts = pretrain_base(first, TINY_BASE, vae_seconds=1, unet_seconds=1, device="cpu", workers=1)
    assert opts["finished"] and opts["vae_steps"] > 0 and opts["unet_steps"] > 0
    StableDiffusionPipeline.from_pretrained(first, local_files_only=True)  # stock diffusers loads it
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain_base(first, TINY_BASE, vae_seconds=1, unet_seconds=1, device="cpu", workers=1)
    vae_before = (first / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    # product_captions adds the style family's words: a vocabulary a fresh tokenizer would not have.
    resumed = pretrain_base(first, {"noise_offset": 0.1, "product_captions": True}, unet_seconds=1, device="cpu",
                            workers=1, resume=True)
    assert "dotted" in resumed["tokens_added"]
    assert resumed["config"]["noise_offset"] == 0.1 and resumed["history"][0]["config"]["noise_offset"] == 0.0
    assert resumed["resumed"] and len(resumed["history"]) == 1 and resumed["history"][0]["unet_steps"] == opts["unet_steps"]
    assert (first / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == vae_before  # the autoencoder stays

    # A new autoencoder with 4 latent channels (the default is 8), its UNet and text encoder started from `first`.
    second = tmp_path / "second"
    warm = pretrain_base(second, {**TINY_BASE, "latent_channels": 4}, vae_seconds=1, unet_seconds=0, device="cpu",
                         workers=1, init_from=first)["warm_start"]
    assert warm["text_encoder"]["fresh"] == []
    assert set(warm["unet"]["fresh"]) == {"conv_in.weight", "conv_out.weight", "conv_out.bias"}
    pipe = StableDiffusionPipeline.from_pretrained(second, local_files_only=True)
    assert pipe.unet.config.in_channels == 4 and pipe.vae.config.latent_channels == 4

    # A finer latent (one autoencoder level fewer) with a convolution-only UNet level in front: the
    # source's levels are matched from the coarsest, the new finest level starts fresh.
    finer = {**TINY_BASE, "vae_channels": (16,), "unet_channels": (32, 32, 32, 32), "unet_attention": (False, True, True, False)}
    third = tmp_path / "third"
    warm = pretrain_base(third, finer, vae_seconds=1, unet_seconds=1, device="cpu", workers=1, init_from=first)["warm_start"]
    assert warm["text_encoder"]["fresh"] == []
    assert {".".join(k.split(".")[:2]) for k in warm["unet"]["fresh"]} == {"down_blocks.0", "up_blocks.2", "up_blocks.3"}
    assert all(k.startswith(("down_blocks.0.", "up_blocks.3.", "up_blocks.2.upsamplers.")) for k in warm["unet"]["fresh"])
    pipe = StableDiffusionPipeline.from_pretrained(third, local_files_only=True)
    source = StableDiffusionPipeline.from_pretrained(first, local_files_only=True)
    assert pipe.unet.config.sample_size == 32 and pipe.unet.config.down_block_types[0] == "DownBlock2D"
    assert pipe.tokenizer.get_vocab() == source.tokenizer.get_vocab()  # the added words keep their ids
    assert warm["words_added"] == []
    image = pipe("a red star", num_inference_steps=2, height=32, width=32, output_type="np").images
    assert image.shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="one entry per unet_channels level"):
        pretrain_base(tmp_path / "fourth", {**TINY_BASE, "unet_attention": (True, False)}, vae_seconds=1, unet_seconds=0,
                      device="cpu", workers=1)


def test_warm_start_matches_unet_levels_from_the_coarsest():
    import torch

    from generators.sd_mini.config import MiniBaseConfig
    from generators.sd_mini.models import build_unet, copy_matching_weights

    torch.manual_seed(0)
    three = MiniBaseConfig(**TINY_BASE)
    four = replace(three, vae_channels=(16,), unet_channels=(32, 32, 32, 32), unet_attention=(False, True, True, False))
    small, big = build_unet(three), build_unet(four)
    copy_matching_weights(small, big)
    s, b = small.state_dict(), big.state_dict()
    for name in ("down_blocks.0.attentions.0.proj_in.weight", "down_blocks.2.resnets.0.conv1.weight"):
        level = int(name.split(".")[1])
        assert torch.equal(b[name.replace(f"down_blocks.{level}.", f"down_blocks.{level + 1}.", 1)], s[name])
    assert torch.equal(b["up_blocks.2.attentions.0.proj_in.weight"], s["up_blocks.2.attentions.0.proj_in.weight"])
    torch.manual_seed(1)
    back = build_unet(three)  # fewer levels: the source's finest level is dropped, the rest shift down
    copied, fresh = copy_matching_weights(big, back)
    assert torch.equal(back.state_dict()["down_blocks.0.attentions.0.proj_in.weight"],
                       b["down_blocks.1.attentions.0.proj_in.weight"])
    assert not any(k.startswith("down_blocks.") for k in fresh)


def test_pooled_text_pathway_starts_silent_and_upgrades_a_saved_base(tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    from generators.sd_mini.config import MiniBaseConfig
    from generators.sd_mini.models import build_unet, copy_matching_weights
    from generators.sd_mini.pretrain import pretrain_base

    cfg = MiniBaseConfig(**{k: v for k, v in TINY_BASE.items()})
    torch.manual_seed(0)
    old, new = build_unet(replace(cfg, unet_pooled_text=False)), build_unet(cfg)
    copied, fresh = copy_matching_weights(old, new)
    assert fresh and all(k.startswith("add_embedding.") for k in fresh)
    x, t, text = torch.randn(2, cfg.latent_channels, 16, 16), torch.tensor([10, 900]), torch.randn(2, 7, cfg.text_width)
    with torch.no_grad():  # the warm-started UNet begins exactly as the one it came from
        assert torch.allclose(old(x, t, text).sample, new(x, t, text).sample, atol=1e-6)

    base = tmp_path / "base"
    pretrain_base(base, {**TINY_BASE, "unet_pooled_text": False}, vae_seconds=1, unet_seconds=1, device="cpu", workers=1)
    opts = pretrain_base(base, {"unet_pooled_text": True}, unet_seconds=1, device="cpu", workers=1, resume=True)
    assert opts["config"]["unet_pooled_text"]
    pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True)  # stock diffusers runs it
    assert pipe.unet.config.addition_embed_type == "text"
    image = pipe("a red star", num_inference_steps=2, height=32, width=32, output_type="np").images
    assert image.shape == (1, 32, 32, 3)
    assert opts["warm_start"]["upgrade"]["why"] == "unet_pooled_text False -> True"
    assert all(k.startswith("add_embedding.") for k in opts["warm_start"]["upgrade"]["unet"]["fresh"])
    options = json.loads((base / "training_options.json").read_text())
    del options["config"]["unet_pooled_text"]  # as bases saved before the option existed
    (base / "training_options.json").write_text(json.dumps(options))
    again = pretrain_base(base, None, unet_seconds=1, device="cpu", workers=1, resume=True)
    assert again["config"]["unet_pooled_text"] and again["warm_start"] is None  # a plain resume keeps the pathway
    with pytest.raises(ValueError, match="--no-pooled-text"):
        pretrain_base(base, {"unet_pooled_text": False}, unet_seconds=1, device="cpu", workers=1, resume=True)


def test_detail_energy_is_phase_free():
    import torch

    from generators.sd_mini.pretrain import detail_loss

    g = torch.Generator().manual_seed(0)
    flat = torch.zeros(2, 3, 64, 64)
    grain, other_grain = ((torch.rand(2, 3, 64, 64, generator=g) - 0.5) * 0.6 for _ in range(2))
    assert detail_loss(grain, grain) == 0
    # Another draw of the same grain scores five times better than its local mean (flat); MSE would
    # rank the flat image first.
    assert detail_loss(other_grain, grain) < 0.3 * detail_loss(flat, grain)
    assert torch.nn.functional.mse_loss(flat, grain) < torch.nn.functional.mse_loss(other_grain, grain)


def test_detail_term_trains_the_decoder():
    import torch

    from generators.sd_mini import pretrain
    from generators.sd_mini.config import MiniBaseConfig
    from generators.sd_mini.models import build_vae

    cfg = MiniBaseConfig(**{**TINY_BASE, "vae_detail": 1.0})
    torch.manual_seed(0)
    vae = build_vae(cfg)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    images = (torch.rand(8, 3, 32, 32) * 255).to(torch.uint8)
    steps = pretrain.train_vae(vae, images, cfg, 2.0, torch.device("cpu"), "fp32", lambda **kw: None,
                               lambda: False, decoder_only=True)
    assert steps > 1
    after = vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))  # decoder alone
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert all(torch.isfinite(v).all() for v in after.values())
