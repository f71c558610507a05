"""SDXL bases (issue 32): the family adapters, generation, the museum, exports, single files and
synthetic fits on a tiny StableDiffusionXLPipeline built from configs (never downloaded)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from generators import bases, diffusion
from generators.run import Run


def build_tiny_sdxl(root):
    """A StableDiffusionXLPipeline with random tiny weights, laid out as SDXL is (three UNet levels,
    attention in the lower two, text_time added conditioning, CLIP-L + CLIP-G with projection)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from generators import miniworld
    from generators.sd_mini.tokenizer import build_tokenizer

    torch.manual_seed(0)
    build_tokenizer(miniworld.caption_words(), root / "tok", 40)
    tok, tok2 = CLIPTokenizer.from_pretrained(root / "tok"), CLIPTokenizer.from_pretrained(root / "tok")

    def text_config(width):
        return CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                              num_attention_heads=2, max_position_embeddings=40, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=16)

    te, te2 = CLIPTextModel(text_config(16)), CLIPTextModelWithProjection(text_config(24))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=2,
        use_linear_projection=True, cross_attention_dim=16 + 24, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16, transformer_layers_per_block=1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32), layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        sample_size=32, scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler)
    out = root / "sdxl"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


def test_family_of_folders_and_the_adapter(sdxl_dir, tiny_pipeline_dir):
    assert bases.family_of_folder(sdxl_dir) == "sdxl"
    assert bases.family_of_folder(tiny_pipeline_dir) == "sd"
    assert bases.family_of(None) == "sd"
    pipe = diffusion.load_base(str(sdxl_dir), device="cpu")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and diffusion.base_resolution(pipe) == 32
    assert diffusion.resolution_of(str(sdxl_dir)) == 32
    ad = bases.adapter(pipe)
    assert ad.family == "sdxl"
    # The adapter's conditioning is exactly the pipeline's own encode_prompt.
    prompt = "a red star on the grass background"
    ids = ad.tokenize(pipe, [prompt])
    with torch.no_grad():
        cond = ad.encode(pipe, ids, 32)
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(cond["encoder_hidden_states"], embeds, atol=1e-6)
    assert torch.allclose(cond["text_embeds"], pooled, atol=1e-6)
    assert cond["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]]
    with torch.no_grad():
        out = ad.unet(pipe.unet, torch.zeros(1, 4, 16, 16), torch.tensor([10]), cond)
    assert out.shape == (1, 4, 16, 16)


def test_generate_on_sdxl(sdxl_dir, tmp_path):
    from studio.cli import main

    args = ["generate", "--prompt", "a blue fish on the sea background", "--n", "2", "--seed", "3", "--steps", "2",
            "--base", str(sdxl_dir), "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "seed3.png").read_bytes() == (tmp_path / "b" / "seed3.png").read_bytes()
    with Image.open(tmp_path / "a" / "seed4.png") as im:
        assert im.size == (32, 32) and im.text["seed"] == "4" and im.text["base"] == str(sdxl_dir)
    assert json.loads((tmp_path / "a" / "seed4.json").read_text())["scheduler"] == "EulerDiscreteScheduler"


# --- the museum on SDXL -------------------------------------------------------------------


def _museum_cfg(**kw):
    from generators.museum.config import MuseumConfig

    return MuseumConfig(**{"steps": 4, "batch_size": 2, "replay_pool": 4, "replay_batch": 2, "sample_steps": 2,
                           "checkpoint_every": 2, "use_weight_reg": True, **kw})  # every term's code runs


@pytest.fixture(scope="module")
def sdxl_museum(sdxl_dir, tmp_path_factory):
    """Two styles learnt into a museum on the tiny SDXL base, the second's token of two vectors."""
    from generators.museum.engine import learn
    from styles.folder import read_style_folder
    from styles.museum import Museum
    from tests.test_museum import make_style_folder

    root = tmp_path_factory.mktemp("sdxl-museum")
    museum = Museum.open(root / "m", base=str(sdxl_dir), create=True)
    for k, style in enumerate(["sepia", "pixel_art"]):
        folder = make_style_folder(root / "in" / style, style, seed=k)
        learn(museum, read_style_folder(folder, 32), _museum_cfg(num_vectors=k + 1), str(sdxl_dir), "cpu")
    return museum


def test_museum_task_on_sdxl(sdxl_museum, sdxl_dir):
    from generators.museum.engine import load_museum_pipeline

    m = sdxl_museum
    assert [s.name for s in m.styles] == ["sepia", "pixel_art"] and m.family == "sdxl"
    assert json.loads((m.root / "museum.json").read_text())["family"] == "sdxl"
    # One vector per text encoder, in SDXL's textual-inversion layout.
    emb = m.embedding("sepia")
    assert set(emb) == {"clip_l", "clip_g"} and emb["clip_l"].shape[-1] == 16 and emb["clip_g"].shape[-1] == 24
    two = m.embedding("pixel_art")
    assert two["clip_l"].shape == (2, 16) and two["clip_g"].shape == (2, 24)
    # Every loss term ran (the second task has earlier styles and an earlier update).
    assert set(m.manifest("pixel_art")["result"]["loss_terms"]) == {"diff", "sdl", "weight", "feature"}
    a = m.lora_state()
    assert any(".attn2.to_k." in k for k in a) and any(v.abs().sum() > 0 for v in a.values())  # the shared LoRA is on the SDXL UNet's attention
    pipe = load_museum_pipeline(m, str(sdxl_dir), "cpu")
    for tok in (pipe.tokenizer, pipe.tokenizer_2):
        prompt = pipe.maybe_convert_prompt("a star <sepia> <pixel_art>", tok)
        assert len(tok(prompt, add_special_tokens=False).input_ids) == 5
    tid = pipe.tokenizer_2.convert_tokens_to_ids("<sepia>")
    assert torch.allclose(pipe.text_encoder_2.get_input_embeddings().weight[tid], emb["clip_g"].reshape(-1))


def test_museum_refuses_another_family_in_one_line(sdxl_museum, tiny_pipeline_dir, tmp_path):
    from styles.museum import Museum

    with pytest.raises(ValueError, match="built on an SDXL base") as err:
        Museum.open(sdxl_museum.root, base=str(tiny_pipeline_dir))
    assert "SD 1.x/2.x" in str(err.value) and "\n" not in str(err.value)
    sd = Museum.open(tmp_path / "sd", base="studio-mini-2", create=True)
    assert sd.family == "sd"
    proc = subprocess.run([sys.executable, "-m", "studio", "generate", "--prompt", "x", "--style", "sepia", "--museum",
                           str(sdxl_museum.root), "--out", str(tmp_path / "o"), "--base", str(tiny_pipeline_dir),
                           "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 2 and "built on an SDXL base" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["sepia", "pixel_art"])  # one vector per encoder; two
def test_sdxl_exports_load_in_stock_diffusers_and_match_studio(sdxl_museum, sdxl_dir, tmp_path, name):
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open
    from safetensors.torch import load_file

    from generators.museum.engine import load_museum_pipeline
    from generators.museum.export import export_style

    m = sdxl_museum
    out_d, out_k = export_style(m, name, "diffusers", tmp_path / "d"), export_style(m, name, "kohya", tmp_path / "k")
    prompt = f"a red star on the grass background, <{name}>"
    s = diffusion.GenerationSettings(prompt=prompt, negative_prompt="", seed=3, steps=3, width=32, height=32)
    ours = np.asarray(diffusion.generate(load_museum_pipeline(m, str(sdxl_dir), "cpu"), [s])[0], np.float32)

    def stock_image(pipe):
        return np.asarray(pipe(prompt, negative_prompt="", num_inference_steps=3, guidance_scale=5.0, height=32,
                               width=32, generator=torch.Generator().manual_seed(3)).images[0], np.float32)

    stock = StableDiffusionXLPipeline.from_pretrained(sdxl_dir, local_files_only=True)
    stock.set_progress_bar_config(disable=True)
    plain = stock_image(stock)
    stock.load_lora_weights(out_d, weight_name="pytorch_lora_weights.safetensors")
    emb = load_file(out_d / f"{name}.safetensors")
    assert set(emb) == {"clip_l", "clip_g"}
    stock.load_textual_inversion(emb["clip_l"], token=f"<{name}>", text_encoder=stock.text_encoder, tokenizer=stock.tokenizer)
    stock.load_textual_inversion(emb["clip_g"], token=f"<{name}>", text_encoder=stock.text_encoder_2,
                                 tokenizer=stock.tokenizer_2)
    theirs = stock_image(stock)
    assert np.abs(ours - theirs).max() <= 2.0
    assert np.abs(plain - theirs).mean() > np.abs(ours - theirs).mean()  # the export is no silent no-op

    with safe_open(out_k / f"{name}.safetensors", "pt") as fh:
        keys, meta = list(fh.keys()), fh.metadata()
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert {f"bundle_emb.{name}.clip_l", f"bundle_emb.{name}.clip_g"} <= set(keys)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert set(load_file(out_k / f"{name}.embedding.safetensors")) == {"clip_l", "clip_g"}
    # The kohya LoRA loads in stock diffusers (its kohya converter) and gives the same image.
    kohya = StableDiffusionXLPipeline.from_pretrained(sdxl_dir, local_files_only=True)
    kohya.set_progress_bar_config(disable=True)
    lora = {k: v for k, v in load_file(out_k / f"{name}.safetensors").items() if k.startswith("lora_unet_")}
    kohya.load_lora_weights(lora)
    kemb = load_file(out_k / f"{name}.embedding.safetensors")
    kohya.load_textual_inversion(kemb["clip_l"], token=f"<{name}>", text_encoder=kohya.text_encoder, tokenizer=kohya.tokenizer)
    kohya.load_textual_inversion(kemb["clip_g"], token=f"<{name}>", text_encoder=kohya.text_encoder_2,
                                 tokenizer=kohya.tokenizer_2)
    assert np.abs(stock_image(kohya) - theirs).max() <= 2.0


# --- single-file checkpoints ----------------------------------------------------------------
# The inverse of diffusers' from_single_file conversion (diffusers/loaders/single_file_utils.py):
# a pipeline's weights under the original (ldm / sgm) tensor names, as A1111 and ComfyUI save them.

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))


def _ldm_unet(unet) -> dict:
    import re

    per = unet.config.layers_per_block + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    up_has_attn = {i: hasattr(b, "attentions") for i, b in enumerate(unet.up_blocks)}
    out = {}
    for key, value in unet.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in fixed:
            out[f"{fixed[module]}.{leaf}"] = value
            continue
        m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", key)
        if m:
            side, b, part, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            if side == "down_blocks":
                block = f"input_blocks.{(b + 1) * per}.0.op" if part == "downsamplers" else \
                    f"input_blocks.{b * per + j + 1}.{0 if part == 'resnets' else 1}"
            else:
                block = f"output_blocks.{b * per + per - 1}.{2 if up_has_attn[b] else 1}" if part == "upsamplers" else \
                    f"output_blocks.{b * per + j}.{0 if part == 'resnets' else 1}"
            if part in ("downsamplers", "upsamplers"):
                rest = rest.removeprefix("conv.") if part == "downsamplers" else rest
        else:
            m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
            assert m, key
            part, j, rest = m.group(1), int(m.group(2)), m.group(3)
            block = f"middle_block.{2 * j if part == 'resnets' else 1}"
        if part == "resnets":
            for new, old in _RESNET:
                rest = rest.replace(new, old)
        out[f"{block}.{rest}"] = value
    return {f"model.diffusion_model.{k}": v for k, v in out.items()}


def _ldm_vae(vae) -> dict:
    import re

    n_up = len(vae.config.up_block_types)
    out = {}
    for key, value in vae.state_dict().items():
        k = key.replace("conv_norm_out", "norm_out")
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.block.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.", k)
        k = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("conv_shortcut", "nin_shortcut")
        if "mid_block.attentions.0." in k:
            k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
            for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                k = k.replace(f".{new}.", f".{old}.")
            if value.ndim == 2:  # the original attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        out[k] = value
    return {f"first_stage_model.{k}": v for k, v in out.items()}


def _open_clip(te, prefix: str) -> dict:
    state = {k.removeprefix("text_model."): v for k, v in te.state_dict().items()}
    out = {"positional_embedding": state.pop("embeddings.position_embedding.weight"),
           "token_embedding.weight": state.pop("embeddings.token_embedding.weight")}
    if "text_projection.weight" in state:  # SDXL's OpenCLIP-G (SD 2.x's encoder has none)
        out["text_projection"] = state.pop("text_projection.weight").T.contiguous()
    state.pop("embeddings.position_ids", None)
    for leaf in ("weight", "bias"):
        out[f"ln_final.{leaf}"] = state.pop(f"final_layer_norm.{leaf}")
    for i in range(te.config.num_hidden_layers):
        p, q = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{q}attn.in_proj_{leaf}"] = torch.cat([state.pop(f"{p}self_attn.{x}_proj.{leaf}") for x in "qkv"])
            for new, old in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                             ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[f"{q}{old}.{leaf}"] = state.pop(f"{p}{new}.{leaf}")
    assert not state, sorted(state)
    return {prefix + k: v for k, v in out.items()}


def _clip(te, prefix: str) -> dict:
    return {f"{prefix}text_model.{k.removeprefix('text_model.')}": v for k, v in te.state_dict().items()
            if not k.endswith("position_ids")}


def write_single_file(pipe_dir, out_file, sd2: bool = False):
    """The pipeline at `pipe_dir` as one original-layout .safetensors file, and its configs (no
    weights) in <stem>.config/ beside it."""
    import shutil

    from safetensors.torch import save_file

    pipe = diffusion.load_base(str(pipe_dir), device="cpu")
    tensors = {**_ldm_unet(pipe.unet), **_ldm_vae(pipe.vae)}
    if bases.family_of_pipe(pipe) == "sdxl":
        tensors.update(_clip(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        tensors.update(_open_clip(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    elif sd2:  # SD 2.x: OpenCLIP-H under cond_stage_model.model.
        tensors.update(_open_clip(pipe.text_encoder, "cond_stage_model.model."))
    else:
        tensors.update(_clip(pipe.text_encoder, "cond_stage_model.transformer."))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_file))
    config = out_file.with_name(out_file.stem + ".config")
    shutil.copytree(pipe_dir, config, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return pipe


def build_tiny_sd1(root):
    """A plain SD 1.x layout (no pooled text path, unlike studio-mini) for the single-file round trip."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(1)
    tok = CLIPTokenizer.from_pretrained(root / "tok") if (root / "tok").exists() else None
    if tok is None:
        from generators import miniworld
        from generators.sd_mini.tokenizer import build_tokenizer

        build_tokenizer(miniworld.caption_words(), root / "tok", 40)
        tok = CLIPTokenizer.from_pretrained(root / "tok")
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=40, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
                                block_out_channels=(32, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32), layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=PNDMScheduler(skip_prk_steps=True),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = root / "sd1"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


@pytest.mark.parametrize("layout", ["sdxl", "sd1", "sd2"])
def test_single_file_checkpoint_loads_offline_and_draws_the_same(layout, sdxl_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    family = "sdxl" if layout == "sdxl" else "sd"
    pipe_dir = sdxl_dir if family == "sdxl" else build_tiny_sd1(tmp_path)
    single = tmp_path / "model.safetensors"
    original = write_single_file(pipe_dir, single, sd2=layout == "sd2")
    assert bases.family_of_keys(bases.safetensors_keys(single)) == layout and bases.family_of_file(single) == family
    assert diffusion.resolution_of(str(single)) == 32
    loaded = diffusion.load_base(str(single), device="cpu")
    assert type(loaded).__name__ == type(original).__name__
    for name in ("unet", "vae", "text_encoder") + (("text_encoder_2",) if family == "sdxl" else ()):
        a, b = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert set(a) <= set(b), name
        assert all(torch.equal(a[k], b[k].reshape(a[k].shape)) for k in a), name
    s = diffusion.GenerationSettings(prompt="a red star", seed=1, steps=2, width=32, height=32)
    x = np.asarray(diffusion.generate(original, [s])[0], np.float32)
    y = np.asarray(diffusion.generate(loaded, [s])[0], np.float32)
    assert np.abs(x - y).max() <= 1.0


def test_single_file_errors_are_one_line(tmp_path):
    from safetensors.torch import save_file

    odd = tmp_path / "odd.safetensors"
    save_file({"something.else.weight": torch.zeros(2)}, str(odd))
    noconf = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.1.model.positional_embedding": torch.zeros(2, 2)}, str(noconf))
    for path, message in ((odd, "unknown layout"), (noconf, "needs its diffusers configs"), (tmp_path / "m.ckpt", "not a .safetensors")):
        path.touch()
        proc = subprocess.run([sys.executable, "-m", "studio", "generate", "--prompt", "x", "--out", str(tmp_path / "o"),
                               "--base", str(path)], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "SDXL" in subprocess.run([sys.executable, "-m", "studio", "generate", "--prompt", "x", "--out", str(tmp_path / "o"),
                                     "--base", str(odd)], capture_output=True, text=True).stderr


# --- synthetic data on SDXL -------------------------------------------------------------------


def test_synth_fit_and_export_on_sdxl(sdxl_dir, tmp_path, capsys):
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from generators.synthetic import export as exp
    from generators.synthetic import fit as ft
    from generators.synthetic import lora
    from studio.cli import main
    from tests.test_synthetic import render_birds

    data = tmp_path / "real"
    render_birds(data, n=2)
    w = tmp_path / "w"
    assert main(["synth", "fit", str(data), "--category", "bird", "--work", str(w), "--base", str(sdxl_dir),
                 "--steps", "2", "--batch-size", "2", "--rank", "2", "--device", "cpu", "--extractor", "miniworld"]) == 0
    state = load_file(str(w / ft.LORA_FILE))
    assert {k.split(".")[0] for k in state} == {"unet", "text_encoder", "text_encoder_2"}
    stock = StableDiffusionXLPipeline.from_pretrained(sdxl_dir, local_files_only=True)
    stock.load_lora_weights(str(w), weight_name=ft.LORA_FILE)  # every key lands in stock diffusers
    assert main(["synth", "export", "--work", str(w), "--out", str(tmp_path / "o"), "--per-class", "1", "--steps", "1",
                 "--device", "cpu"]) == 0
    assert len(list((tmp_path / "o" / "train").glob("*/*.png"))) == 3

    # learnt class words: one trained row per class in each encoder, loaded back by the export
    cfg = ft.FitConfig(category="bird", base=str(sdxl_dir), steps=2, batch_size=2, rank=2, alpha=2.0, warmup_steps=1,
                       extractor="miniworld", class_words="learnt")
    ft.fit(data, tmp_path / "t", cfg, device="cpu")
    vectors = load_file(str(tmp_path / "t" / lora.CLASS_TOKENS_FILE))
    assert sorted(vectors) == sorted(f"{k}.<{c}>" for k in ("clip_l", "clip_g") for c in ("finch", "robin", "sparrow"))
    pipe = lora.load_lora_into(diffusion.load_base(str(sdxl_dir), device="cpu"), tmp_path / "t" / ft.LORA_FILE, fuse=False)
    tid = pipe.tokenizer_2.convert_tokens_to_ids("<robin>")
    assert torch.allclose(pipe.text_encoder_2.get_input_embeddings().weight[tid], vectors["clip_g.<robin>"])
    exp.export(tmp_path / "t", tmp_path / "o2", exp.ExportConfig(per_class=1, seed=1, steps=1, batch_size=2), device="cpu")
    assert len(list((tmp_path / "o2" / "train").glob("*/*.png"))) == 3


def test_ingest_and_export_cli_on_sdxl(sdxl_dir, tmp_path, capsys):
    from studio.cli import main
    from styles.museum import Museum
    from tests.test_museum import make_style_folder

    make_style_folder(tmp_path / "in" / "sepia", "sepia")
    m = tmp_path / "m"
    assert main(["ingest", str(tmp_path / "in"), "--museum", str(m), "--base", str(sdxl_dir), "--steps", "2",
                 "--device", "cpu"]) == 0
    assert "sepia: learnt as <sepia>" in capsys.readouterr().out
    assert Museum.open(m).family == "sdxl"
    assert main(["export", "sepia", "--museum", str(m), "--format", "kohya", "--out", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "sepia.embedding.safetensors").is_file()


def test_interrupted_sdxl_task_resumes_to_the_same_result(sdxl_dir, tmp_path):
    """The checkpoint holds both encoders' token vectors (and their Adam moments)."""
    from generators.museum.engine import learn
    from styles.folder import read_style_folder
    from styles.museum import Museum
    from tests.test_museum import make_style_folder, stop_after

    folder = make_style_folder(tmp_path / "in" / "mosaic", "mosaic")
    straight = Museum.open(tmp_path / "a", base=str(sdxl_dir), create=True)
    learn(straight, read_style_folder(folder, 32), _museum_cfg(), str(sdxl_dir), "cpu")
    resumed = Museum.open(tmp_path / "b", base=str(sdxl_dir), create=True)
    assert learn(resumed, read_style_folder(folder, 32), _museum_cfg(), str(sdxl_dir), "cpu",
                 run=Run(should_stop=stop_after(2))).get("stopped")
    manifest = learn(resumed, read_style_folder(folder, 32), _museum_cfg(), str(sdxl_dir), "cpu")
    assert manifest["result"]["resumed_from"] == 2
    for key in ("clip_l", "clip_g"):
        assert torch.allclose(straight.embedding("mosaic")[key], resumed.embedding("mosaic")[key], atol=1e-6)
    a, b = straight.lora_state(), resumed.lora_state()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
