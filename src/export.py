"""Export a checkpoint to ONNX and verify it in onnxruntime: ``python src/export.py ckpt_path=... mode=clip|stream``."""

import hydra
from omegaconf import DictConfig

from tsm.export import to_onnx
from tsm.models.checkpoints import load_recognizer


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    if cfg.format != "onnx":
        raise ValueError(f"format={cfg.format!r} is not supported; the exporter writes format=onnx")
    model = load_recognizer(cfg.ckpt_path, num_segments=cfg.num_segments)
    to_onnx(model, cfg.out, mode=cfg.mode, input_size=cfg.input_size, opset=cfg.opset)


if __name__ == "__main__":
    main()
