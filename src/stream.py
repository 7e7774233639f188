"""Stream a video or camera through a causal TSM frame by frame: ``python src/stream.py ckpt_path=... source=...``."""

import hydra
import rich
from omegaconf import DictConfig

from tsm.live import PredictionSmoother, open_frames, run_stream
from tsm.online import StreamingTSM
from tsm.weights import load_recognizer


@hydra.main(version_base="1.3", config_path="../conf", config_name="stream")
def main(cfg: DictConfig) -> None:
    model = StreamingTSM.from_model(load_recognizer(cfg.ckpt_path, num_segments=cfg.data.num_segments))
    classes = hydra.utils.instantiate(cfg.data).source(split="val").classes
    result = run_stream(
        model,
        open_frames(str(cfg.source)),
        classes,
        PredictionSmoother(cfg.smoothing.window, cfg.smoothing.agree),
        cfg.data.scale_size,
        cfg.data.crop_size,
        cfg.data.mean,
        cfg.data.std,
        top_k=cfg.top_k,
        out_video=cfg.out_video,
        fps=cfg.out_fps,
    )
    rich.print({"per-frame latency": result.latency_summary()})


if __name__ == "__main__":
    main()
