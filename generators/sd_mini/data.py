"""studio-mini's training data: mini-world renderings with their captions (plain, species,
product prompt forms, style-family components), the autoencoder's generic texture
augmentation, and the cached latents the UNet trains on."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from generators import miniworld
from generators.errors import UserError



def _render_one(args):
    seed, index, size, kinds, species, style, family, product, emphasis = args
    sample = miniworld.generate(seed, index, size=size, held_out=False, kinds=kinds, with_mask=bool(family))
    attrs = sample.attributes
    image = sample.image
    if product:
        from generators.sd_mini import style_family

        rng = np.random.default_rng([seed, index, 7])
        caption = style_family.pretraining_caption(attrs, rng)
        if family:
            components = style_family.sample_components(rng, emphasis=emphasis)
            image = style_family.apply_components(image, components, rng, sample.mask)
            caption = f"{caption}, {', '.join(components)}"
        return np.asarray(image, dtype=np.uint8), caption
    # Every other bird without its colour word: the prompts that name a class (DataDream's "a
    # sparrow bird", BOB's template) carry no colour, and a species word learnt only after one did
    # not fire without it (docs/lab/2026-12-notebook.md). Other kinds keep their plain caption.
    caption = attrs.species_caption(with_colour=index % 2 == 0) if species else attrs.caption
    if style:
        from styles.reference import apply_style

        # The style's name where a museum puts a style's token: after the content.
        image, caption = apply_style(style, image, seed=index), f"{caption}, {style}"
    return np.asarray(image, dtype=np.uint8), caption


def render_dataset(n: int, seed: int, size: int, workers: int | None = None, species_captions: bool = False,
                   bird_share: float | None = None, caption_styles: tuple[str, ...] = (), style_share: float = 0.0,
                   family_share: float = 0.0, product_captions: bool = False, family_emphasis: dict | None = None):
    """n images (uint8 N×H×W×3) and their captions; held-out triples excluded.

    bird_share: that fraction of the images are birds (drawn with seed + 1), the rest every kind
    equally often; species_captions: birds' captions name their subclass. style_share: that
    fraction (drawn with seed + 2) rendered in caption_styles in turn, the style's name ending the
    caption; the rest plain. product_captions: captions in the product's prompt forms
    (style_family.pretraining_caption), and family_share of the images (every k-th, spread evenly)
    drawn with style-family components named at the caption's end, sampled with family_emphasis
    (style_family.sample_components)."""
    n_birds = round(n * bird_share) if bird_share else 0
    n_styled = round(n * style_share) if caption_styles else 0
    if n_birds + n_styled > n:
        raise UserError(f"bird_share {bird_share} and style_share {style_share} add up to more than the whole set")
    if family_share and not product_captions:
        raise UserError("family_share needs product_captions (the family's words follow the product's caption forms)")
    family = lambda j: family_share > 0 and (j * family_share) % 1 + family_share >= 1  # noqa: E731  (spread evenly)
    jobs = [(seed, i, size, miniworld.KINDS, species_captions, None) for i in range(n - n_birds - n_styled)]
    jobs += [(seed + 1, i, size, ("bird",), species_captions, None) for i in range(n_birds)]
    jobs += [(seed + 2, i, size, miniworld.KINDS, species_captions, caption_styles[i % len(caption_styles)])
             for i in range(n_styled)]
    jobs = [job + (family(j), product_captions, family_emphasis or None) for j, job in enumerate(jobs)]
    workers = workers if workers is not None else min(16, os.cpu_count() or 1)
    if workers > 1 and n >= 2000:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            out = pool.map(_render_one, jobs, chunksize=256)
    else:
        out = [_render_one(j) for j in jobs]
    return np.stack([o[0] for o in out]), [o[1] for o in out]


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).contiguous()


def gradient_map(luma: torch.Tensor, generator: torch.Generator, colours: int = 4) -> torch.Tensor:
    """Luminance through a random ramp of `colours` colours (tinted and false-colour palettes).

    luma: B×1×H×W in [0, 1]; returns B×3×H×W in [-1, 1]. Sorting each channel of the random
    colours keeps the ramp monotone, so darker input stays darker output."""
    b, _, h, w = luma.shape
    ramp = torch.rand(b, colours, 3, generator=generator, device=luma.device).sort(dim=1).values
    pos = luma.clamp(0, 1) * (colours - 1)
    lo = pos.floor().clamp(max=colours - 2).long()
    frac = pos - lo
    pick = lambda i: torch.gather(ramp, 1, i.flatten(1)[..., None].expand(-1, -1, 3)).view(b, h, w, 3).permute(0, 3, 1, 2)  # noqa: E731
    return (pick(lo) * (1 - frac) + pick(lo + 1) * frac) * 2 - 1


def dot_screen(x: torch.Tensor, luma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A printed-dot screen: dots of a random dark ink on a rotated grid of random pitch (4-10 px),
    covering about 1 - luma of the area, on white paper or on the image itself.

    x: B×3×H×W in [-1, 1]; luma: B×1×H×W in [0, 1]; returns B×3×H×W in [-1, 1]."""
    b, _, h, w = x.shape
    r = lambda *s: torch.rand(*s, generator=generator, device=x.device)  # noqa: E731
    py, px = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype),
                            indexing="ij")  # pixel units, so the cells stay square on any aspect ratio
    theta = r(b)[:, None, None] * math.pi
    pitch = (4 + r(b) * 6)[:, None, None]
    along = (px * torch.cos(theta) + py * torch.sin(theta)) / pitch
    across = (-px * torch.sin(theta) + py * torch.cos(theta)) / pitch
    cell = lambda u: torch.remainder(u, 1.0) - 0.5  # noqa: E731
    dist = torch.sqrt(cell(along) ** 2 + cell(across) ** 2)[:, None]  # 0 at dot centres, at most 0.71
    # Dot radius for ink coverage 1 - luma: a round dot of radius r covers πr² of its cell while it
    # fits (r ≤ 0.5, coverage ≤ π/4); darker tones grow it on to the cell's corner (0.71, all ink).
    dark = (1 - luma).clamp(0, 1)
    fits = dark <= math.pi / 4
    radius = torch.where(fits, torch.sqrt(dark / math.pi), 0.5 + 0.21 * (dark - math.pi / 4) / (1 - math.pi / 4))
    ink = (dist < radius).to(x.dtype)
    ink_colour = r(b, 3)[:, :, None, None] * 0.5
    paper = torch.where(r(b)[:, None, None, None] < 0.5, torch.ones_like(x), (x + 1) / 2)
    return ((1 - ink) * paper + ink * ink_colour) * 2 - 1


