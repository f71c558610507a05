"""The Museum tab's folder of style folders on this machine: the web app's `studio ingest DIR`, with
the same plan and report (read on the server, never written)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from generators.run import Run
from studio.jobs import Job, duration
from studio.webapp.museum import DEFAULTS, MuseumMixin
from studio.webapp.shared import UserError, _owner, _status_md, page_errors


class MuseumFolderMixin(MuseumMixin):
    """`studio ingest DIR` in the page: plan, then learn every style folder as one job."""

    def _ingest_plan(self, folder, steps, new_version):
        """(root, museum, plan items) for a folder on this machine, planned as `studio ingest` plans it."""
        from generators import diffusion
        from generators.museum.ingest import plan

        text = str(folder or "").strip()
        if not text:
            raise UserError("type the path of a folder of style folders on this machine (one sub-folder of images per style)")
        root = Path(text).expanduser()
        if not root.is_absolute():
            raise UserError(f"{text}: give the folder's full path on this machine (e.g. /data/styles or ~/styles)")
        steps = int(steps or 0)
        if not 0 <= steps <= 100_000:
            raise UserError(f"steps must be 0 (each folder's style.toml, else {DEFAULTS.steps}) to 100000")
        museum = self.open_museum(create=True)
        items = plan(root.resolve(), museum, diffusion.resolution_of(self.base), bool(new_version),
                     {"steps": steps} if steps else None)
        return root, museum, items

    def _plan_lines(self, root, items) -> list[str]:
        from generators.museum.ingest import plan_lines, todo

        lines = [f"plan for {root} -> museum {self.museum_dir} (base {self.base_name()}):"] + plan_lines(items)
        tasks = todo(items)
        got = self.estimate("museum", sum(it.config.steps for it in tasks), tasks[0].config.batch_size) if tasks else None
        if got is not None:
            lines.append(f"estimated time: about {duration(got[0] + got[1].get('overhead_s', 0) * (len(tasks) - 1))}")
        return lines

    def museum_plan(self, folder, steps, new_version) -> str:
        """The plan `studio ingest DIR` prints: what each style folder will do (learn, resume, skip, refuse, invalid)."""
        with page_errors():
            root, _, items = self._ingest_plan(folder, steps, new_version)
        return "```\n" + "\n".join(self._plan_lines(root, items)) + "\n```"

    def museum_ingest(self, folder, steps, new_version, job_id=None, request: gr.Request | None = None):
        """Learn every style folder of a folder on this machine, in order (sorted, or its order.txt), with the
        plan and the report of `studio ingest`; streams (status, previews, plan and report)."""
        job = self.board.claim(job_id, "museum", f"ingest {Path(str(folder or '?')).name}", _owner(request))
        job.panel = "museum"
        with page_errors(self.board, job):
            root, museum, items = self._ingest_plan(folder, steps, new_version)
        from generators.museum.ingest import todo

        tasks = todo(items)
        plan_lines = self._plan_lines(root, items)
        guess = self.estimate("museum", sum(it.config.steps for it in tasks), tasks[0].config.batch_size) if tasks else None
        job.estimate_s = guess[0] if guess else None
        report: list[str] = []

        def work(job: Job):
            from generators.museum.ingest import ingest

            job.log("\n".join(plan_lines))
            thumbs = []

            def task_done(lines: str):
                report.extend(lines.split("\n"))
                job.log(lines)

            def show_thumb(step, images, captions):
                thumbs.extend(zip(images, captions))
                job.set_previews(list(thumbs))

            manifests = ingest(museum, items, self.base, self.device,
                               Run(progress=job.progress, should_stop=job.should_stop, log=task_done, preview=show_thumb),
                               self.evaluator())
            if manifests and manifests[-1].get("stopped"):
                m = manifests[-1]
                report.append(f"stopped during {m['name']} at step {m['result']['steps']}: the museum "
                              "holds the styles learnt before it; press Learn all again to resume")
                job.log(report[-1])
                return {"stopped": True}
            skipped = [f"  {it.name}: {it.action} - {it.reason}" for it in items if it.action in ("skip", "refuse", "invalid")]
            report[:0] = ["report:"] + skipped
            job.log("\n".join(report))
            if tasks:
                self.record_job_timing(job, tasks[0].config.batch_size)
            return {"learnt": len(tasks)}

        def render(j: Job):
            text = "\n".join(plan_lines + ([""] + report if report else []))
            return _status_md(j), list(j.previews), f"```\n{text}\n```"

        yield from self.run_job(job, work, render)
