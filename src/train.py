"""Train a recognizer: ``python src/train.py [+experiment=NAME] [key=value ...]``."""

import hydra
from omegaconf import DictConfig

from tsm.training.task import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
