"""`metarl eval --video DIR`: GIFs when an OpenGL backend works, else one clear line and a complete evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _helpers import metarl_cli, tiny_rl2_config

import metarl
from metarl.config import TrainConfig
from metarl.evaluation.video import write_gif


def test_write_gif_keeps_every_frame_of_a_short_episode(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    frames = [np.full((8, 10, 3), 20 * i, dtype=np.uint8) for i in range(5)]
    path = write_gif(frames, tmp_path / "a/ep.gif")
    assert path.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    back = imageio.mimread(path)
    assert len(back) == 5 and back[0].shape[:2] == (8, 10)
    assert int(back[3][0, 0, 0]) == 60


def test_eval_with_video_records_or_says_why_not(tmp_path: Path) -> None:
    cfg = TrainConfig(
        agent="rl2", benchmark="ML1-reach-v3", iterations=1, meta_batch=1, episodes_per_task=2, workers=1,
        backend="inline", eval_every=0,
    )  # fmt: skip
    agent = tiny_rl2_config(bptt_chunk=100)
    run = metarl.train(cfg, agent, out=tmp_path / "run", progress=False)
    videos = tmp_path / "videos"
    proc = metarl_cli("eval", str(run), "--tasks-per-family", "1", "--adaptation-episodes", "1",
                      "--eval-episodes", "1", "--video", str(videos))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "eval/final.json").read_text())["eval_episodes_per_task"] == 1
    gifs = sorted(videos.glob("*.gif")) if videos.exists() else []
    if gifs:  # a machine with a working OpenGL backend
        assert len(gifs) == 1 and gifs[0].read_bytes()[:3] == b"GIF"
    else:
        assert "no video: rendering failed with MUJOCO_GL=" in proc.stderr
        assert "the evaluation itself is complete" in proc.stderr
        assert proc.stderr.count("\n") == 1