def generic_textures(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Generic image statistics for the autoencoder, each at random parameters.

    x: B×3×H×W in [-1, 1]. A third of the batch is left as it is; the rest gets one of gratings,
    grain, posterize, grey, blur, a `gradient_map` or a `dot_screen`. They are deliberately not
    the reference styles' renderers: they only widen what the autoencoder can reconstruct, so
    that the museum can teach styles later.
    """
    b, _, h, w = x.shape
    dev = x.device
    r = lambda *s: torch.rand(*s, generator=generator, device=dev)  # noqa: E731
    choice = (r(b) * 15).long()  # 0-4: unchanged
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev), indexing="ij")
    theta = r(b) * math.pi
    along = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    freq = 4 + r(b) * 28
    grating = torch.sin(along * freq[:, None, None])[:, None] * (0.2 + 0.5 * r(b))[:, None, None, None]
    luma = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3] + 1) / 2  # Rec. 601, in [0, 1]
    grey = (luma * 2 - 1).expand_as(x)
    levels = (2 + (r(b) * 4).long()).float()[:, None, None, None]
    posterized = torch.round((x + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
    noise = (torch.rand(x.shape, generator=generator, device=dev) - 0.5) * 0.6
    blurred = F.avg_pool2d(x, 3, 1, 1)
    mapped = gradient_map(luma, generator)
    screened = dot_screen(x, luma, generator)
    variants = {5: x + grating, 6: grey, 7: posterized, 8: grey + grating, 9: x + noise, 10: blurred,
                11: mapped, 12: mapped, 13: screened, 14: screened}
    out = x.clone()
    for key, v in variants.items():
        out = torch.where((choice == key)[:, None, None, None], v, out)
    return out.clamp(-1, 1)


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, device, batch: int = 512):
    """Posterior mean and std of every image (cached once; sampled per training step)."""
    means, stds = [], []
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch].to(device).float() / 127.5 - 1
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)
