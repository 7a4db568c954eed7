"""`metarl eval --video DIR`: GIFs when an OpenGL backend works, else one clear line and a complete evaluation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


def _can_render() -> bool:
    """Whether MuJoCo renders here with the backend the recorder picks (decided before the run, so the
    test knows which outcome to demand)."""
    from metarl.evaluation.video import _default_gl

    code = "import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco/>'); mujoco.Renderer(m, 8, 8).render()"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", _default_gl())}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120, check=False)
    return proc.returncode == 0


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
    if _can_render():
        import imageio.v2 as imageio

        assert len(gifs) == 1, proc.stderr
        frames = imageio.mimread(gifs[0], memtest=False)
        # the reset frame and one per step of a 500-step episode, every other one kept above 250 frames
        assert len(frames) == 251 and frames[0].ndim == 3 and frames[0].shape[2] in (3, 4)
        assert "no video" not in proc.stderr
    else:
        assert gifs == []
        line = (
            r"metarl: no video: rendering failed with MUJOCO_GL=\w+ \(.+\); install an OpenGL backend "
            r"\(EGL on GPU machines, OSMesa on CPUs\) or set MUJOCO_GL; the evaluation itself is complete\n"
        )
        assert re.fullmatch(line, proc.stderr), proc.stderr
