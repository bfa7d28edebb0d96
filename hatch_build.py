"""Hatch build hook: bundle the widgets' front ends (js/ → xai_widgets/static/) before a wheel or sdist is made.

The built files are a build output (gitignored), so the wheel and the sdist carry them and ``pip install``
never needs Node. The hook runs ``npm ci && npm run build`` in ``js/`` only when ``xai_widgets/static/`` is
missing or older than a source in ``js/`` and npm is on PATH; a wheel built from the sdist finds the files
already there. Set ``XAI_WIDGETS_SKIP_JS=1`` to package whatever is built without running npm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = ("widgets", "lib")
INPUTS = ("package.json", "package-lock.json", "build.mjs")


def _newest_source(js: Path) -> float:
    files = [js / name for name in INPUTS if (js / name).is_file()]
    for folder in SOURCES:
        files += [path for path in (js / folder).rglob("*") if path.is_file()]
    return max((path.stat().st_mtime for path in files), default=0.0)


def _widget_names(js: Path) -> list[str]:
    return sorted(path.stem for path in (js / "widgets").glob("*.js"))


def stale(root: Path) -> bool:
    """True when a widget's module or stylesheet is missing from xai_widgets/static or older than js/."""
    js, static = root / "js", root / "xai_widgets" / "static"
    built = [static / f"{name}{suffix}" for name in _widget_names(js) for suffix in (".js", ".css")]
    if not built or not all(path.is_file() for path in built):
        return True
    return min(path.stat().st_mtime for path in built) < _newest_source(js)


class JSBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        root = Path(self.root)
        js = root / "js"
        if not (js / "package.json").is_file() or not stale(root):
            return
        static = root / "xai_widgets" / "static"
        built = static.is_dir() and any(static.glob("*.js"))
        npm = shutil.which("npm")
        if os.environ.get("XAI_WIDGETS_SKIP_JS") == "1" or npm is None:
            if built:
                self.app.display_warning(
                    "xai_widgets: js/ is newer than xai_widgets/static; packaging it as is"
                )
                return
            raise RuntimeError(
                "xai_widgets: the widgets' front end (js/ → xai_widgets/static/) is not built and npm is not on "
                "PATH. Install Node.js >= 20 and run `make js` (or `cd js && npm ci && npm run build`), or "
                "install xai_widgets from a wheel or sdist, which carry the built files."
            )
        self.app.display_info("xai_widgets: building the widgets' front end (npm ci && npm run build in js/)")
        if not (js / "node_modules" / ".package-lock.json").is_file():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=js, check=True)
        subprocess.run([npm, "run", "build"], cwd=js, check=True)
