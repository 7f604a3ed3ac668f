"""The command line's dense tasks: a segmenter's mIoU or a detector's mAP on fashion scenes.

``snnlite convert --model zoo:scenes_fcn --data fashion-scenes`` converts and scores a scene
model exactly as ``python -m snnlite.zoo.dense_curves`` measures the zoo's curves: both call
:func:`snnlite.zoo.scene_eval.convert_scene_model` and
:func:`~snnlite.zoo.scene_eval.score_scene_model` (a detector's network part alone spikes,
its GroupNorms frozen; every T and delay from one simulation per batch). This module only
feeds them the command line's choices (calibration scenes and batches, the recipe, the test
scenes) and turns what they measured into the report's :class:`~snnlite.cli.report.Scores`.

Under ``torchrun`` every calibration batch is split over the processes (the thresholds
equal one process's, :class:`snnlite.distributed.BatchShardSampler`), the SNN curves
simulate each process's share of the test scenes and reduce their metrics over the group,
and the ANN evaluators, which are local, score every scene on every process.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch.utils.data import DataLoader

from snnlite import distributed
from snnlite.cli.report import Run, Scores
from snnlite.cli.sources import LoadedModel, scene_split
from snnlite.zoo.scene_eval import SceneScores, convert_scene_model, score_scene_model

__all__ = ["calibration_loader", "run", "scores"]


def calibration_loader(images: torch.Tensor, batch_size: int) -> DataLoader:
    """Batches of calibration images (4-D tensors, as segmenters and detectors both take
    them), each split over the processes under ``torchrun``."""
    return DataLoader(images, batch_sampler=distributed.BatchShardSampler(images, batch_size))  # type: ignore[arg-type]


def run(args: argparse.Namespace, loaded: LoadedModel, delays: list[Any]) -> Run:
    """Calibrate on the first ``--calibration-images`` training scenes, convert, and score the
    ANN, the clipped ANN and the SNN on the first ``--images`` test scenes."""
    progress = not args.no_progress
    calibration = scene_split("train", args.calibration_images, progress)["images"]
    converted = convert_scene_model(
        loaded.model, loaded.task, calibration_loader(calibration, args.calibration_batch_size),
        method=args.method, granularity=args.granularity, iterations=args.calibration_batches,
        max_pool=args.max_pool, target_timesteps=args.target_timesteps,
        spikes_per_step=args.spikes_per_step, signed_spikes=args.signed_spikes,
        catch_up=args.catch_up, progress=progress,
    )  # fmt: skip
    test = scene_split("test", args.images, progress)
    test["images"] = test["images"].to(args.device)
    measured = score_scene_model(loaded.model, converted, loaded.task, test, args.timesteps,
                                 delays, args.batch_size, progress)  # fmt: skip
    activity = measured.network.last_activity
    assert activity is not None, "score_scene_model records the spikes"
    return Run(scores(measured, len(test["images"])), activity, measured.network,
               measured.ann_network, measured.example, len(calibration))  # fmt: skip


def _by_key(curves: dict[Any, dict[int, Any]], key: str | None = None) -> dict[tuple, float]:
    """{delay: {T: metric}} -> {(T, delay): value}; ``key`` picks one number of an mAP dict."""
    return {(T, delay): value if key is None else value[key]
            for delay, curve in curves.items() for T, value in curve.items()}  # fmt: skip


def scores(measured: SceneScores, images: int) -> Scores:
    """mIoU, or mAP@[.5:.95] with mAP@.5 beside it (keys ``iou50_...``, as chapter 8 names
    them), in the report's form; a detector with frozen GroupNorms also reports the ANN's
    mAP with them frozen (``frozen_group_norm_ann_map``), what freezing alone costs."""
    if measured.task == "segmentation":
        return Scores("miou", "mIoU", images, measured.ann, measured.clipped,
                      _by_key(measured.curves))  # fmt: skip
    ann, clipped, curves = measured.ann, measured.clipped, measured.curves
    iou50 = Scores("map", "mAP@.5", images, ann["map_50"], clipped["map_50"],
                   _by_key(curves, "map_50"), prefix="iou50_")  # fmt: skip
    extra = {}
    if measured.frozen_group_norm is not None:
        extra["frozen_group_norm_ann_map"] = measured.frozen_group_norm["map"]
    return Scores("map", "mAP@[.5:.95]", images, ann["map"], clipped["map"],
                  _by_key(curves, "map"), also=(iou50,), extra=extra)  # fmt: skip
