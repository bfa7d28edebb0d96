"""Browser test machinery: one JupyterLab server and one headless Chromium per session, driven by Playwright.

Usage (in any test module under tests/browser/)::

    import pytest

    pytestmark = pytest.mark.browser

    def test_my_widget(lab):
        nb = lab.open_notebook(["from xai_widgets.widgets import HeatmapView", "view = HeatmapView(...)", "view"])
        canvas = nb.heatmap_canvas()                  # locator: the .xai-heatmap-canvas of the (first) view
        n = nb.wait_map(canvas)                        # until the view has drawn a map; n maps so far
        ...                                            # change something, then nb.wait_map(canvas, more_than=n)
        assert nb.canvas_stats(canvas)["distinct"] > 10
        nb.reset_messages()
        canvas.hover()
        assert nb.sent_messages() == []               # nothing went to the kernel
        assert nb.eval("view.title") == "..."          # evaluate Python in the notebook's kernel

Fixtures:
    ``lab_server`` (session): a running :class:`LabServer` (``url``, ``token``, ``root``, ``env``).
    ``chromium`` (session): a Playwright ``Browser`` (Debian's /usr/bin/chromium, every request that is not to
        127.0.0.1 aborted by each context :meth:`Lab.new_page` makes).
    ``lab`` (function): a :class:`Lab` (a fresh browser context) whose :meth:`Lab.open_notebook` writes a
        notebook with the given code cells into the server's root, opens it, waits until the kernel is
        connected and idle, runs all cells, waits until they have finished and returns a :class:`Notebook`;
        ``frontend="notebook"`` opens it in Notebook 7 (served by the same server) instead of JupyterLab 4.
    ``new_lab`` (session): a factory of :class:`Lab` for fixtures of any scope; for a notebook shared by the
        tests of a module: ``@pytest.fixture(scope="module")`` ``def nb(new_lab):``
        ``with new_lab() as lab: yield lab.open_notebook(cells)``.
    ``voila`` (function): ``voila(cells) -> (page, url)`` renders a notebook under Voila (own server process,
        stopped at teardown) in a fresh context.

:class:`Notebook` helpers: ``run_all()``, ``execute(code) -> stdout`` and ``eval(expr) -> value`` in the kernel
(without a cell), ``sent_messages()`` / ``reset_messages()`` (messages the page sent to the kernel, e.g. widget
``comm_msg``; counted on the kernel connection's ``anyMessage`` signal), ``heatmap_canvas(title=None)``,
``wait_map(canvas, more_than=0)`` / ``maps(canvas)`` / ``paints(canvas)`` (HeatmapView counters: maps received,
repaints of any kind), ``canvas_stats(canvas)`` (``width, height, mean, std, distinct, digest``
of the pixels of any ``<canvas>`` locator: judge a view by its own element, never by the page), ``save()`` (with
the widget state, see below) and ``page`` (the Playwright page, for clicks and drags; scroll a control into view
before dragging it). ``Lab.open_path(path, run=False)`` reopens a saved notebook; ``lab_server.shutdown_kernels()``
ends every kernel (REST API). JupyterLab restores a saved widget state only once a kernel is connected (a fresh
kernel that ran nothing is enough), so "reopened without its kernel" means: kernels shut down, page reopened.
Widgets of other helpers can follow HeatmapView's convention of ``data-paints``/``data-maps`` counters on their
canvas so tests can wait on them.

When a browser test fails, a screenshot of every open page goes to ``test-artifacts/<test>-<n>.png``. Browser
tests are skipped, with the reason, only when /usr/bin/chromium is missing (``make chromium`` installs it).
The server runs with its own temporary JUPYTER_*/IPYTHONDIR/XDG_* folders, announcements and update checks
off, ``window.jupyterapp`` exposed, and widget state saved into the notebook on save.
The classes are plain Python, so a benchmark can use them without pytest (see benchmarks/widget_latency.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
BIN = Path(sys.executable).parent
KERNEL_READY_S = 180
RUN_S = 300

_open_pages: list[Any] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_env(base: Path) -> dict[str, str]:
    """The environment of a Jupyter process whose config, data, runtime and caches live under ``base``."""
    env = dict(os.environ)
    folders = {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "IPYTHONDIR": "ipython",
        "XDG_CONFIG_HOME": "xdg-config",
        "XDG_DATA_HOME": "xdg-data",
        "XDG_CACHE_HOME": "xdg-cache",
        "XDG_RUNTIME_DIR": "xdg-runtime",
        "XDG_STATE_HOME": "xdg-state",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
    }
    for variable, name in folders.items():
        path = base / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[variable] = str(path)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _wait_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (for servers whose pages have side effects)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a server we started, by its PID (SIGTERM, then SIGKILL of its own process group)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


class LabServer:
    """JupyterLab on 127.0.0.1 with a free port, a token and temporary folders; ``stop()`` ends it by PID."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="xai-lab-"))
        self.root = self.base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = isolated_env(self.base)
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.base / "lab.log"
        self.process: subprocess.Popen | None = None
        config = Path(self.env["JUPYTER_CONFIG_DIR"])
        _write_json(
            config / "labconfig" / "page_config.json",
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}},
        )
        settings = Path(self.env["JUPYTERLAB_SETTINGS_DIR"])
        _write_json(
            settings / "@jupyter-widgets" / "jupyterlab-manager" / "plugin.jupyterlab-settings",
            {"saveState": True},
        )

    def start(self, timeout: float = 120.0) -> LabServer:
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--JupyterNotebookApp.expose_app_in_browser=True",  # Notebook 7 on the same server
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_http(f"{self.url}/api/status?token={self.token}", self.process, self.log, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.base, ignore_errors=True)

    def write_notebook(self, cells: Sequence[str], name: str | None = None) -> str:
        """Write a python3 notebook with ``cells`` (code) into the root; returns its name."""
        import nbformat

        name = name or f"nb-{uuid.uuid4().hex[:8]}.ipynb"
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        notebook.cells = [nbformat.v4.new_code_cell(code) for code in cells]
        nbformat.write(notebook, self.root / name)
        return name

    def shutdown_kernels(self) -> None:
        """Shut down every kernel of the server (REST API)."""
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium with the flags of DESIGN.md §5 (Playwright gives it a fresh --user-data-dir)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)


