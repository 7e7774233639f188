"""Parameters, MACs and latency of the configured model: ``python src/benchmark.py [model.backbone=...]``."""

from pathlib import Path

import hydra
import rich
from omegaconf import DictConfig

from tsm.benchmark import count, eager_latency_ms
from tsm.checks import check_counts
from tsm.export import to_onnx, verify_onnx
from tsm.training.task import instantiate_data


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> dict:
    check_counts({"batch_size": cfg.batch_size, "repeats": cfg.repeats}, group="")
    if cfg.data.num_classes is None:  # the class count of data.root's labels
        instantiate_data(cfg)
    model = hydra.utils.instantiate(cfg.model).net.eval()
    shape = (cfg.batch_size, cfg.data.num_segments, 3, cfg.data.crop_size, cfg.data.crop_size)
    report = {**count(model, shape), "input": list(shape), "eager_ms": eager_latency_ms(model, shape, cfg.repeats)}
    if cfg.onnx:
        path = to_onnx(model, Path(cfg.paths.output_dir) / "model.onnx", mode="clip", input_size=cfg.data.crop_size)
        report["onnxruntime_ms"] = verify_onnx(model, path, runs=cfg.repeats)["ort_ms"]
    report["gmacs"] = report["macs"] / 1e9
    report["mparams"] = report["params"] / 1e6
    rich.print(report)
    return report


if __name__ == "__main__":
    main()
