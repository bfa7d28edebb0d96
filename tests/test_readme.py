"""The README's Python examples run, twice in one process, and every public name stays what it is.

A public function that shares its name with a submodule becomes the module once the submodule is imported
(``xw.camanim`` did: the second call raised ``TypeError: 'module' object is not callable``).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import types
from pathlib import Path

import pytest
import torch

import xai_widgets as xw

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
REGISTERED = {"occlusion", "max_grad_cam"}  # by the README's examples; removed after each test


@pytest.fixture
def registry_restored():
    before = {info.name for info in xw.methods()}
    yield
    for name in {info.name for info in xw.methods()} - before:
        xw.unregister_method(name)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_readme_example_runs_twice_in_one_process(index, registry_restored):
    torch.manual_seed(0)
    for _ in range(2):
        namespace: dict = {"__name__": "readme"}
        exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), namespace)
    registered = REGISTERED & {info.name for info in xw.methods()}
    for name in registered:  # the registered examples work through explain
        layer = "layer4" if xw.get_method(name).needs_layer else None
        model = __import__("torchvision").models.resnet18(num_classes=4).eval()
        e = xw.explain(model, torch.randn(1, 3, 32, 32), 1, name, layer=layer)
        assert e.attribution.shape == (1, 32, 32) and torch.isfinite(e.attribution).all()


def _submodules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(xw.__path__, prefix="xai_widgets.")]


def test_every_public_name_is_stable_after_importing_every_submodule():
    names = _submodules()
    for name in names:
        importlib.import_module(name)
    tops = {name.split(".")[1] for name in names}
    # two deliberate overlaps, ``xw.explain``/``xw.methods`` with the modules ``explain``/``methods``: stable
    # because ``__init__`` imports those modules before binding the functions (a package attribute is set only
    # when its submodule first loads; checked below). A lazily exported name must never equal a submodule.
    assert set(xw.__all__) & tops == {"explain", "methods"}
    assert set(xw._LAZY) & tops == set()
    for _ in range(2):
        for name in xw.__all__:
            value = getattr(xw, name)
            assert not isinstance(value, types.ModuleType), f"xw.{name} is a module"
    from xai_widgets.all_layers import camanim
    from xai_widgets.explain import explain
    from xai_widgets.registry import methods

    assert xw.camanim is camanim and xw.methods is methods and xw.explain is explain
    assert isinstance(xw.methods(), list)
