"""The Museum tab's folder of style folders on this machine: the web app's `studio ingest DIR`, with
the same plan and report (read on the server, never written)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from generators.museum.scores import score_text
from studio.jobs import Job, duration
from studio.webapp.museum import MuseumMixin
from studio.webapp.shared import UserError, _owner, _status_md, page_errors


class MuseumFolderMixin(MuseumMixin):
    """`studio ingest DIR` in the page: plan, then learn every style folder as one job."""

    def _ingest_plan(self, folder, steps, new_version):
        """(root, museum, plan items, steps per item) for a folder on this machine, as `studio ingest` plans it."""
        from dataclasses import replace

        from generators import diffusion
        from generators.museum.config import MuseumConfig
        from generators.museum.ingest import plan

        text = str(folder or "").strip()
        if not text:
            raise UserError("type the path of a folder of style folders on this machine (one sub-folder of images per style)")
        root = Path(text).expanduser()
        if not root.is_absolute():
            raise UserError(f"{text}: give the folder's full path on this machine (e.g. /data/styles or ~/styles)")
        steps = int(steps or 0)
        if not 0 <= steps <= 100_000:
            raise UserError("steps must be 0 (each folder's style.toml, else 300) to 100000")
        museum = self.open_museum(create=True)
        items = plan(root.resolve(), museum, diffusion.resolution_of(self.base), bool(new_version))
        default = MuseumConfig()
        rank = {}
        if museum.n_tasks:
            first = museum.manifest(museum.styles[0].name)["config"]
            rank = {"rank": first["rank"], "alpha": first["alpha"]}
        configs = {it.name: replace(default, **rank, steps=steps or it.style.steps or default.steps)
                   for it in items if it.style is not None}
        return root, museum, items, configs

    def _plan_lines(self, root, items, configs) -> list[str]:
        lines = [f"plan for {root} -> museum {self.museum_dir} (base {self.base_name()}):"]
        for it in items:  # as `studio ingest` prints it
            what = f"{it.action:7s} {it.name:24s}"
            usable = getattr(it, "images", len(it.style.images) if it.style else None)
            if usable is not None:
                what += f" {usable:3d} images"
            if it.action in ("learn", "resume"):
                what += f", {configs[it.name].steps} steps"
            if it.rejected:
                what += f", {len(it.rejected)} files rejected"
            lines.append("  " + what + (f"  ({it.reason})" if it.reason else ""))
            if it.action == "invalid":
                lines += [f"      rejected {f}: {why}" for f, why in it.rejected]
        todo = [it for it in items if it.action in ("learn", "resume")]
        got = self.estimate("museum", sum(configs[it.name].steps for it in todo), configs[todo[0].name].batch_size) \
            if todo else None
        if got is not None:
            lines.append(f"estimated time: about {duration(got[0] + got[1].get('overhead_s', 0) * (len(todo) - 1))}")
        return lines

    def museum_plan(self, folder, steps, new_version) -> str:
        """The plan `studio ingest DIR` prints: what each style folder will do (learn, resume, skip, refuse, invalid)."""
        with page_errors():
            root, _, items, configs = self._ingest_plan(folder, steps, new_version)
        return "```\n" + "\n".join(self._plan_lines(root, items, configs)) + "\n```"

    def museum_ingest(self, folder, steps, new_version, job_id=None, request: gr.Request | None = None):
        """Learn every style folder of a folder on this machine, in order (sorted, or its order.txt), with the
        plan and the report of `studio ingest`; streams (status, previews, plan and report)."""
        job = self.board.claim(job_id, "museum", f"ingest {Path(str(folder or '?')).name}", _owner(request))
        job.panel = "museum"
        with page_errors(self.board, job):
            root, museum, items, configs = self._ingest_plan(folder, steps, new_version)
        todo = [it for it in items if it.action in ("learn", "resume")]
        plan_lines = self._plan_lines(root, items, configs)
        total = sum(configs[it.name].steps for it in todo)
        guess = self.estimate("museum", total, configs[todo[0].name].batch_size) if todo else None
        job.estimate_s = guess[0] if guess else None
        report: list[str] = []

        def work(job: Job):
            from generators.museum import engine

            job.log("\n".join(plan_lines))
            evaluator, done, thumbs = self.evaluator(), 0, []
            for k, it in enumerate(todo, 1):
                cfg = configs[it.name]

                def progress(step, _total, **info):
                    job.progress(done + step, total, style=f"{it.name} ({k}/{len(todo)})", **info)

                manifest = engine.learn(museum, it.style, cfg, self.base, self.device, progress=progress,
                                        should_stop=job.should_stop, evaluator=evaluator)
                if manifest.get("stopped"):
                    report.append(f"stopped during {it.name} at step {manifest['result']['steps']}: the museum holds the "
                                  "styles learnt before it; press Learn all again to resume")
                    job.log(report[-1])
                    return {"stopped": True}
                done += cfg.steps
                r = manifest["result"]
                report.append(f"  {it.name}: learnt as {manifest['token']}; {len(manifest['images'])} images used, "
                              f"{len(manifest['rejected'])} rejected, {r['steps']} steps"
                              + (f" (resumed at {r['resumed_from']})" if r.get("resumed_from") else "")
                              + f", {manifest['timings']['total_seconds']:.0f} s, final loss {r['final_loss']:.4f}, "
                              + score_text(manifest.get("metrics")))
                report.extend(f"    rejected {f['file']}: {f['reason']}" for f in manifest["rejected"])
                thumb = museum.style_dir(it.name) / "thumb.png"
                if thumb.is_file():
                    from PIL import Image

                    with Image.open(thumb) as im:
                        thumbs.append((im.convert("RGB"), f"{it.name}: learnt"))
                    job.set_previews(list(thumbs))
            skipped = [f"  {it.name}: {it.action} - {it.reason}" for it in items if it.action in ("skip", "refuse", "invalid")]
            report[:0] = ["report:"] + skipped
            job.log("\n".join(report))
            if todo:
                self.record_job_timing(job, configs[todo[0].name].batch_size)
            return {"learnt": len(todo)}

        def render(j: Job):
            text = "\n".join(plan_lines + ([""] + report if report else []))
            return _status_md(j), list(j.previews), f"```\n{text}\n```"

        yield from self.run_job(job, work, render)
