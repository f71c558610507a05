"""The GAN engines: the embedded base "gan-mini" (a small StyleGAN2) and the lifelong few-shot GAN.

The networks and their files:
    stylegan2.py       GANConfig, Generator, Discriminator
    layers.py          equalized-lr and modulated conv layers, the weight hook LeFT uses
    folder.py          a gan-mini folder: config.json + safetensors weights, the default base
    sampling.py        seeded latents, uint8 / PIL / grids, `generate`, the preview set
    widening.py        function-preserving widening (warm starts)
    evaluate.py        `studio eval gan`: mini-FID and kinds recognised
Pretraining the base (front door `pretrain.pretrain_gan`):
    pretrain.py        options, resume / warm start, the final files
    pretrain_loop.py   the training step (losses, lazy R1, style mixing, path length, G EMA)
    pretrain_files.py  checkpoint, samples.png, training_options.json
    image_pool.py      the mini-world images, rendered by workers into an on-device pool
    feature_d.py       an optional projected discriminator on a frozen evaluator's features
The lifelong few-shot GAN, LFS-GAN (front door `lifelong.learn_task`, `lifelong.sample_task`):
    lifelong.py        learning a task (policy, resume), loading and sampling a task
    task_store.py      the task store's folder layout
    task_trainer.py    TrainConfig and the adversarial training of one task
    left.py            LeFT modulators
    mode_seeking.py    cluster-wise mode seeking
"""
