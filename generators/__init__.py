"""Engines: the mini world, the embedded bases, the museum, the lifelong GAN, synthetic data.

Usable as a library; nothing here imports `studio` (the CLI and web app) or gradio.
"""
