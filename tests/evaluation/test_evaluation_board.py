"""EvaluationBoard: table with intervals, charts, a cell click opening the worst images, cancel, errors."""

from __future__ import annotations

import ipywidgets as w
import numpy as np
import torch
from modelguard import SmallCNN

import xai_widgets as xw
from xai_widgets.widgets.evaluation_board import EvaluationBoard


def setup():
    torch.manual_seed(0)
    adapter = xw.ModelAdapter(SmallCNN().eval(), labels=list("abcde"), name="small")
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(8, 3, 16, 16, generator=generator)
    labels = torch.arange(8) % 5
    masks = torch.zeros(8, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    return adapter, images, labels, masks


def test_table_charts_and_a_click_on_a_cell_opens_the_worst_images():
    adapter, images, labels, masks = setup()
    metrics = {"road": {"percentiles": (30, 60)}, "pointing_game": {}, "sanity": {"similarity": ("ssim",)}}
    board = EvaluationBoard(
        adapter,
        images,
        ["saliency", "gradcam"],
        metrics,
        labels=labels,
        masks=masks,
        batch_size=4,
        background=False,
    )
    assert board.result is not None and board.progress.value == 1.0
    cells = [c for c in board.table.children if isinstance(c, w.Button)]
    assert len(cells) == 2 * 2  # methods × headline metrics (road, pointing_game; sanity has only curves)
    summary = board.result.summary.set_index(["method", "metric"])
    mean, low, high = summary.loc[("gradcam", "road"), ["mean", "ci_low", "ci_high"]]
    assert f"{mean:.3f} [{low:.3f}, {high:.3f}]" in [c.description for c in cells]
    assert np.asarray(board.road_lines.y).shape == (2, 2) and list(board.road_lines.x) == [30.0, 60.0]
    assert list(board.pointing_bars.x) == list("abcde")
    assert np.asarray(board.sanity_lines.y).shape[0] == 2
    cell = next(c for c in cells if c.tooltip.startswith("saliency · pointing_game"))
    cell.click()
    board.wait()
    explorer = board.detail.children[0]
    assert isinstance(explorer, xw.AttributionExplorer) and board.selected == ("saliency", "pointing_game")
    assert len(explorer.image_select.options) == 6
    assert explorer.explanation("saliency") is not None


def test_cancel_and_errors_show_in_the_widget():
    adapter, images, labels, _ = setup()
    board = EvaluationBoard(adapter, images, ["saliency"], ["pointing_game"], labels=labels, background=False)
    assert board.result is None and "masks" in board.message.value
    running = EvaluationBoard(adapter, images, ["saliency"], {"road": {"percentiles": (50,)}}, shard_size=1)
    running.cancel()  # eight one-image shards: it stops at the next shard boundary at the latest
    assert running.wait(120)
    assert running.result is None and "cancelled" in running.status.value
