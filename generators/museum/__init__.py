"""MuseumMaker-style continual style customization of a diffusers text-to-image base.

One *shared* LoRA on the UNet attention is trained task after task (one task = one style),
together with one learnt token per style; a style distillation loss and a dual (weight and
feature) regularization keep new styles from overwriting old ones. See `train.learn_style`.
"""
