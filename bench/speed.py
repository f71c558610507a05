"""Speed and memory of Studio against plain references, measured side by side (issue 8).

Each pair runs alternately after a warm-up; a step's time is the mean over the timed steps
(whole cycles of the museum's feature term), the figure the median over repeats, and every
`*_ratio` key is Studio / reference (`*_vs_default_*_ratio`: a memory option / Studio's default
step). Peak memory: CUDA's max_memory_allocated, or on the CPU the peak resident set of a fresh
child process per measurement. Parts (`--parts`, all by default):
  museum    museum training step, every term on, vs the diffusers LoRA recipe's step
  memory    the same step with gradient checkpointing, classic (non-SDPA) attention, bf16 autocast
  sampling  an image with a museum style vs the base pipeline; switching the active style
  style     one style learnt end to end at default settings (mini shape only)
  gan       a lifelong-GAN task's training iteration; its baked generator's sampling vs the base
  synth     synthetic export's images per second vs a plain diffusers loop (one image per call)
  threads   (only when named) the museum step under Studio's thread policy (studio/threads.py) vs
            torch's default count, alone and beside --competitors busy single-thread processes

    python bench/speed.py --shape mini --images 32 --json docs/figures/speed-mini-cpu.json
    python bench/speed.py --shape sd15 --resolution 256 --batch 1 --parts museum,memory,sampling --json docs/figures/speed-sd15-256-cpu.json
    bench/gpu_check.sh OUTDIR      # the GPU run: sd15 at 512 px in bf16, then the mini parts
    python bench/speed.py --parts threads --steps 4 --warmup 1 --repeats 1 --json docs/figures/speed-threads-cpu.json
    python bench/speed.py --shape sdxl --resolution 256 --sdxl-depths 1,1,2 --text-layers 3,8 --batch 1 --parts museum \
        --steps 2 --warmup 1 --repeats 1 --threads 1 --json docs/figures/speed-sdxl-256-slim-museum-cpu.json

Shapes: `mini` is the default embedded base; `sd15` is Stable Diffusion 1.5's architecture (UNet,
VAE and CLIP text encoder configs as published) with random weights: speed does not depend on
weight values, so nothing is downloaded. `sdxl` is SDXL 1.0 base's architecture the same way (UNet
320/640/1280 with transformer depths 1,2,10, cross-attention 2048, text_time added conditioning;
CLIP-L and OpenCLIP-G with projection; VAE; default 1024 px); on a small CPU `--sdxl-depths` and
`--text-layers` make it shallower (fewer transformer blocks per level, fewer text encoder layers)
while every width stays SDXL's. Its reference is diffusers' train_text_to_image_lora_sdxl step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
    os.environ.setdefault(_var, "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# The measured parts (museum step, its reference, sampling, ...) are bench/speed_parts.py; this file
# builds the shapes, runs each part in a fresh process and writes the figures.
from bench.speed_parts import JOBS  # noqa: E402
from generators import diffusion, miniworld  # noqa: E402


def sd15_pipeline(folder: Path, resolution: int) -> Path:
    """SD 1.5's published architecture with random weights, saved as a pipeline folder."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from generators.sd_mini.tokenizer import build_tokenizer

    unet = UNet2DConditionModel(sample_size=resolution // 8, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=resolution)
    tok = build_tokenizer(miniworld.caption_words(), folder / "tok", 77)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=PNDMScheduler(skip_prk_steps=True),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"


def sdxl_pipeline(folder: Path, resolution: int, depths=(1, 2, 10), text_layers=(12, 32)) -> Path:
    """SDXL 1.0 base's published architecture with random weights, saved as a pipeline folder.
    depths: transformer blocks per UNet level (SDXL: 1, 2, 10; the first level has none);
    text_layers: layers of CLIP-L and OpenCLIP-G (SDXL: 12, 32). Widths are always SDXL's."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from generators.sd_mini.tokenizer import build_tokenizer

    build_tokenizer(miniworld.caption_words(), folder / "tok", 77)
    tok, tok2 = CLIPTokenizer.from_pretrained(folder / "tok"), CLIPTokenizer.from_pretrained(folder / "tok")

    def text_config(width, layers, heads, act):
        return CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                              num_attention_heads=heads, max_position_embeddings=77, hidden_act=act, projection_dim=1280,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    te = CLIPTextModel(text_config(768, text_layers[0], 12, "quick_gelu"))
    te2 = CLIPTextModelWithProjection(text_config(1280, text_layers[1], 20, "gelu"))
    unet = UNet2DConditionModel(
        sample_size=resolution // 8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
        use_linear_projection=True, cross_attention_dim=2048, transformer_layers_per_block=tuple(depths),
        addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=resolution, scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler)
    pipe.save_pretrained(folder / "pipe", safe_serialization=True)
    return folder / "pipe"


def _child(job, args_dict, queue):
    """One measurement in a fresh process, so its peak memory is its own."""
    torch.set_num_threads(args_dict["threads"])
    try:
        queue.put(JOBS[job](argparse.Namespace(**args_dict)))
    except Exception as err:  # report, do not hang the parent
        queue.put({"error": f"{type(err).__name__}: {err}"})


@contextlib.contextmanager
def _without_thread_env():
    """Children started inside see no OMP/MKL thread variables: torch's own defaults."""
    saved = {k: os.environ.pop(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def torch_default_threads() -> int:
    """torch's intra-op count in a fresh process with no thread variables set (one per core)."""
    import subprocess

    with _without_thread_env():
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, check=True, env=dict(os.environ))
    return int(out.stdout.split()[-1])


def _busy(deadline: float) -> None:
    """A competing process: one thread of matmuls until the deadline (the parent also kills it)."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while time.time() < deadline:
        a = torch.tanh(a @ a)


@contextlib.contextmanager
def competitors(n: int, seconds: float):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_busy, args=(time.time() + seconds,), daemon=True) for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.join()


def isolated(job: str, args, clean_env: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(job, vars(args), queue))
    with _without_thread_env() if clean_env else contextlib.nullcontext():
        proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{job}: {result['error']}")
    return result


MEMORY_VARIANTS = {"gradient_checkpointing": {"gradient_checkpointing": True}, "classic_attention": {"attention": "classic"},
                   "bf16": {"precision": "bf16"}}
PARTS = ("museum", "memory", "sampling", "style", "gan", "synth", "threads")
DEFAULT_PARTS = PARTS[:-1]  # threads spawns busy processes: only when asked for


def thread_policy(args, med) -> dict:
    """The museum step under Studio's default thread policy vs torch's default count (each child
    started with no thread variables, as from a user's shell), alone and beside busy processes.
    Ratios are policy / torch default (Studio / reference); a slowdown is loaded / alone."""
    from studio.threads import DEFAULT_THREADS

    default = torch_default_threads()
    sides = {"policy": DEFAULT_THREADS, "torch_default": default}
    rows = {f"{side}_{load}": [] for side in sides for load in ("alone", "loaded")}
    for _ in range(args.repeats):
        for load in ("alone", "loaded"):
            with competitors(args.competitors if load == "loaded" else 0, seconds=3600):
                for side, n in sides.items():
                    job_args = argparse.Namespace(**{**vars(args), "threads": n})
                    rows[f"{side}_{load}"].append(isolated("museum_step", job_args, clean_env=True))
    out = {"threads_policy": DEFAULT_THREADS, "threads_torch_default": default, "competitors": args.competitors}
    for key, r in rows.items():
        out[f"{key}_step_s"] = med(r, "step_s")
    for load in ("alone", "loaded"):
        out[f"threads_{load}_step_time_ratio"] = out[f"policy_{load}_step_s"] / out[f"torch_default_{load}_step_s"]
    for side in sides:
        out[f"{side}_load_slowdown"] = out[f"{side}_loaded_step_s"] / out[f"{side}_alone_step_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["mini", "sd15", "sdxl"], default="mini")
    p.add_argument("--base", default=None, help="mini shape: another pipeline folder than the default embedded base")
    p.add_argument("--resolution", type=int, default=None, help="sd15 (default 512) and sdxl (default 1024) only")
    p.add_argument("--sdxl-depths", default="1,2,10", help="sdxl: transformer blocks per UNet level (SDXL's: 1,2,10)")
    p.add_argument("--text-layers", default="12,32", help="sdxl: layers of CLIP-L, OpenCLIP-G (SDXL's: 12,32)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--gan-iters", type=int, default=6, help="training iterations timed for the GAN task")
    p.add_argument("--competitors", type=int, default=1, help="threads part: busy single-thread processes beside the step")
    p.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                   help=f"comma list from {','.join(PARTS)} (default: all but threads; style: mini shape only)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    parts = args.parts.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown --parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    tmp = None
    if args.shape == "sd15":
        tmp = tempfile.TemporaryDirectory()
        args.resolution = args.resolution or 512
        args.base_path = str(sd15_pipeline(Path(tmp.name), args.resolution))
    elif args.shape == "sdxl":
        tmp = tempfile.TemporaryDirectory()
        args.resolution = args.resolution or 1024
        depths = tuple(int(x) for x in args.sdxl_depths.split(","))
        text_layers = tuple(int(x) for x in args.text_layers.split(","))
        if len(depths) != 3 or len(text_layers) != 2:
            p.error("--sdxl-depths takes 3 numbers, --text-layers 2")
        args.base_path = str(sdxl_pipeline(Path(tmp.name), args.resolution, depths, text_layers))
    else:
        args.base_path = args.base
    out = {"shape": args.shape, "resolution": args.resolution or diffusion.resolution_of(args.base_path), "device": args.device,
           "precision": args.precision, "batch": args.batch, "command": " ".join(sys.argv), "threads": args.threads,
           "machine": torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu, {os.cpu_count()} cores"}
    if args.shape == "sdxl":
        out.update(sdxl_depths=args.sdxl_depths, text_layers=args.text_layers,
                   sdxl_reduced=args.sdxl_depths != "1,2,10" or args.text_layers != "12,32")
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    if {"museum", "memory", "threads"} & set(parts):
        scratch = tempfile.TemporaryDirectory()
        args.first_task = str(Path(scratch.name) / "first.safetensors")
        isolated("first_task", args)
    if "threads" in parts:
        out.update(thread_policy(args, med))
    if "museum" in parts or "memory" in parts:
        museum, reference = [], []
        for _ in range(args.repeats):  # alternate the two sides
            reference.append(isolated("reference_step", args))
            museum.append(isolated("museum_step", args))
        out.update(museum_step_s=med(museum, "step_s"), reference_step_s=med(reference, "step_s"),
                   museum_peak_mib=med(museum, "peak_mib"), reference_peak_mib=med(reference, "peak_mib"))
        out["museum_step_time_ratio"] = out["museum_step_s"] / out["reference_step_s"]
        out["museum_step_memory_ratio"] = out["museum_peak_mib"] / out["reference_peak_mib"]
    if "memory" in parts:  # each option against the default museum step, both measured in this run
        for name, variant in MEMORY_VARIANTS.items():
            if variant.get("precision") == args.precision:
                continue
            rows = [isolated("museum_step", argparse.Namespace(**{**vars(args), "variant": variant})) for _ in range(args.repeats)]
            out[f"{name}_step_s"], out[f"{name}_peak_mib"] = med(rows, "step_s"), med(rows, "peak_mib")
            out[f"{name}_vs_default_time_ratio"] = out[f"{name}_step_s"] / out["museum_step_s"]
            out[f"{name}_vs_default_memory_ratio"] = out[f"{name}_peak_mib"] / out["museum_peak_mib"]
    if "sampling" in parts:
        s = isolated("sampling", args)
        out.update(s)
        out["styled_sampling_ratio"] = s["styled_s_per_image"] / s["base_s_per_image"]
    if "style" in parts and args.shape == "mini":
        out.update(isolated("style_learning", args))
    if "gan" in parts:
        g = isolated("gan", args)
        out.update(g)
        out["gan_task_sampling_ratio"] = g["gan_task_s_per_image"] / g["gan_base_s_per_image"]
    if "synth" in parts:
        e = isolated("synth_export", args)
        out.update(e)
        out["synth_export_speed_ratio"] = e["export_images_per_s"] / e["plain_loop_images_per_s"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
