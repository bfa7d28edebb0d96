"""``xai-widgets evaluate``: a tiny in-process run with a progress bar, Parquet shards, the summary, resume."""

from __future__ import annotations

from xai_widgets.cli import main


def test_evaluate_command_writes_shards_prints_the_summary_and_resumes(tmp_path, capsys):
    args = [
        "evaluate",
        "--model",
        "shapes-resnet",
        "--data",
        "shapes:8",
        "--methods",
        "gradcam,saliency",
        "--metrics",
        "road,pointing_game",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "2/2 shards" in captured.err and "#" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["method", "metric", "mean"]
    assert any(line.split()[:2] == ["gradcam", "pointing_game"] for line in lines)
    assert len(list(tmp_path.glob("*.parquet"))) == 4
    assert main(args) == 0
    assert "2/2 shards" in capsys.readouterr().err  # every shard read back
    assert main([*args[:-2], "--data", "pictures.npy"]) == 2
    assert "shapes:N" in capsys.readouterr().err
