"""The app: `Studio` (the state and every event's function, one mixin per tab), `create_app` (the
gr.Blocks with its tabs and the page-load events) and `launch` (Studio's safe defaults)."""

from __future__ import annotations

import os

import gradio as gr

from studio.webapp.gan import GanMixin, _gan_tab
from studio.webapp.generate import GenerateMixin, _generate_tab
from studio.webapp.jobs import PANELS, JobsMixin, _jobs_tab
from studio.webapp.museum import _museum_tab
from studio.webapp.museum_folder import MuseumFolderMixin
from studio.webapp.shared import CSS, HEAVY, LAUNCH_MAX_FILE_SIZE, LIGHT
from studio.webapp.synthetic import SyntheticMixin, _synthetic_tab


class Studio(MuseumFolderMixin, GenerateMixin, GanMixin, SyntheticMixin, JobsMixin):
    """The app's state and the functions behind its events (usable without a browser)."""


def create_app(museum_dir=None, base=None, studio_home=None, device: str = "cpu", gan_base=None) -> gr.Blocks:
    """The Studio web app (not launched: use `launch(demo, ...)`).

    museum_dir: the museum (default STUDIO_HOME/museum); base: the text-to-image base (default
    the embedded default, studio-mini-2); studio_home: where everything else goes (default $STUDIO_HOME,
    else ~/.studio); gan_base: the GAN base for a new task store (default assets/gan-mini)."""
    studio = Studio(museum_dir, base, studio_home, device, gan_base)
    # Gradio's upload and cache folder lives under STUDIO_HOME: nothing is written elsewhere.
    os.environ["GRADIO_TEMP_DIR"] = str(studio.home / "tmp")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    with gr.Blocks(title="Studio", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        demo.studio = studio
        gr.Markdown("# Studio\nTeach a text-to-image model new styles one after another, adapt a GAN to new domains, "
                    "and turn a few photos per class into a synthetic data set. Heavy jobs run one at a time; "
                    "the **Jobs** tab shows the queue and every log.")
        panels: dict[str, list] = {}
        with gr.Tabs():
            with gr.Tab("Museum", id="museum"):
                museum_ui = _museum_tab(studio)
                panels["museum"] = [museum_ui["status"], museum_ui["previews"]]
            with gr.Tab("Generate", id="generate"):
                gen_ui = _generate_tab(studio)
                panels["generate"] = gen_ui["panel"]
            with gr.Tab("Lifelong GAN", id="gan"):
                gan_outputs = _gan_tab(studio, panels)
            with gr.Tab("Synthetic data", id="synthetic"):
                _synthetic_tab(studio, panels)
            with gr.Tab("Jobs", id="jobs"):
                _jobs_tab(studio)
        refresh_outputs = [museum_ui["styles"], museum_ui["heatmap"], museum_ui["export_name"], gen_ui["styles"]]
        demo.load(studio.museum_refresh, None, refresh_outputs, api_visibility="private", **LIGHT)
        demo.load(studio.gan_refresh, None, gan_outputs, api_visibility="private", **LIGHT)
        museum_ui["learn_event"].then(studio.museum_refresh, None, refresh_outputs, api_visibility="private", **LIGHT)
        museum_ui["ingest_event"].then(studio.museum_refresh, None, refresh_outputs, api_visibility="private", **LIGHT)
        # A (re)opened page follows this user's latest job of every panel: jobs outlive their tabs.
        followed = demo.load(studio.follow_page, None, [c for p in PANELS for c in panels[p]], api_visibility="private",
                             show_progress="hidden", **HEAVY)
        followed.then(studio.museum_refresh, None, refresh_outputs, api_visibility="private", **LIGHT)
        followed.then(studio.gan_refresh, None, gan_outputs, api_visibility="private", **LIGHT)
        followed.then(studio.estimate_md, museum_ui["estimate_inputs"], museum_ui["estimate"], api_visibility="private",
                      show_progress="hidden", **LIGHT)
        museum_ui["refresh"].click(studio.museum_refresh, None, refresh_outputs, api_name="museum_styles", **LIGHT)
    demo.queue(default_concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, auth: tuple[str, str] | None = None,
           **kwargs):
    """Launch with Studio's safe defaults: loopback, no share link, outputs/exports servable only."""
    studio: Studio = demo.studio
    return demo.launch(server_name=host, server_port=port, auth=auth, share=False, allowed_paths=studio.allowed_paths,
                       max_file_size=LAUNCH_MAX_FILE_SIZE, show_error=True, css=CSS, **kwargs)
