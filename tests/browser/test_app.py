"""``xai-widgets app`` serves the workbench through Voila: it prints its URL, and the page shows a map."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from .conftest import BIN, RUN_S, _open_pages, free_port, isolated_env, local_only, stop_process

pytestmark = pytest.mark.browser


def _read_url(process: subprocess.Popen, log: Path, timeout: float) -> str:
    """The URL the command prints once Voila listens (its first stdout line naming http://)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"xai-widgets app exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        for line in log.read_text().splitlines():
            if line.startswith("xai-widgets app:") and "http://" in line:
                return line[line.index("http://") :].split()[0]
        time.sleep(0.2)
    raise AssertionError(f"no URL printed after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def test_the_app_starts_and_shows_a_map(chromium, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("RGB", (48, 40), (200, 40, 40)).save(folder / "red.png")
    env = isolated_env(tmp_path / "env")
    log = tmp_path / "app.log"
    port = free_port()
    command = [str(BIN / "xai-widgets"), "app", "--model", "shapes-resnet", "--images", str(folder)]
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    context = None
    try:
        url = _read_url(process, log, 180)
        assert url == f"http://127.0.0.1:{port}/"
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        context.route("**/*", local_only)
        page = context.new_page()
        _open_pages.append(page)
        page.goto(url, timeout=RUN_S * 1000)
        workbench = page.locator(".xai-workbench")
        workbench.wait_for(timeout=RUN_S * 1000)
        canvas = workbench.locator(".xai-heatmap canvas.xai-heatmap-canvas").first
        page.wait_for_function(
            "(c) => Number(c.dataset.maps) > 0", arg=canvas.element_handle(), timeout=RUN_S * 1000
        )
        colours = canvas.evaluate(
            """(c) => { const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                        const s = new Set(); for (let i = 0; i < d.length; i += 4)
                        s.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); return s.size; }"""
        )
        assert colours > 100
        models = page.locator(".xai-workshop select").first.locator("option").all_text_contents()
        assert {"shapes-resnet", "shapes-vgg", "mnist-mlp-d20"} <= set(models)
        pictures = page.locator(".xai-workbench select").first.locator("option").all_text_contents()
        assert "red.png" in pictures and any(p.startswith("photo:") for p in pictures)
        served = psutil.Process(process.pid).children(recursive=True)  # Voila and its (preheated) kernels
        assert served
    finally:
        if context is not None:
            for open_page in context.pages:
                if open_page in _open_pages:
                    _open_pages.remove(open_page)
            context.close()
        stop_process(process)
    # stopping the command (SIGTERM, as a service manager or `kill` does) stops Voila and its kernels too
    _, alive = psutil.wait_procs(served, timeout=30)
    assert not alive, [p.cmdline()[:4] for p in alive]
