"""Stream a video or camera through a causal TSM frame by frame: ``python src/stream.py ckpt_path=... source=...``.

``ckpt_path`` is a checkpoint of this project (or a released TSM ``.pth``), or a stream-mode export: an ONNX
file (run in onnxruntime), a LiteRT ``.tflite`` file (run in LiteRT) or a TVM library ``.so`` (native code, which
loading runs: only libraries you built or trust); class names, input size and normalisation come from the file
itself.
"""

from pathlib import Path

import hydra
import rich
from omegaconf import DictConfig

from tsm.streaming.app import PredictionSmoother, check_out_video, open_frames, run_stream, stop_on_sigterm


def load_stream(path: str, num_segments: int):
    """``(step, info)``: a numpy ``step`` function over frames and the model's info, from a checkpoint or an
    exported stream file."""
    from tsm.streaming.sessions import RUNTIMES, open_stream

    if Path(path).suffix in RUNTIMES:
        session = open_stream(path)
        return session.step, session.info
    from tsm.models.checkpoints import load_recognizer
    from tsm.models.factory import for_deployment
    from tsm.streaming.model import StreamingTSM, numpy_step

    model = load_recognizer(path, num_segments=num_segments)
    return numpy_step(StreamingTSM.from_model(for_deployment(model))), model.info


@hydra.main(version_base="1.3", config_path="../conf", config_name="stream")
def main(cfg: DictConfig) -> None:
    check_out_video(cfg.out_video, str(cfg.source))
    step, info = load_stream(str(cfg.ckpt_path), cfg.num_segments)
    smoother = PredictionSmoother(cfg.smoothing.window, cfg.smoothing.agree)
    stop_on_sigterm()
    frames = open_frames(str(cfg.source))
    result = run_stream(step, frames, info, smoother, cfg.top_k, cfg.out_video, cfg.out_fps)
    rich.print({"per-frame latency": result.latency_summary()})


if __name__ == "__main__":
    main()
