"""The measured parts of bench/speed.py: each runs in a fresh process (speed.isolated) and returns
its figures; JOBS names them. Studio's side and its plain reference sit side by side here."""

from __future__ import annotations

import contextlib
import math
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generators import diffusion, miniworld
from generators.museum.config import MuseumConfig
from generators.museum.train import attach_lora, learn_style, load_pipe_style_tokens, lora_layers
from generators.run import Run
from styles.reference import apply_style


def style_images(n: int, size: int, style: str, seed: int):
    return [apply_style(style, miniworld.generate(seed, i, size=size).image, seed=i) for i in range(n)]


def _peak_memory(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)


def _load(args):
    device = diffusion.resolve_device(args.device)
    pipe = diffusion.load_base(args.base_path, args.device, "fp32")
    return pipe, device


def first_task(args) -> dict:
    """A first museum task (2 steps), saved for museum_step: the LoRA state and the token vector."""
    from safetensors.torch import save_file

    pipe, _ = _load(args)
    size = diffusion.base_resolution(pipe)
    cfg = MuseumConfig(steps=2, batch_size=args.batch, checkpoint_every=10**9)
    lora, vec, _ = learn_style(pipe, "<first>", style_images(6, size, "sepia", 1), [None] * 6, cfg, None, [])
    vecs = vec if isinstance(vec, (list, tuple)) else [vec]  # SDXL: one vector per text encoder
    save_file({**{k: v.contiguous() for k, v in lora.items()}, **{f"<first>.{i}": v.contiguous() for i, v in enumerate(vecs)}},
              args.first_task)
    return {}


def museum_step(args) -> dict:
    """Per-step time of a museum task with every term on (a second task: replay and weight terms live).

    args.variant picks the memory options: {"gradient_checkpointing": bool, "attention": "sdpa" | "classic",
    "precision": ...}; the default is Studio's default (SDPA, no checkpointing, args.precision)."""
    from safetensors.torch import load_file

    variant = getattr(args, "variant", None) or {}
    first = load_file(args.first_task)  # written by first_task() in another process: this one holds one pipeline
    first_vecs = [first.pop(k) for k in sorted(k for k in list(first) if k.startswith("<first>."))]
    first_lora = first
    pipe2, device = _load(args)
    size = diffusion.base_resolution(pipe2)
    load_pipe_style_tokens(pipe2, {"<first>": first_vecs})
    if variant.get("attention") == "classic":
        from diffusers.models.attention_processor import AttnProcessor

        pipe2.unet.set_attn_processor(AttnProcessor())
    times = []
    last = [time.perf_counter()]

    def progress(step, total, **info):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # The feature term runs every k-th step: time whole cycles (steps rounded up to k), warm-up first.
    default = MuseumConfig(batch_size=args.batch)
    k = max(1, math.ceil((default.replay_batch or args.batch) / (default.replay_share * args.batch)))
    warmup, timed = math.ceil(args.warmup / k) * k, math.ceil(args.steps / k) * k
    cfg = MuseumConfig(steps=warmup + timed, batch_size=args.batch, checkpoint_every=10**9,
                       precision=variant.get("precision", args.precision),
                       gradient_checkpointing=variant.get("gradient_checkpointing", False))
    learn_style(pipe2, "<second>", style_images(6, size, "pixel_art", 2), [None] * 6, cfg, first_lora,
                [{"token": "<first>", "captions": ["a picture"]}], run=Run(progress=progress))
    return {"step_s": statistics.mean(times[warmup:]), "peak_mib": _peak_memory(device)}