def local_only(route: Any) -> None:
    """Abort every request that is not to 127.0.0.1 (the tests run offline)."""
    if urlparse(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


# JavaScript run in the page --------------------------------------------------------------------------------
_PANEL_JS = """
(path) => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const widget of app.shell.widgets("main")) {
    if (widget.context && widget.context.path === path) return true;
  }
  return null;
}
"""

_FIND = """
const findPanel = (path) => {
  for (const widget of window.jupyterapp.shell.widgets("main")) {
    if (widget.context && widget.context.path === path) return widget;
  }
  throw new Error(`no open notebook ${path}`);
};
"""

_KERNEL_IDLE_JS = (
    _FIND
    + """
(path) => {
  const kernel = findPanel(path).sessionContext.session?.kernel;
  if (!kernel || kernel.connectionStatus !== "connected" || kernel.status !== "idle") return false;
  if (!window.__xaiMessages) window.__xaiMessages = {};
  if (!window.__xaiMessages[path]) {
    const log = (window.__xaiMessages[path] = []);
    kernel.anyMessage.connect((_, args) => {
      if (args.direction === "send") {
        const content = args.msg.content || {};
        log.push({ type: args.msg.header.msg_type, method: content.data ? content.data.method : null });
      }
    });
  }
  return true;
}
"""
)

_CELLS_DONE_JS = (
    _FIND
    + """
(path) => {
  const panel = findPanel(path);
  const kernel = panel.sessionContext.session?.kernel;
  if (!kernel || kernel.status !== "idle") return false;
  const cells = panel.content.widgets.filter((cell) => cell.model.type === "code");
  return cells.every((cell) => cell.model.executionCount !== null && cell.model.executionCount !== undefined);
}
"""
)

_EXECUTE_JS = (
    _FIND
    + """
async ([path, code]) => {
  const kernel = findPanel(path).sessionContext.session.kernel;
  const future = kernel.requestExecute({ code, silent: false, store_history: false });
  let out = "";
  let error = null;
  future.onIOPub = (msg) => {
    const type = msg.header.msg_type;
    if (type === "stream") out += msg.content.text;
    if (type === "error") error = `${msg.content.ename}: ${msg.content.evalue}`;
  };
  await future.done;
  return { out, error };
}
"""
)

_STATS_JS = """
(canvas) => {
  const { width, height } = canvas;
  const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let sum = 0, squares = 0, hash = 2166136261;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) {
    const grey = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    sum += grey;
    squares += grey * grey;
    if (colours.size < 5000) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    for (let k = 0; k < 4; k++) hash = Math.imul(hash ^ data[i + k], 16777619) >>> 0;
  }
  const n = width * height;
  const mean = sum / n;
  return { width, height, mean, std: Math.sqrt(Math.max(0, squares / n - mean * mean)),
           distinct: colours.size, digest: hash.toString(16) };
}
"""


class Notebook:
    """An open notebook in a page, with its kernel connected; see the module docstring."""

    def __init__(self, page: Any, path: str, server: LabServer) -> None:
        self.page = page
        self.path = path
        self.server = server

    def wait_kernel_idle(self, timeout: float = KERNEL_READY_S) -> None:
        self.page.wait_for_function(_KERNEL_IDLE_JS, arg=self.path, timeout=timeout * 1000, polling=250)

    def run_all(self, timeout: float = RUN_S) -> None:
        """Run every cell and wait until each has an execution count and the kernel is idle; raises on errors."""
        self.page.evaluate(
            _FIND + "(path) => { const p = findPanel(path); window.jupyterapp.shell.activateById(p.id); }",
            self.path,
        )
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self.page.wait_for_function(_CELLS_DONE_JS, arg=self.path, timeout=timeout * 1000, polling=250)
        errors = self.page.evaluate(
            _FIND
            + """(path) => findPanel(path).content.widgets.flatMap((cell) => cell.model.type !== "code" ? [] :
                 cell.model.outputs.toJSON().filter((o) => o.output_type === "error")
                 .map((o) => `${o.ename}: ${o.evalue}`))""",
            self.path,
        )
        if errors:
            raise AssertionError(f"cells of {self.path} raised: {errors}")

    def execute(self, code: str, timeout: float = 120) -> str:
        """Run ``code`` in the kernel (no cell) and return its stdout; raises AssertionError on a Python error."""
        self.page.set_default_timeout(timeout * 1000)
        result = self.page.evaluate(_EXECUTE_JS, [self.path, code])
        if result["error"]:
            raise AssertionError(f"kernel error for {code!r}: {result['error']}")
        return result["out"]

    def eval(self, expression: str) -> Any:
        """The JSON value of a Python expression evaluated in the kernel."""
        marker = "__xai_json__"
        out = self.execute(f"import json as _j; print({marker!r} + _j.dumps({expression}))")
        return json.loads(out.split(marker, 1)[1])

    def sent_messages(self) -> list[dict]:
        """Messages this page sent to the kernel since the last reset: ``{"type", "method"}`` each."""
        return self.page.evaluate("(path) => window.__xaiMessages[path].slice()", self.path)

    def reset_messages(self) -> None:
        self.page.evaluate("(path) => { window.__xaiMessages[path].length = 0; }", self.path)

    def heatmap_canvas(self, title: str | None = None) -> Any:
        """The canvas of the first HeatmapView (whose title contains ``title``, when given)."""
        views = self.page.locator(".xai-heatmap")
        if title is not None:
            views = views.filter(has=self.page.locator(".xai-heatmap-title", has_text=title))
        return views.first.locator("canvas.xai-heatmap-canvas")

    def paints(self, canvas: Any) -> int:
        """How often the view has painted its canvas (any repaint: map, opacity, status, …)."""
        return int(canvas.get_attribute("data-paints") or 0)

    def maps(self, canvas: Any) -> int:
        """How many maps the view has received and drawn."""
        return int(canvas.get_attribute("data-maps") or 0)

    def wait_map(self, canvas: Any, more_than: int = 0, timeout: float = RUN_S) -> int:
        """Wait until the view of ``canvas`` has drawn more than ``more_than`` maps; returns the count."""
        canvas.wait_for(state="attached", timeout=timeout * 1000)
        self.page.wait_for_function(
            "([c, n]) => Number(c.dataset.maps) > n && Number(c.dataset.paints) > 0",
            arg=[canvas.element_handle(), more_than],
            timeout=timeout * 1000,
            polling=50,
        )
        return self.maps(canvas)

    def canvas_stats(self, canvas: Any) -> dict:
        """Statistics of the canvas's own pixels: width, height, mean, std, distinct colours, digest."""
        return canvas.evaluate(_STATS_JS)

    def save(self) -> None:
        """Save the notebook (with the widget state: the server's settings turn saveState on)."""
        self.page.evaluate(
            _FIND + "async (path) => { await findPanel(path).context.save(); }",
            self.path,
        )


class Lab:
    """A browser context on the server; ``open_notebook`` gives a ready :class:`Notebook`. Close it after use."""

    def __init__(self, server: LabServer, browser: Any) -> None:
        self.server = server
        self.browser = browser
        self.contexts: list[Any] = []

    def new_page(self) -> Any:
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        context.route("**/*", local_only)
        context.set_default_timeout(60_000)
        self.contexts.append(context)
        page = context.new_page()
        _open_pages.append(page)
        return page

    def open_notebook(
        self,
        cells: Sequence[str],
        name: str | None = None,
        run: bool = True,
        timeout: float = RUN_S,
        frontend: str = "lab",
    ) -> Notebook:
        """Write ``cells`` to a notebook, open it, wait for an idle kernel, run all cells (unless ``run=False``).

        ``frontend``: ``"lab"`` (JupyterLab 4) or ``"notebook"`` (Notebook 7, served by the same server)."""
        path = self.server.write_notebook(cells, name)
        return self.open_path(path, run=run, timeout=timeout, frontend=frontend)

    def open_path(
        self, path: str, run: bool = True, timeout: float = RUN_S, frontend: str = "lab"
    ) -> Notebook:
        page = self.new_page()
        if frontend == "notebook":
            page.goto(f"{self.server.url}/notebooks/{path}?token={self.server.token}")
        elif frontend == "lab":
            workspace = uuid.uuid4().hex[:8]
            page.goto(f"{self.server.url}/lab/workspaces/{workspace}/tree/{path}?token={self.server.token}")
        else:
            raise ValueError(f"frontend must be 'lab' or 'notebook', got {frontend!r}")
        page.wait_for_function(_PANEL_JS, arg=path, timeout=KERNEL_READY_S * 1000, polling=250)
        notebook = Notebook(page, path, self.server)
        notebook.wait_kernel_idle()
        if run:
            notebook.run_all(timeout)
        return notebook

    def close(self) -> None:
        for context in self.contexts:
            for page in context.pages:
                if page in _open_pages:
                    _open_pages.remove(page)
            with contextlib.suppress(Exception):
                context.close()
        self.contexts.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class VoilaServer:
    """Voila serving one notebook on 127.0.0.1 (own temporary folders); ``stop()`` ends it by PID."""

    def __init__(self, notebook: Path) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="xai-voila-"))
        self.env = isolated_env(self.base)
        self.notebook = notebook
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.base / "voila.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> VoilaServer:
        command = [
            str(BIN / "voila"),
            str(self.notebook),
            "--no-browser",
            f"--port={self.port}",
            "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0",
            "--show_tracebacks=True",
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.notebook.parent,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_port(self.port, self.process, self.log, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.base, ignore_errors=True)


# Fixtures ---------------------------------------------------------------------------------------------------
def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing (install it with `make chromium`); browser tests need Debian's chromium"
        )


