"""The embedded GAN base "gan-mini": a small StyleGAN2 in pure PyTorch (no custom CUDA ops).

`stylegan2` holds the networks, `GANConfig` and safetensors save/load; `pretrain` trains the
base on the procedural mini world (`from generators.gan.pretrain import pretrain_gan`).
"""

from generators.gan.stylegan2 import (
    Discriminator,
    GANConfig,
    Generator,
    load_discriminator,
    load_generator,
    modulatable_layers,
    save_discriminator,
    save_generator,
)

__all__ = [
    "Discriminator",
    "GANConfig",
    "Generator",
    "load_discriminator",
    "load_generator",
    "modulatable_layers",
    "save_discriminator",
    "save_generator",
]
