"""`studio serve`: the web app (Museum, Generate, Lifelong GAN, Synthetic data, Jobs)."""

from __future__ import annotations

from pathlib import Path

from generators.errors import UserError
from studio.commands.common import check_base


def register(sub) -> None:
    p = sub.add_parser("serve", help="launch the web app (binds 127.0.0.1 unless --host says otherwise)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--museum", type=Path, default=None,
                   help="museum folder (default: $STUDIO_HOME/museum, STUDIO_HOME defaulting to ~/.studio)")
    p.add_argument("--base", default=None,
                   help="diffusers StableDiffusionPipeline folder or hub id (default: the embedded studio-mini-2; studio-mini names the first embedded base)")
    p.add_argument("--gan-base", type=Path, default=None,
                   help="GAN base for a new task store (default: assets/gan-mini)")
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require this user name and password to log in")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    p.set_defaults(run=run, preflight=check_base)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth must be USER:PASS with a non-empty user name and password")
    return user, password


def run(args) -> int:
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1-65535, got {args.port}")
    auth = parse_auth(args.auth)
    from generators.diffusion import resolve_device
    from studio.webapp import create_app, launch

    device = str(resolve_device(args.device))
    demo = create_app(args.museum, args.base, None, device, gan_base=args.gan_base)
    studio = demo.studio
    exposed = args.host not in ("127.0.0.1", "localhost", "::1")
    print(f"Studio on http://{args.host}:{args.port}/ (STUDIO_HOME {studio.home}, museum {studio.museum_dir}, "
          f"device {device}{', login required' if auth else ''})", flush=True)
    if exposed and not auth:
        print(f"warning: --host {args.host} makes the app reachable from the network without a login; add --auth", flush=True)
    launch(demo, host=args.host, port=args.port, auth=auth, quiet=True)
    return 0
