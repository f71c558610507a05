"""Contextual synthetic training sets from a few real images per class (BOB, docs/methods.md §3).

1. **Extract** (`extract`): a class-agnostic (background, pose) pair per real image, from
   user sidecars, the mini-world evaluators or a vision-language captioner that is told
   only the super-category. The pairs form the caption bank, `bank.jsonl`, which the user
   may edit; the edited version is used.
2. **Fit** (`fit`): one LoRA for all classes on the base, prompts
   template(class words, category, background, pose).
3. **Export** (`export`): per class N images, each drawing its (background, pose) uniformly
   from the whole bank (marginalizing the context), written as an image-classification
   dataset (class folders, metadata.jsonl, classes.json, generation_config.json, card)
   with per-image seeds, resumable and splittable across processes (accelerate).

Entry points: ``generators.synthetic.fit.fit`` and ``generators.synthetic.export.export``,
each taking one ``run`` (generators/run.py); the LoRA and class-token plumbing is in
``lora.py``, the exported dataset's files in ``dataset.py``. Only classes and helpers are
re-exported here (``regenerate`` is the one the dataset card names).
"""

from generators.synthetic.extract import BankEntry, Context, Extractor, load_bank, read_class_folders, save_bank
from generators.synthetic.export import ExportConfig, plan_export, regenerate
from generators.synthetic.fit import FitConfig, load_fit

__all__ = [
    "BankEntry", "Context", "Extractor", "load_bank", "read_class_folders", "save_bank",
    "ExportConfig", "plan_export", "regenerate", "FitConfig", "load_fit",
]
