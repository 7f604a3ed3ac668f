"""The zoo's trained scene models as SNNs: at large T their metric approaches the ANN's.

A small split (the first test scenes) keeps this in CI time; the full curves over the first
100 test scenes are stored with each entry (``snnlite/zoo/results/<name>.json``, made by
``python -m snnlite.zoo.dense_curves``) and checked here against the targets of the issue
that asked for them, and for consistency (SOPs, MACs recomputed). Tolerances are stated per
test, against the calibrated clipped ANN (``relux``) that the SNN converges to, and against
the original ANN.
"""

from __future__ import annotations

import pytest
import torch

import snnlite
from snnlite import energy, metrics, zoo
from snnlite.detection import DetectorNetwork, convert_detector, transformed_batch
from snnlite.zoo.scene_eval import NUM_CLASSES, TEST_SCENES, TRAIN_SCENES, load_scenes

TEST_IMAGES = 24
CALIBRATION = {"scenes": 64, "batch": 8, "iterations": 200}  # P(z > theta) ~ 1/400


@pytest.fixture(scope="module")
def scenes() -> dict:
    test = load_scenes(progress=False, **{**TEST_SCENES, "num_scenes": TEST_IMAGES})
    train = load_scenes(progress=False, **{**TRAIN_SCENES, "num_scenes": CALIBRATION["scenes"]})
    test["calibration"] = list(train["images"].split(CALIBRATION["batch"]))
    return test


@pytest.mark.parametrize("name", ["scenes_fcn", "scenes_deeplabv3"])
def test_segmentation_snn_reaches_its_ann(name, scenes):
    model = zoo.load(name)
    snn = snnlite.convert(model, scenes["calibration"], iterations=CALIBRATION["iterations"],
                          progress=False)  # fmt: skip
    x, masks = scenes["images"], scenes["semantic"].long()
    ann = metrics.ann_miou(model, x, masks, NUM_CLASSES)
    relux = metrics.ann_miou(snn.relux(), x, masks, NUM_CLASSES)
    kept: dict = {}  # what chapter 7's widget shows: the scored label maps
    curve = metrics.miou_curve(snn, x, masks, NUM_CLASSES, [32, 256], progress=False,
                               predictions=kept)  # fmt: skip
    assert metrics.mean_iou(kept[(256, "auto")], masks, NUM_CLASSES) == curve[256]
    # Clipping costs a little; more with this test's short calibration (200 updates clip
    # ~1/400 of activations: DeepLabV3 -3.8 points here, -0.4 with 600 in results/).
    assert abs(relux - ann) < 0.05, (ann, relux)
    assert abs(curve[256] - relux) < 0.03, (relux, curve)  # the SNN reaches its ANN
    assert curve[256] > curve[32] - 0.005, curve  # and gets there over time


@pytest.mark.parametrize("name", ["scenes_retinanet", "scenes_fcos"])
def test_detection_snn_reaches_its_ann(name, scenes):
    model = zoo.load(name)
    options = {"group_norm": "freeze"} if name == "scenes_fcos" else {}
    detector = convert_detector(model, scenes["calibration"],
                                iterations=CALIBRATION["iterations"], progress=False,
                                **options)  # fmt: skip
    images, targets = list(scenes["images"]), scenes["targets"]
    ann = metrics.ann_map(model, images, targets)["map"]
    relux = metrics.detection_map(detector.ann(images), targets)["map"]
    kept: dict = {}  # what chapter 8's widget shows: the scored detections
    curve = metrics.map_curve(detector, images, targets, [32, 256], progress=False,
                              predictions=kept)  # fmt: skip
    assert len(kept[(256, "auto")]) == len(images)
    assert metrics.detection_map(kept[(256, "auto")], targets) == curve[256]
    snn = {T: m["map"] for T, m in curve.items()}
    assert relux > 0.8 * ann, (ann, relux)
    assert snn[256] > 0.85 * relux, (relux, snn)  # 24 scenes: a loose bound; see results/
    assert snn[256] > snn[32], snn


SCENE_MODELS = ["scenes_fcn", "scenes_deeplabv3", "scenes_retinanet", "scenes_fcos"]


@pytest.mark.parametrize("name", SCENE_MODELS)
def test_stored_curves_meet_the_targets_and_their_energy_is_consistent(name):
    """The stored measurement (100 test scenes, T = 16 ... 512, LTB channel, 600 updates):
    segmentation within 1 mIoU point of the ANN at T = 128, detection at least 94% of the
    ANN's mAP at T = 256 (delay "auto"); SOPs grow with T; the stored MACs are the model's."""
    stored = zoo.info(name)["snn_accuracy"]
    assert stored is not None and stored["test_scenes"]["num_scenes"] >= 100
    assert stored["timesteps"] == [16, 32, 64, 128, 256, 512]
    if stored["task"] == "segmentation":
        curve = stored["snn_miou_auto"]
        assert stored["ann_miou"] - curve["128"] <= 0.01, (stored["ann_miou"], curve)
    else:
        curve = {T: m["map"] for T, m in stored["snn_map_auto"].items()}
        assert curve["256"] >= 0.94 * stored["ann_map"]["map"], (stored["ann_map"], curve)
    sops = [stored["snn_sops"][str(T)] for T in stored["timesteps"]]
    assert all(b > a > 0 for a, b in zip(sops, sops[1:])), sops
    model = zoo.load(name)
    example = torch.zeros(1, 3, 96, 96)  # a scene: 96 x 96 RGB
    if stored["task"] == "detection":
        model, example = DetectorNetwork(model), transformed_batch(model, list(example))
    assert energy.ann_macs(model, example).total == stored["ann_macs"]
    assert 0 < stored["analog_macs"] < stored["ann_macs"]
