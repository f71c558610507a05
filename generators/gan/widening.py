"""Widening a trained gan-mini without changing what it computes (warm starts of `studio pretrain gan --init-from`).

Function-preserving widening, the zero fan-in variant of Net2Net's wider operator (Chen et al.,
ICLR 2016, §3.1): the old network becomes the leading block of every layer of the wider one.
"""

from __future__ import annotations

from torch import nn

from generators.errors import UserError
from generators.gan.layers import HookedLayer
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator


def widen_generator(old: Generator, config: GANConfig) -> Generator:
    """A wider generator (`config.channels` ≥ the old widths, all else equal) that draws what `old` draws.

    Function-preserving widening (the zero fan-in variant of Net2Net's wider operator): every
    tensor of `old` goes into the leading block of the new one; a weight's new input columns are
    zero for the old output rows, so old channels never read new ones (and demodulation, a norm
    over the input columns, is unchanged), and the old block is rescaled by the ratio of the
    equalized-lr gains (1/sqrt(fan-in) shrinks as the width grows); the new rows keep their fresh
    initialisation (new channels, style-affine rows, const channels). New channels reach the
    image only once the old rows' zero columns have learnt, so training continues from `old`'s
    samples. The new parts are random: seed torch first for a reproducible result.
    """
    _check_widening(old.config, config, tuple(old.config.channels), tuple(config.channels), "channels")
    return _widened(old, Generator(config))


def widen_discriminator(old: Discriminator, config: GANConfig) -> Discriminator:
    """A wider discriminator (`config.disc_channels()` ≥ the old widths) with the same logits as `old`.

    The zero fan-in widening of `widen_generator`. The 4 px width stays: the minibatch-std channel
    is appended after it, so growing it would move that channel's input column.
    """
    old_ch, new_ch = tuple(old.config.disc_channels()), tuple(config.disc_channels())
    _check_widening(old.config, config, old_ch, new_ch, "d_channels")
    if new_ch[0] != old_ch[0]:
        raise UserError(f"widening a discriminator keeps its 4 px width {old_ch[0]} (the minibatch-std input), "
                        f"got {new_ch[0]}")
    return _widened(old, Discriminator(config))


def _check_widening(ocfg: GANConfig, config: GANConfig, old_widths: tuple, new_widths: tuple, what: str) -> None:
    for name in ("resolution", "z_dim", "w_dim", "mapping_layers", "img_channels", "mbstd_channels"):
        if getattr(ocfg, name) != getattr(config, name):
            raise UserError(f"widening keeps {name}: the old network has {getattr(ocfg, name)}, "
                            f"the new config {getattr(config, name)}")
    if any(n < o for n, o in zip(new_widths, old_widths)):
        raise UserError(f"widening only grows the widths ({what}): {old_widths} -> {new_widths}")


def _widened(old: nn.Module, new: nn.Module) -> nn.Module:
    """`new` (the layers of `old`, each at least as wide) holding `old` in its leading blocks."""
    old_state = old.state_dict()
    # equalized lr: a weight's gain is 1/sqrt(fan-in), so old blocks are rescaled to keep their effective value
    gain_ratio = {name + ".weight": old.get_submodule(name).weight_gain / layer.weight_gain
                  for name, layer in new.named_modules() if isinstance(layer, HookedLayer)}
    widened = {}
    for key, t in new.state_dict().items():
        o = old_state[key].to(t.dtype) * gain_ratio.get(key, 1.0)
        if o.shape == t.shape:
            widened[key] = o
            continue
        if o.ndim != t.ndim or o.shape[2:] != t.shape[2:] or o.shape[0] > t.shape[0] or (
                o.ndim > 1 and o.shape[1] > t.shape[1]):
            raise ValueError(f"cannot widen {key}: {tuple(o.shape)} -> {tuple(t.shape)}")
        w = t.clone()  # the new rows keep their fresh initialisation
        w[tuple(slice(0, d) for d in o.shape)] = o
        if o.ndim > 1:
            w[:o.shape[0], o.shape[1]:] = 0.0
        widened[key] = w
    new.load_state_dict(widened)
    return new