def reference_step(args) -> dict:
    """The diffusers LoRA fine-tuning recipe's step for the base's family, on the same LoRA, batch and
    resolution: encode (VAE), noise, predict, MSE on the UNet's LoRA only.
    SD 1.x/2.x, train_text_to_image_lora: the VAE and the text encoder under the autocast.
    SDXL, train_text_to_image_lora_sdxl: the VAE encodes in fp32 (outside the autocast: an fp16 SDXL
    VAE overflows), both text encoders frozen (penultimate hidden states concatenated,
    text_encoder_2's pooled projection), the added time ids (original size, crop top-left, target size)."""
    pipe, device = _load(args)
    size = diffusion.base_resolution(pipe)
    cfg = MuseumConfig()
    attach_lora(pipe.unet, cfg, None)
    pipe.unet.requires_grad_(False)
    params = [p for m in lora_layers(pipe.unet).values() for p in (m.lora_A["museum"].weight, m.lora_B["museum"].weight)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    images = style_images(6, size, "pixel_art", 2)
    x_all = torch.stack([torch.from_numpy(np.asarray(im, np.float32)).permute(2, 0, 1) for im in images]) / 127.5 - 1
    family = "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"
    encode_text = _recipe_text_encoding(family, pipe, size, device, args.batch)
    times = []
    autocast = _autocast(device, args.precision)
    vae_context = contextlib.nullcontext() if family == "sdxl" else autocast
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        idx = torch.randint(6, (args.batch,))
        with vae_context, torch.no_grad():
            latents = pipe.vae.encode(x_all[idx].to(device)).latent_dist.sample() * pipe.vae.config.scaling_factor
        with autocast:
            with torch.no_grad():
                cond, added = encode_text(idx)
            noise = torch.randn_like(latents)
            t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), device=device)
            noisy = sched.add_noise(latents, noise, t)
            pred = pipe.unet(noisy, t, encoder_hidden_states=cond, added_cond_kwargs=added).sample
        loss = F.mse_loss(pred.float(), noise.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"step_s": statistics.mean(times[args.warmup:]), "peak_mib": _peak_memory(device)}


def _recipe_text_encoding(family: str, pipe, size: int, device, batch: int):
    """The recipe's frozen text conditioning of a batch (image indices) for a family ("sd" or "sdxl"):
    idx -> (encoder_hidden_states, added_cond_kwargs)."""
    texts = ["a picture, <second>"] * 6
    tokenizers = (pipe.tokenizer, pipe.tokenizer_2) if family == "sdxl" else (pipe.tokenizer,)
    ids_all = [tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
               for tok in tokenizers]
    if family == "sd":
        return lambda idx: (pipe.text_encoder(ids_all[0][idx].to(device))[0], None)
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32, device=device)

    def encode(idx):  # encode_prompt() of the SDXL recipe
        hidden = []
        for te, ids in zip((pipe.text_encoder, pipe.text_encoder_2), ids_all):
            out = te(ids[idx].to(device), output_hidden_states=True)
            pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1), {"time_ids": time_ids.repeat(batch, 1), "text_embeds": pooled}

    return encode


def _autocast(device, precision):
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)


def sampling(args) -> dict:
    """Time per image: base pipeline vs base + a museum style (shared LoRA fused + token), alternating."""
    from generators.museum.engine import load_museum_pipeline
    from styles.museum import Museum

    pipe, device = _load(args)
    size = diffusion.base_resolution(pipe)
    with tempfile.TemporaryDirectory() as tmp:
        museum = Museum.open(Path(tmp) / "m", base=diffusion.base_name(args.base_path), create=True)
        cfg = MuseumConfig(steps=2, batch_size=2, sample_steps=2)
        from generators.museum.engine import learn
        from styles.folder import read_style_folder

        for style in ("sepia", "pixel_art"):
            folder = Path(tmp) / style
            folder.mkdir()
            for i, im in enumerate(style_images(4, size, style, 3)):
                im.save(folder / f"{i}.png")
            learn(museum, read_style_folder(folder, size), cfg, args.base_path, args.device)
        styled = load_museum_pipeline(museum, args.base_path, args.device, "fp32")
        settings = lambda prompt: [diffusion.GenerationSettings(prompt=prompt, seed=k, steps=args.sample_steps,  # noqa: E731
                                                                width=size, height=size) for k in range(args.images)]
        base_t, styled_t = [], []
        diffusion.generate(pipe, settings("a red star"), batch_size=args.images)
        diffusion.generate(styled, settings("a red star, <sepia>"), batch_size=args.images)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            diffusion.generate(pipe, settings("a red star on the grass background"), batch_size=args.images)
            base_t.append((time.perf_counter() - t0) / args.images)
            t0 = time.perf_counter()
            diffusion.generate(styled, settings("a red star on the grass background, <sepia>"), batch_size=args.images)
            styled_t.append((time.perf_counter() - t0) / args.images)
        # Switching the active style: every style's token is loaded and the LoRA is shared and
        # fused, so a switch is a new prompt; measured as encoding the new style's prompt.
        switch = []
        for k in range(args.repeats * 4):
            t0 = time.perf_counter()
            styled.encode_prompt(f"a red star on the grass background, {'<sepia>' if k % 2 else '<pixel_art>'}",
                                 styled.device, 1, True, "")
            switch.append(time.perf_counter() - t0)
    return {"base_s_per_image": statistics.median(base_t), "styled_s_per_image": statistics.median(styled_t),
            "style_switch_s": statistics.median(switch)}


