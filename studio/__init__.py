"""Studio: continual customization of generative models (CLI, web app, job runner)."""

__version__ = "0.1.0"
