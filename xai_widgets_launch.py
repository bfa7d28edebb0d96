"""The ``xai-widgets`` console script.

``xai-widgets app`` (the workshop page) starts Voila at once: this module imports neither torch nor the
``xai_widgets`` package, whose import costs seconds on a laptop that the page's own kernel pays again anyway.
It checks its arguments from the file system (the zoo's shipped weights, the picture folder), writes a one-cell
notebook and serves it with a preheated kernel, so the page's work starts while Voila starts. Every other
command is :func:`xai_widgets.cli.main`.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


class AppError(ValueError):
    """Bad arguments of ``xai-widgets app`` (reported as ``xai-widgets: error: …``, exit status 2)."""


def zoo_names() -> list[str]:
    """The shipped zoo models, read from the weights folder without importing the package."""
    spec = importlib.util.find_spec("xai_widgets")
    if spec is None or not spec.submodule_search_locations:
        raise AppError("the xai_widgets package is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "zoo" / "weights"
    return sorted(path.stem for path in folder.glob("*.pt"))


def picture_files(folder: str | Path) -> dict[str, str]:
    """The picture files of a folder (PNG, JPEG, BMP, GIF, TIFF, WebP), by file name."""
    path = Path(folder)
    if not path.is_dir():
        raise AppError(f"--images must be a folder of pictures; {str(path)!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
    if not files:
        raise AppError(f"no picture files (PNG, JPEG, …) in {str(path)!r}")
    return {p.name: str(p) for p in files}


def add_app_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``app`` subcommand's arguments (shared with :mod:`xai_widgets.cli`'s help)."""
    app = commands.add_parser(
        "app",
        help="the workbench as a web page (Voila) on localhost, for workshops",
        description="Serve the workbench (every view on one linked state) through Voila on 127.0.0.1: zoo "
        "models and pictures are chosen in the page, no code cells. Needs the app extra (voila).",
    )
    app.add_argument(
        "--model", default="shapes-resnet", help="zoo model shown first (default: shapes-resnet)"
    )
    app.add_argument("--images", default=None, help="a folder of pictures to offer besides the gallery")
    app.add_argument("--port", type=int, default=8866, help="port on 127.0.0.1 (default: 8866)")
    return app


def _notebook(model: str, images: str | None) -> str:
    """A one-cell notebook (nbformat 4 JSON) showing the workshop page."""
    import json

    code = f"from xai_widgets.widgets.workbench import workshop\nworkshop(model={model!r}, images={images!r})"
    cell = {"cell_type": "code", "execution_count": None, "id": "workshop", "metadata": {}, "outputs": [],
            "source": code}  # fmt: skip
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return json.dumps(
        {"cells": [cell], "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    )


def serve(model: str, images: str | None, port: int) -> int:
    """Check the arguments, then serve the workshop page with Voila until interrupted (raises AppError)."""
    if importlib.util.find_spec("voila") is None:
        raise AppError("the app needs Voila: pip install 'xai_widgets[app]'")
    names = zoo_names()
    if model not in names:
        raise AppError(f"unknown zoo model {model!r}; choose one of {', '.join(names)}")
    if images is not None:
        images = str(Path(images).resolve())
        picture_files(images)  # a bad folder fails here, in words, not in the page
    if not 0 < port < 65536:
        raise AppError(f"--port must be between 1 and 65535, got {port}")
    with tempfile.TemporaryDirectory(prefix="xai-widgets-app-") as folder:
        path = Path(folder) / "workbench.ipynb"
        path.write_text(_notebook(model, images))
        command = [
            sys.executable, "-m", "voila", str(path), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0", "--preheat_kernel=True",
        ]  # fmt: skip
        server = subprocess.Popen(command, cwd=folder)
        previous = _stop_on_sigterm()
        try:
            url = f"http://127.0.0.1:{port}/"
            while server.poll() is None and not _listening(port):
                time.sleep(0.1)
            if server.poll() is None:
                print(f"xai-widgets app: the workbench of {model} at {url} (Ctrl-C stops)", flush=True)
            return server.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if server.poll() is None:
                server.terminate()  # Voila then shuts its kernels down, the preheated ones too
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()


def _stop_on_sigterm() -> Any:
    """Make SIGTERM (``kill``, a test harness, a service manager) end the command like Ctrl-C, so Voila and its
    kernels are stopped rather than left serving; returns the previous handler (None off the main thread)."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: signals cannot be handled here
        return None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xai-widgets``: ``app`` here, every other command in :mod:`xai_widgets.cli`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["app"]:
        from xai_widgets.cli import main as cli_main

        return cli_main(argv)
    parser = argparse.ArgumentParser(prog="xai-widgets")
    args = add_app_parser(parser.add_subparsers(dest="command", required=True)).parse_args(argv[1:])
    try:
        return serve(args.model, args.images, args.port)
    except AppError as error:
        print(f"xai-widgets: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
