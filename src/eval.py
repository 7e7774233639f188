"""Test a checkpoint with the multi-view protocol: ``python src/eval.py ckpt_path=... [test.num_clips=...]``."""

import hydra
import rich
from omegaconf import DictConfig

from tsm.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    metrics = evaluate(cfg)
    rich.print(metrics)
    return metrics.get("test/acc")


if __name__ == "__main__":
    main()