def style_learning(args) -> dict:
    """One style learnt end to end at default settings (10 images, MuseumConfig()): wall time."""
    from generators.museum.engine import learn
    from styles.folder import read_style_folder
    from styles.museum import Museum

    size = diffusion.resolution_of(args.base_path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "watercolor"
        folder.mkdir()
        for i, im in enumerate(style_images(10, size, "watercolor", 4)):
            im.save(folder / f"{i}.png")
        museum = Museum.open(Path(tmp) / "m", base=diffusion.base_name(args.base_path), create=True)
        t0 = time.perf_counter()
        manifest = learn(museum, read_style_folder(folder, size), MuseumConfig(precision=args.precision), args.base_path,
                         args.device)
        wall = time.perf_counter() - t0
    return {"style_learning_s": wall, "style_learning_steps": manifest["result"]["steps"]}


def gan(args) -> dict:
    """Lifelong GAN on the default gan-mini architecture (random weights: speed does not depend on
    them): a task's training iteration, and sampling its baked generator vs the base, alternating."""
    from generators.gan.folder import load_generator, save_discriminator, save_generator
    from generators.gan.lifelong import learn_task, load_task_generator
    from generators.gan.sampling import generate
    from generators.gan.stylegan2 import Discriminator, GANConfig, Generator
    from generators.gan.task_trainer import TrainConfig

    device = diffusion.resolve_device(args.device)
    cfg = GANConfig()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        torch.manual_seed(0)
        save_generator(Generator(cfg), cfg, base)
        save_discriminator(Discriminator(cfg), cfg, base)
        shots = Path(tmp) / "shots"
        shots.mkdir()
        for i, im in enumerate(style_images(10, cfg.resolution, "pixel_art", 5)):
            im.save(shots / f"{i}.png")
        meta = learn_task(Path(tmp) / "store", "speed", shots, base=base, device=args.device,
                          train=TrainConfig(iters=args.gan_iters, w_avg_samples=512))
        task_G, _ = load_task_generator(Path(tmp) / "store", "speed", device=args.device)
        base_G = load_generator(base, device=device).eval()
        n = args.images * 4

        def timed(G):
            t0 = time.perf_counter()
            generate(G, n, 0, batch=n)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - t0) / n

        timed(base_G), timed(task_G)
        base_t, task_t = [], []
        for _ in range(args.repeats * 2):
            base_t.append(timed(base_G))
            task_t.append(timed(task_G))
    return {"gan_iter_s": meta["timings"]["s_per_iter"], "gan_base_s_per_image": statistics.median(base_t),
            "gan_task_s_per_image": statistics.median(task_t)}


def synth_export(args) -> dict:
    """Synthetic export (batched, LoRA fused, PNGs and metadata written) vs a plain diffusers loop, one
    image per call, at the same steps, guidance and size: images per second, each timed end to end
    from loading the pipeline. The fit is 2 steps: speed does not depend on it."""
    from generators.synthetic.export import ExportConfig, export
    from generators.synthetic.fit import FitConfig, fit

    size = diffusion.resolution_of(args.base_path)
    n_classes, per_class = 2, max(2, args.images // 2)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for c, kind in enumerate(("fish", "car")):
            (data / kind).mkdir(parents=True)
            for i in range(3):
                miniworld.generate(6, 100 * c + i, size=size, kinds=(kind,)).image.save(data / kind / f"{i}.png")
        fit(data, Path(tmp) / "work", FitConfig(base=args.base_path, steps=2, batch_size=2), device=args.device)
        ecfg = ExportConfig(per_class=per_class, steps=args.sample_steps, precision=args.precision)
        t0 = time.perf_counter()
        export(Path(tmp) / "work", Path(tmp) / "out", ecfg, device=args.device)
        export_ips = n_classes * per_class / (time.perf_counter() - t0)
        t0 = time.perf_counter()  # both sides timed end to end, loading the pipeline included
        pipe = diffusion.load_base(args.base_path, args.device, args.precision)  # a stock StableDiffusionPipeline
        pipe.set_progress_bar_config(disable=True)
        for k in range(n_classes * per_class):
            pipe(f"a {('fish', 'car')[k % 2]} object", num_inference_steps=args.sample_steps, guidance_scale=ecfg.guidance,
                 width=size, height=size, generator=torch.Generator("cpu").manual_seed(k))
        plain_ips = n_classes * per_class / (time.perf_counter() - t0)
    return {"export_images_per_s": export_ips, "plain_loop_images_per_s": plain_ips}


JOBS = {"first_task": first_task, "museum_step": museum_step, "reference_step": reference_step, "sampling": sampling, "style_learning": style_learning,
        "gan": gan, "synth_export": synth_export}
