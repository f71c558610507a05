"""`studio serve`'s web app: one gr.Blocks with a tab per engine and a jobs panel.

    demo = create_app(museum_dir, base, studio_home, device="cpu")
    launch(demo, host="127.0.0.1", port=7860, auth=("user", "pass"))

Tabs: Museum (styles, learn with live progress and Stop, forgetting heatmap, export),
Generate (prompt -> PNGs with their settings embedded, reuse settings), Lifelong GAN,
Synthetic data, and Jobs (every heavy job: queued, running, finished, stopped, failed, and
its log). Every event has an explicit api_name, so gradio_client can drive all of it.

How long jobs run (the Gradio conventions of Studio): every heavy piece of work is a job on the
app's job board (studio.jobs.JobBoard), which runs one job at a time on its own thread, in the
order they were started. A click first registers a *queued* job (a cheap private event), then
the event claims it, starts it on the board and streams its progress by yielding. The job
belongs to the board, not to the page: closing the tab ends only the streaming; a reopened page
follows the user's latest job of every panel (`Studio.follow_page`, on load) and the Jobs tab
lists them all. Stop sets the job's flag, which the engines check between steps (their
`should_stop` seam), so a stop lands within one step and leaves every store consistent (an
interrupted museum task keeps its checkpoint and resumes next time). Jobs belong to the
logged-in user (`--auth`), else to "local"; only their user may stop them. Each job measures
its seconds per step; the museum's speed on this machine is kept in STUDIO_HOME/logs/timings.json
for the estimate shown before a job starts, and the status shows the time left while it runs.

Layout: `app.py` (`Studio`, `create_app`, `launch`); one module per tab, each a mixin of `Studio`'s
events and the function that builds its tab: `museum.py` (+ `museum_folder.py`, the folder of style
folders), `generate.py`, `gan.py`, `synthetic.py`, `jobs.py` (the Jobs tab and `follow_page`);
`shared.py` (limits, the job-board glue `StudioBase`, status HTML, and `page_errors`: the one place
an exception becomes the page's message, user errors as is, bugs logged with their traceback);
`uploads.py` (checked uploads, safe zips).

Safety: `launch` binds 127.0.0.1 unless told otherwise, never shares, and serves files from
STUDIO_HOME/outputs and STUDIO_HOME/exports only (plus Gradio's own cache, which is put
under STUDIO_HOME/tmp); museum images (thumbnails) are sent as images, not as paths. Uploads
are checked for type, size and count and copied under STUDIO_HOME/uploads with sanitized names.
The one server path the browser may name is the Museum tab's folder of style folders (what
`studio ingest DIR` reads): it is only read, never written, like the CLI's.
"""

from __future__ import annotations

from generators.museum.scores import score_text
from studio.webapp.app import Studio, create_app, launch
from studio.webapp.gan import GAN_COLUMNS
from studio.webapp.jobs import JOB_COLUMNS, PANELS
from studio.webapp.shared import (CAPTION_SUFFIXES, CSS, HEAVY, IMAGE_SUFFIXES, LAUNCH_MAX_FILE_SIZE, LIGHT, MAX_BATCH,
                                  MAX_FILE_BYTES, MAX_PROMPT, MAX_STYLE_FILES, MAX_UPLOAD_BYTES, MAX_ZIP_BYTES,
                                  MAX_ZIP_MEMBERS, NAME, SAFE_NAME, StudioBase, UserError, page_errors, studio_home_dir)
from studio.webapp.synthetic import BANK_COLUMNS, DEFAULT_CATEGORY
from studio.webapp.uploads import check_uploads, safe_extract_zip, safe_file_name, zip_folder

__all__ = [
    "BANK_COLUMNS", "CAPTION_SUFFIXES", "CSS", "DEFAULT_CATEGORY", "GAN_COLUMNS", "HEAVY", "IMAGE_SUFFIXES",
    "JOB_COLUMNS", "LAUNCH_MAX_FILE_SIZE", "LIGHT", "MAX_BATCH", "MAX_FILE_BYTES", "MAX_PROMPT", "MAX_STYLE_FILES",
    "MAX_UPLOAD_BYTES", "MAX_ZIP_BYTES", "MAX_ZIP_MEMBERS", "NAME", "PANELS", "SAFE_NAME", "Studio",
    "StudioBase", "UserError", "check_uploads", "create_app", "launch", "page_errors", "safe_extract_zip",
    "safe_file_name", "score_text", "studio_home_dir", "zip_folder",
]
