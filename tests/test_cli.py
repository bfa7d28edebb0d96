"""The ``xai-widgets camanim`` command: a zoo model, a torchvision model from the local hub cache, errors."""

from __future__ import annotations

import imageio.v3 as iio
import pytest
import torch
import torchvision
from PIL import Image

from xai_widgets import zoo
from xai_widgets.cli import main, torchvision_weights_path
from xai_widgets.data import make_shapes
from xai_widgets.errors import XAIError
from xai_widgets.model import ModelAdapter
from xai_widgets.zoo.models import ARCHITECTURES


@pytest.fixture
def picture(tmp_path):
    image = make_shapes(1, size=64, seed=3).images[0]
    path = tmp_path / "shape.png"
    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
    return path


@pytest.fixture
def shapes_resnet(monkeypatch):
    """The shipped shapes-resnet; while its weights are not built yet, the same architecture at random."""
    try:
        zoo.load("shapes-resnet", device="cpu")
    except XAIError:
        torch.manual_seed(0)
        random = ModelAdapter(
            ARCHITECTURES["shapes-resnet"]().eval(), input_size=(3, 64, 64), name="shapes-resnet"
        )
        monkeypatch.setattr(zoo, "load", lambda name, device=None: random)


def test_camanim_of_a_zoo_model_writes_one_frame_per_layer_and_scores_them(
    shapes_resnet, picture, tmp_path, capsys
):
    out = tmp_path / "film.gif"
    assert (
        main(["camanim", "--model", "shapes-resnet", "--image", str(picture), "--out", str(out), "--road"])
        == 0
    )
    printed = capsys.readouterr().out.splitlines()
    rows = [line for line in printed if "ybROAD" in line]
    assert "shapes-resnet: gradcam for class" in printed[0] and len(rows) > 5
    assert sum("<- best" in row for row in rows) == 1
    assert iio.imread(out, index=None).shape[0] == len(rows)


def test_camanim_of_a_torchvision_model_from_the_local_hub_cache(picture, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = torchvision_weights_path("resnet18")
    assert str(path).startswith(str(tmp_path))
    out = tmp_path / "sheet.png"
    args = [
        "camanim",
        "--model",
        "resnet18",
        "--image",
        str(picture),
        "--out",
        str(out),
        "--input-size",
        "32",
    ]
    assert main(args) == 2
    assert "not in the local torch hub cache" in capsys.readouterr().err
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    assert main([*args, "--method", "eigencam", "--kinds", "block"]) == 0
    assert "resnet18: eigencam" in capsys.readouterr().out
    assert out.is_file()


def test_bad_input_gives_a_message_and_status_2(picture, tmp_path, capsys):
    assert (
        main(["camanim", "--model", "no-such-net", "--image", str(picture), "--out", str(tmp_path / "a.mp4")])
        == 2
    )
    assert "unknown model 'no-such-net'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["camanim", "--model", "shapes-resnet"])


def test_app_refuses_bad_arguments_before_starting_voila(tmp_path, capsys):
    """(``xai-widgets app`` itself is tested in the browser: tests/browser/test_app.py.)"""
    assert main(["app", "--model", "no-such-net"]) == 2
    assert "unknown zoo model 'no-such-net'" in capsys.readouterr().err
    assert main(["app", "--images", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["app", "--images", str(tmp_path)]) == 2
    assert "no picture files" in capsys.readouterr().err
    assert main(["app", "--port", "0"]) == 2
    assert "--port must be between" in capsys.readouterr().err


def test_the_console_script_starts_the_app_without_importing_torch():
    """``xai-widgets app`` checks its arguments from the file system, so Voila starts at once."""
    import subprocess
    import sys

    import xai_widgets_launch
    from xai_widgets import zoo

    assert xai_widgets_launch.zoo_names() == sorted(zoo.names())
    code = (
        "import sys, xai_widgets_launch\n"
        "status = xai_widgets_launch.main(['app', '--model', 'no-such-net'])\n"
        "assert status == 2 and 'torch' not in sys.modules and 'xai_widgets' not in sys.modules, status"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "unknown zoo model 'no-such-net'" in done.stderr