@pytest.fixture(scope="session")
def lab_server() -> Iterator[LabServer]:
    _require_chromium()
    server = LabServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def new_lab(lab_server: LabServer, chromium: Any) -> Any:
    """A factory of :class:`Lab` sessions for fixtures of any scope: ``with new_lab() as lab: ...``."""
    return lambda: Lab(lab_server, chromium)


@pytest.fixture
def lab(new_lab: Any) -> Iterator[Lab]:
    with new_lab() as session:
        yield session


@pytest.fixture
def voila(chromium: Any, tmp_path: Path) -> Iterator[Any]:
    servers: list[VoilaServer] = []
    contexts: list[Any] = []

    def render(cells: Sequence[str]) -> tuple[Any, str]:
        import nbformat

        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        notebook.cells = [nbformat.v4.new_code_cell(code) for code in cells]
        path = tmp_path / f"voila-{len(servers)}.ipynb"
        nbformat.write(notebook, path)
        server = VoilaServer(path).start()
        servers.append(server)
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        context.route("**/*", local_only)
        contexts.append(context)
        page = context.new_page()
        _open_pages.append(page)
        page.goto(server.url, timeout=RUN_S * 1000)
        return page, server.url

    try:
        yield render
    finally:
        for context in contexts:
            for page in context.pages:
                if page in _open_pages:
                    _open_pages.remove(page)
            with contextlib.suppress(Exception):
                context.close()
        for server in servers:
            server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep a screenshot of every open page when a browser test fails."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call") and _open_pages:
        ARTIFACTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "_", item.nodeid.split("::", 1)[-1])
        for n, page in enumerate(list(_open_pages)):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / f"{stem}-{n}.png"), full_page=True)
