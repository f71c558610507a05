"""Benchmark: do synthetic images from a few real ones help a classifier? (issue 6, docs/methods.md §3)

Task: the mini world's fine-grained bird subclasses (12 by default; same silhouette, they
differ only in beak, tail, crest and wing stripes), plain style, medium and large birds (the
parts are a pixel wide on small ones). For each number of shots (5, 10) and each seed:

1. render the real training set (k per class, random background and pose), a held-out real
   validation set (model selection) and use one fixed fresh real test set;
2. fit the BOB LoRA (prompts with background and pose from the mini-world extractor) and a
   DataDream LoRA (one fixed prompt per class, "a {class} bird", no context) on the base;
3. export N images per class: DataDream (no context), BOB with the bank context
   (marginalized over all classes), and the ablations BOB same-class, BOB no context and BOB
   with a learnt token per class instead of the class's plain words (class_words="learnt");
   each export's class fidelity: the fraction the committed subclass evaluator assigns to the
   class asked for, and its context diversity beside the real shots' own: the entropy of the
   backgrounds and of the poses the committed evaluator reads, on k images a class (bench/synthetic_protocols.py, context_diversity);
4. train a classifier on real only and on real + each synthetic set: by default a linear probe
   on a frozen backbone trained without subclass labels (assets/probe-backbone; never the
   committed evaluator, which already knows the subclasses), with --classifier finetune that
   backbone fine-tuned end to end with a new head (BOB's downstream protocol: a pretrained
   backbone, fine-tuned), or with --classifier scratch a small CNN from scratch; real shots
   repeated to 1:1 with synthetic in every batch, loss λ·CE_real + (1−λ)·CE_syn with
   λ ∈ {0.5, 0.8}; λ and the checkpoint are chosen on the held-out real validation images;
   accuracy on the real test set;
5. the bounds every few-shot accuracy sits between: chance (1 / classes) and the ceiling, the
   same classifier trained on --ceiling-shots (100) real images per class, once per seed.

Statistics (bench/stats.py): three seeds by default; every accuracy, class fidelity and the
ceiling is reported as the mean and a 95 % Student-t interval over seeds (t with n − 1 degrees
of freedom, clipped to [0, 1]; a bootstrap over three seeds could not reach past the observed
values), and each synthetic method's gain over real only as a paired t-interval over seeds (the
same real shots in both). The printed table puts class fidelity beside accuracy.

    python bench/synthetic.py --json runs/bench/synthetic.json            # the full run (GPU advised)
    python bench/synthetic.py --classifier finetune --json runs/bench/synthetic-finetune.json
    python bench/synthetic.py --quick --json /tmp/synthetic-quick.json    # minutes on a CPU, tiny random base
    python bench/synthetic.py --quick --classifier finetune --methods real_only,bob --json /tmp/synthetic-quick-ft.json
    python bench/synthetic.py --context-of runs/bench/work --json runs/bench/contexts.json  # a kept --work folder

Cost: the ceiling adds per seed 100 × classes real renderings and one classifier (probe: seconds;
finetune: --ft-steps steps of two batches, a few minutes on one CPU thread); a finetune run trains
one network per (seed, shots, method, λ).

--quick builds a tiny random pipeline (unless --base is given) and shrinks everything: it
checks that the benchmark runs end to end; its accuracies mean nothing.

This file is the command line, the loop over seeds, shots and methods, and the report; the data
and the classifiers are in bench/synthetic_protocols.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import stats  # noqa: E402
from bench.synthetic_protocols import (  # noqa: E402
    TEST_STREAM,
    TRAIN_STREAM,
    VAL_STREAM,
    FeatureSet,
    backbone_sha256,
    class_fidelity,
    classify,
    context_diversity,
    ensure_backbone,
    read_class_folders,
    read_contexts,
    read_export,
    render_real,
    write_class_folders,
)
from generators import diffusion, miniworld  # noqa: E402
from generators.evaluators import load_evaluator  # noqa: E402
from generators.synthetic import export as exp  # noqa: E402
from generators.synthetic import fit as ft  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("real_only", "datadream", "bob", "bob_same_class", "bob_no_context", "bob_learnt_tokens")
SYNTH_SOURCES = {  # method -> (fit, export context)
    "datadream": ("datadream", "none"),
    "bob": ("bob", "bank"),
    "bob_same_class": ("bob", "same-class"),
    "bob_no_context": ("bob", "none"),
    "bob_learnt_tokens": ("bob_learnt", "bank"),
}
FITS = {  # fit -> FitConfig fields
    "datadream": {"use_context": False},
    "bob": {"use_context": True},
    "bob_learnt": {"use_context": True, "class_words": "learnt"},  # a trained token per class
}


# --- the benchmark ---------------------------------------------------------------------------


def tiny_base(folder: Path) -> Path:
    """A tiny random StableDiffusionPipeline (32 px), as the test suite builds it."""
    from generators.sd_mini.config import MiniBaseConfig
    from generators.sd_mini.models import build_text_encoder, build_unet, build_vae, save_pipeline
    from generators.sd_mini.tokenizer import build_tokenizer

    torch.manual_seed(0)
    cfg = replace(MiniBaseConfig(), resolution=32, vae_channels=(16, 16), unet_channels=(32, 32, 32),
                  text_width=32, text_layers=1, text_heads=2, unet_heads=2)
    tok = build_tokenizer(miniworld.caption_words(), folder / "tok", cfg.max_length)
    out = folder / "pipe"
    save_pipeline(out, build_vae(cfg), build_text_encoder(cfg, tok), tok, build_unet(cfg)).rename(out)
    return out


def summarize(results: dict, ceiling: dict | None = None) -> dict:
    """Mean, std and 95 % t-interval over the seeds (bench/stats.py: Student t on the per-seed
    accuracies, n − 1 degrees of freedom; with 3 seeds a bootstrap over seeds could not reach past
    the observed values) of each method's per-seed list, its class fidelity likewise, and each
    method's paired gain over real_only and each BOB variant's over DataDream (per seed, the same
    real shots in both, then the t-interval; lists are paired by position: a run keeps --seeds'
    order for every method, and a merge must join files that each hold the methods compared); in
    place. Returns the
    {method_Kshot: mean} summary."""
    for methods in results.values():
        real = methods.get("real_only", {}).get("per_seed", [])
        datadream = methods.get("datadream", {}).get("per_seed", [])
        for m, r in methods.items():
            accs = np.asarray(r["per_seed"], dtype=np.float64)
            r["mean"] = float(accs.mean()) if len(accs) else None
            r["std"] = float(accs.std(ddof=1)) if len(accs) > 1 else 0.0
            r["ci95"] = stats.t_interval(accs, bounds=(0.0, 1.0))
            if r.get("class_fidelity"):
                r["class_fidelity_mean"] = float(np.mean(r["class_fidelity"]))
                r["class_fidelity_ci95"] = stats.t_interval(r["class_fidelity"], bounds=(0.0, 1.0))
            if m != "real_only" and len(real) == len(accs) and len(accs):
                r["gain_vs_real_only"] = stats.t_interval(accs - np.asarray(real, dtype=np.float64))
            if m.startswith("bob") and len(datadream) == len(accs) and len(accs):
                r["gain_vs_datadream"] = stats.t_interval(accs - np.asarray(datadream, dtype=np.float64))
    if ceiling and ceiling.get("per_seed"):
        ceiling["mean"] = float(np.mean(ceiling["per_seed"]))
        ceiling["ci95"] = stats.t_interval(ceiling["per_seed"], bounds=(0.0, 1.0))
    return {f"{m}_{k}shot": results[k][m]["mean"] for k in results for m in results[k]}


def classifier_info(args) -> dict:
    if args.classifier == "probe":
        return {"arch": "linear probe on a frozen backbone trained without subclass labels",
                "backbone_sha256": backbone_sha256(args.backbone), "steps": args.probe_steps, "batch": args.clf_batch, "lr": args.probe_lr}
    if args.classifier == "finetune":
        return {"arch": "the probe's backbone fine-tuned end to end with a new linear head (BatchNorm statistics frozen)",
                "backbone_sha256": backbone_sha256(args.backbone), "steps": args.ft_steps, "batch": args.clf_batch,
                "backbone_lr": args.ft_lr, "head_lr": args.probe_lr}
    return {"arch": "EvaluatorNet (subclass head only), trained from scratch", "widths": args.widths,
            "steps": args.clf_steps, "batch": args.clf_batch, "lr": args.clf_lr}


def summarize_contexts(contexts: dict) -> dict:
    """{shots: {set: {measure: mean over seeds}}} from the per-seed context_diversity readings."""
    return {k: {name: {key: float(np.mean([r[key] for r in rows])) for key in rows[0]} for name, rows in sets.items() if rows}
            for k, sets in contexts.items()}


def print_context_table(contexts: dict) -> None:
    print("\n| shots | images | background entropy (bits, max 3) | pose entropy (bits, max 5.75) |")
    print("|---|---|---|---|")
    for k, sets in summarize_contexts(contexts).items():
        for name, r in sets.items():
            print(f"| {k} | {name} | {r['background_bits']:.2f} | {r['pose_bits']:.2f} |")
    print("(the committed evaluator's reading of k images a class, mean over seeds and 20 draws)")


def context_of(args) -> int:
    """Context diversity of the real shots and exports a kept --work folder holds (real-kK-sS,
    export-METHOD-kK-sS), without fitting or exporting again."""
    classes = sorted(list(miniworld.BIRD_SUBCLASSES)[:args.classes])
    evaluator = load_evaluator(device="cpu")
    contexts: dict = {}
    for folder in sorted(args.context_of.iterdir()):
        name, _, rest = folder.name.partition("-")
        if name not in ("real", "export") or not folder.is_dir():
            continue
        method, k, seed = ("real_shots", *rest.split("-")) if name == "real" else rest.rsplit("-", 2)
        k, seed = int(k[1:]), int(seed[1:])
        images, labels = read_class_folders(folder, classes) if name == "real" else read_export(folder, classes)
        row = context_diversity(read_contexts(evaluator, images), labels, k, seed=seed)
        contexts.setdefault(str(k), {}).setdefault(method, []).append(row)
        print(f"{folder.name}: {row}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": " ".join(sys.argv), "work": str(args.context_of), "context_diversity": contexts,
                                     "context_summary": summarize_contexts(contexts)}, indent=2) + "\n")
    print_context_table(contexts)
    print(f"\nwrote {args.json}")
    return 0


def write_report(args, results, timings, classes, dev_name, base, start, real_fidelity, ceiling=None, contexts=None) -> dict:
    """Mean ± std and 95 % t-intervals over the seeds finished so far, written to args.json."""
    summary = summarize(results, ceiling)
    report = {
        "benchmark": "synthetic (BOB vs DataDream vs real only), mini-world bird subclasses",
        "command": " ".join(sys.argv),
        "quick": args.quick, "device": dev_name, "base": diffusion.base_name(base), "classes": classes,
        "shots": args.shots, "seeds": args.seeds, "per_class": args.per_class, "fit_steps": args.fit_steps,
        "sample_steps": args.sample_steps, "guidance": args.guidance, "lambdas": args.lambdas,
        "classifier": classifier_info(args),
        "n_val": args.n_val, "n_test": args.n_test,
        "intervals": "95 % Student-t interval over seeds (mean ± t(n-1) · std / sqrt(n)); gain_vs_real_only and gain_vs_datadream paired per seed",
        "chance": 1 / len(classes),
        "ceiling": ceiling,
        "real_class_fidelity": real_fidelity,
        "results": results,
        "accuracy_summary": summary,
        "context_diversity": contexts or {},
        "context_summary": summarize_contexts(contexts or {}),
        "seconds": {**{key: round(v, 1) for key, v in timings.items()}, "total": round(time.time() - start, 1)},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=None, help="pipeline folder or hub id (default: the default embedded base; --quick: a tiny random one)")
    p.add_argument("--json", type=Path, default=Path("runs/bench/synthetic.json"), help="where to write the results")
    p.add_argument("--work", type=Path, default=None, help="keep fits and exports here (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="a few minutes end to end: tiny base, 3 classes, few steps")
    p.add_argument("--classes", type=int, default=12, help="number of bird subclasses (at most 12)")
    p.add_argument("--shots", default="5,10")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--per-class", type=int, default=100, help="synthetic images per class")
    p.add_argument("--fit-steps", type=int, default=None, help="LoRA steps (default: FitConfig's)")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--export-batch", type=int, default=32)
    p.add_argument("--n-val", type=int, default=5, help="held-out real validation images per class")
    p.add_argument("--n-test", type=int, default=50, help="real test images per class")
    p.add_argument("--classifier", default="probe", choices=["probe", "finetune", "scratch"],
                   help="probe: a linear classifier on a frozen backbone that never saw subclass labels (default); "
                        "finetune: that backbone fine-tuned with a new head (BOB's protocol); "
                        "scratch: the small CNN trained from scratch")
    p.add_argument("--ceiling-shots", type=int, default=100,
                   help="the ceiling: the same classifier on this many real images per class, per seed (0: skip)")
    p.add_argument("--ft-steps", type=int, default=300, help="fine-tuning steps (--classifier finetune)")
    p.add_argument("--ft-lr", type=float, default=3e-4, help="the backbone's learning rate when fine-tuning")
    p.add_argument("--backbone", type=Path, default=ROOT / "assets" / "probe-backbone",
                   help="the probe's backbone folder (default: the committed one; trained there once if missing)")
    p.add_argument("--backbone-seconds", type=float, default=1500)
    p.add_argument("--probe-steps", type=int, default=1000)
    p.add_argument("--probe-lr", type=float, default=1e-2)
    p.add_argument("--probe-eval-every", type=int, default=25)
    p.add_argument("--clf-steps", type=int, default=1500)
    p.add_argument("--clf-batch", type=int, default=64)
    p.add_argument("--clf-lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--lambdas", default="0.5,0.8")
    p.add_argument("--widths", default="24,32,64,96,128", help="classifier widths (stem + four stages)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="merge these reports (runs split by seed or shots) into --json, and stop")
    p.add_argument("--context-of", type=Path, default=None,
                   help="measure the context diversity of the real shots and exports in this kept --work folder into --json, and stop")
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.shots, args.seeds = 3, "5", "0,1"
        args.per_class, args.fit_steps, args.sample_steps, args.export_batch = 4, args.fit_steps or 4, 2, 4
        args.n_val, args.n_test, args.clf_steps, args.clf_batch, args.eval_every = 2, 6, 20, 8, 10
        args.probe_steps, args.probe_eval_every = 20, 10
        args.ft_steps, args.ceiling_shots = 10, min(args.ceiling_shots, 10)
    args.shots = [int(s) for s in args.shots.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.lambdas = [float(s) for s in args.lambdas.split(",")]
    args.widths = [int(s) for s in args.widths.split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = set(args.methods) - set(METHODS)
    if unknown or not 1 <= args.classes <= len(miniworld.BIRD_SUBCLASSES):
        p.error(f"unknown methods {sorted(unknown)} or --classes outside 1..{len(miniworld.BIRD_SUBCLASSES)}")
    return args


def print_table(results: dict, methods: list[str], ceiling: dict | None = None, n_classes: int | None = None) -> None:
    """Test accuracy and, per export, class fidelity: mean [95 % t-interval over seeds]."""
    f = lambda d: stats.fmt_ci(d, 3)  # noqa: E731
    print("\n| shots | method | accuracy | gain over real only | gain over DataDream | class fidelity |")
    print("|---|---|---|---|---|---|")
    for k in results:
        for m in methods:
            r = results[k].get(m)
            if not r or not r["per_seed"]:
                continue
            print(f"| {k} | {m} | {f(r.get('ci95'))} | {f(r.get('gain_vs_real_only')) if m != 'real_only' else '-'} "
                  f"| {f(r.get('gain_vs_datadream')) if r.get('gain_vs_datadream') else '-'} "
                  f"| {f(r.get('class_fidelity_ci95')) if r.get('class_fidelity') else '-'} |")
    if n_classes:
        print(f"\nchance {1 / n_classes:.3f}", end="")
    if ceiling and ceiling.get("per_seed"):
        print(f"; ceiling ({ceiling['shots']} real shots per class) {f(ceiling.get('ci95'))}", end="")
    print(" (95 % t-intervals over seeds)")


def merge(paths: list[Path], out: Path) -> int:
    """One report from runs split by seed or shots (same settings otherwise): per-seed lists joined."""
    reports = [json.loads(p.read_text()) for p in paths]
    merged = reports[0]
    for r in reports[1:]:
        for key in ("classes", "per_class", "fit_steps", "sample_steps", "guidance", "lambdas", "n_val", "n_test",
                    "classifier", "base"):
            if r.get(key) != merged.get(key):
                raise SystemExit(f"{key} differs between {paths[0]} and the other reports; merge runs of the same settings only")
        merged["seeds"] = sorted(set(merged["seeds"]) | set(r["seeds"]))
        merged["shots"] = sorted(set(merged["shots"]) | set(r["shots"]))
        for k, methods in r["results"].items():
            for m, v in methods.items():
                into = merged["results"].setdefault(k, {}).setdefault(m, {"per_seed": [], "selected": []})
                for field in ("per_seed", "selected", "class_fidelity"):
                    into.setdefault(field, []).extend(v.get(field, []))
        for k, sets in r.get("context_diversity", {}).items():
            for name, rows in sets.items():
                merged.setdefault("context_diversity", {}).setdefault(k, {}).setdefault(name, []).extend(rows)
        for key, value in r["seconds"].items():
            merged["seconds"][key] = round(merged["seconds"].get(key, 0.0) + value, 1)
        if r.get("ceiling"):  # one ceiling per seed: runs split by shots share it, runs split by seed add to it
            if not merged.get("ceiling"):
                merged["ceiling"] = {"shots": r["ceiling"]["shots"], "seeds": [], "per_seed": [], "selected": []}
            into = merged["ceiling"]
            if into["shots"] != r["ceiling"]["shots"]:
                raise SystemExit("the ceilings used different numbers of real shots; merge runs of the same settings only")
            for seed, acc, sel in zip(r["ceiling"]["seeds"], r["ceiling"]["per_seed"], r["ceiling"]["selected"]):
                if seed not in into["seeds"]:
                    into["seeds"].append(seed)
                    into["per_seed"].append(acc)
                    into["selected"].append(sel)
    merged["accuracy_summary"] = summarize(merged["results"], merged.get("ceiling"))
    merged["context_summary"] = summarize_contexts(merged.get("context_diversity", {}))
    merged["merged_from"] = [str(p) for p in paths]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print_table(merged["results"], list(next(iter(merged["results"].values()))), merged.get("ceiling"), len(merged["classes"]))
    if merged.get("context_diversity"):
        print_context_table(merged["context_diversity"])
    print(f"\nwrote {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, args.json)
    if args.context_of:
        return context_of(args)
    start = time.time()
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    dev_name = device.type
    classes = sorted(list(miniworld.BIRD_SUBCLASSES)[:args.classes])
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-synthetic-"))
    work.mkdir(parents=True, exist_ok=True)
    base = args.base
    if base is None and args.quick:
        base = str(tiny_base(work / "tiny-base")) if not (work / "tiny-base" / "pipe").exists() else str(work / "tiny-base" / "pipe")
    log = lambda msg: print(f"[{time.time() - start:7.1f}s] {msg}", flush=True)
    test = render_real(classes, args.n_test, TEST_STREAM, 0)
    evaluator = load_evaluator(device=device)
    real_fidelity = class_fidelity(evaluator, *test, classes)
    probe = test_feats = None  # loaded (or trained) when the first classifier needs it
    log(f"class fidelity of the real test images (the evaluator's ceiling): {real_fidelity:.3f}")
    results: dict = {str(k): {m: {"per_seed": [], "selected": []} for m in args.methods} for k in args.shots}
    timings: dict = {"fit": 0.0, "export": 0.0, "classifier": 0.0}
    contexts: dict = {}  # shots -> {"real_shots" or method: [context_diversity per seed]}
    need_fits = {SYNTH_SOURCES[m][0] for m in args.methods if m in SYNTH_SOURCES}
    ceiling = {"shots": args.ceiling_shots, "seeds": [], "per_seed": [], "selected": []} if args.ceiling_shots else None
    # Seeds outermost and the JSON rewritten after every (seed, shots) pair: a run cut short keeps
    # every finished seed for both shot counts.
    for seed in args.seeds:
        if args.classifier in ("probe", "finetune") and probe is None:
            probe = load_evaluator(ensure_backbone(args.backbone, args.backbone_seconds, device), device=device).net
            test_feats = FeatureSet(probe, test, device, False)
        if ceiling is not None:  # the same classifier with plenty of real data: what few shots are measured against
            t0 = time.time()
            best = classify(args, classes, render_real(classes, args.ceiling_shots, TRAIN_STREAM, seed), None,
                            render_real(classes, args.n_val, VAL_STREAM, seed), test, seed, device, probe, test_feats)
            timings["ceiling"] = timings.get("ceiling", 0.0) + time.time() - t0
            ceiling["seeds"].append(seed)
            ceiling["per_seed"].append(best["test"])
            ceiling["selected"].append(best)
            log(f"seed={seed}: ceiling ({args.ceiling_shots} real shots per class) test {best['test']:.3f} (chance {1 / len(classes):.3f})")
        for k in args.shots:
            real = render_real(classes, k, TRAIN_STREAM, seed)
            val = render_real(classes, args.n_val, VAL_STREAM, seed)
            data = write_class_folders(work / f"real-k{k}-s{seed}", classes, *real)
            contexts.setdefault(str(k), {}).setdefault("real_shots", []).append(
                context_diversity(read_contexts(evaluator, real[0]), real[1], k, seed=seed))
            works = {}
            for name in sorted(need_fits):
                t0 = time.time()
                cfg = ft.FitConfig(category="bird", base=ft.resolve_base(base), seed=seed, extractor="miniworld",
                                   **FITS[name])
                if args.fit_steps:
                    cfg.steps = args.fit_steps
                    cfg.warmup_steps = min(cfg.warmup_steps, max(1, args.fit_steps // 10))
                works[name] = work / f"{name}-k{k}-s{seed}"
                r = ft.fit(data, works[name], cfg, device=args.device)
                timings["fit"] += time.time() - t0
                log(f"k={k} seed={seed}: fit {name} {r.steps} steps, loss {r.final_loss:.4f}")
            synth = {}
            for method in args.methods:
                if method == "real_only":
                    continue
                fit_name, context = SYNTH_SOURCES[method]
                t0 = time.time()
                out = work / f"export-{method}-k{k}-s{seed}"
                ecfg = exp.ExportConfig(per_class=args.per_class, seed=seed, context=context, steps=args.sample_steps,
                                        guidance=args.guidance, batch_size=args.export_batch)
                exp.export(works[fit_name], out, ecfg, device=args.device)
                synth[method] = read_export(out, classes)
                timings["export"] += time.time() - t0
                fidelity = class_fidelity(evaluator, *synth[method], classes)
                results[str(k)][method].setdefault("class_fidelity", []).append(fidelity)
                contexts[str(k)].setdefault(method, []).append(
                    context_diversity(read_contexts(evaluator, synth[method][0]), synth[method][1], k, seed=seed))
                log(f"k={k} seed={seed}: exported {method} ({len(synth[method][1])} images, class fidelity {fidelity:.3f})")
            synth_feats = {m: FeatureSet(probe, synth[m], device, True) for m in synth} if args.classifier == "probe" else {}
            for method in args.methods:
                t0 = time.time()
                best = classify(args, classes, real, synth.get(method), val, test, seed, device, probe, test_feats,
                                synth_feats.get(method))
                timings["classifier"] += time.time() - t0
                results[str(k)][method]["per_seed"].append(best["test"])
                results[str(k)][method]["selected"].append(best)
                log(f"k={k} seed={seed}: {method:15s} test {best['test']:.3f} (val {best['val']:.3f}, λ {best['lambda']}, step {best['step']})")
            write_report(args, results, timings, classes, dev_name, base, start, real_fidelity, ceiling, contexts)
    report = write_report(args, results, timings, classes, dev_name, base, start, real_fidelity, ceiling, contexts)
    print_table(results, args.methods, ceiling, len(classes))
    print_context_table(contexts)
    print(f"\nwrote {args.json} ({report['seconds']['total']} s)")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
