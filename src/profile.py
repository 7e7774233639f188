"""Parameters, MACs and latency of the configured model: ``python src/profile.py [model.backbone=...]``.

This file shares its name with the standard library's ``profile``, which ``cProfile`` imports (torch
does, on import). For any script run from src/, that import finds this file first; imported under
that name, the file loads the library module and hands its place over to it.
"""

import importlib.util
import sys
import sysconfig
from pathlib import Path

if __name__ != "__main__":
    _spec = importlib.util.spec_from_file_location("profile", Path(sysconfig.get_paths()["stdlib"]) / "profile.py")
    _library = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_library)
    sys.modules["profile"] = _library
else:
    import hydra
    import rich
    from omegaconf import DictConfig

    from tsm.export import to_onnx, verify_onnx
    from tsm.profile import count, eager_latency_ms

    @hydra.main(version_base="1.3", config_path="../conf", config_name="profile")
    def main(cfg: DictConfig) -> dict:
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

    main()
