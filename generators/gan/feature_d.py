"""A second discriminator that judges images in a frozen pretrained network's feature space.

Projected GANs (Sauer et al., NeurIPS 2021, §3-4): discriminators on the multi-scale features
of a fixed pretrained network converge in far fewer images than one on pixels, because the
generator is told at once what the features of real images look like at every scale. Here the
fixed network is a mini-world evaluator (`EvaluatorNet`, e.g. assets/probe-backbone); each of
its stage outputs is read by a small spectrally normalized head that outputs a map of logits
(a patch discriminator per scale). It is used beside the pixel discriminator, not instead of
it, with the same non-saturating logistic loss and no R1 (the heads see features, not pixels).

Caveat written where the figures are: a network trained on kind labels inside the
discriminator can raise a kind classifier's confidence more than the images' quality (the
FID/ImageNet effect, Kynkäänniemi et al., ICLR 2023), so judge such a run by its samples too.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from generators.errors import UserError


class FeatureDiscriminator(nn.Module):
    """Frozen `backbone` (an EvaluatorNet) + one trainable head per stage output in `stages`
    (0 is the full-resolution stem, k the k-th stride-2 stage). forward(x in [-1, 1]) returns
    a list of logit maps, one per stage."""

    def __init__(self, backbone: nn.Module, stages: tuple[int, ...] = (1, 2, 3, 4), width: int = 64):
        super().__init__()
        widths = backbone.config.widths
        if not stages or any(not 0 <= s < len(widths) for s in stages):
            raise UserError(f"stages must be between 0 and {len(widths) - 1}, got {stages}")
        self.backbone = backbone.eval().requires_grad_(False)
        self.stages = tuple(stages)
        self.heads = nn.ModuleList(
            nn.Sequential(spectral_norm(nn.Conv2d(widths[s], width, 3, padding=1)), nn.LeakyReLU(0.2),
                          spectral_norm(nn.Conv2d(width, 1, 1)))
            for s in self.stages
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # its batch-norm statistics stay the pretrained ones
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's outputs at `stages` (differentiable in x; computed once per batch of
        samples and read by the heads both in D's step, detached, and in G's)."""
        outs = self.backbone.stage_outputs(x)
        return [outs[s] for s in self.stages]

    def judge(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [head(f) for head, f in zip(self.heads, features)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.judge(self.features(x))


def logistic_loss(logit_maps: list[torch.Tensor], real: bool) -> torch.Tensor:
    """Non-saturating logistic loss averaged over each map's positions, then over the maps."""
    sign = -1.0 if real else 1.0
    return torch.stack([F.softplus(sign * m.float()).mean() for m in logit_maps]).mean()


def load_feature_discriminator(folder, width: int = 64) -> FeatureDiscriminator:
    """A fresh set of heads on the evaluator network in `folder` (config.json + evaluator.safetensors)."""
    from generators.evaluators import load_evaluator

    folder = Path(folder)
    try:
        net = load_evaluator(folder).net
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--feature-d needs an evaluator folder such as assets/probe-backbone: {err}") from None
    return FeatureDiscriminator(net, width=width)
