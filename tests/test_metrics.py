"""Tests of the task metrics in snnlite.metrics against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from snnlite.metrics import DetectionMAP, detection_map, mean_iou

# ---------------------------------------------------------------- mean IoU

TARGET = torch.tensor(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 2, 2],
        [2, 2, 2, 2],
    ]
)
PRED = torch.tensor(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 0, 2],
        [2, 2, 2, 2],
    ]
)


def test_mean_iou_by_hand() -> None:
    # class 0: pred {00,10,11,22}, true {00,01,10,11}: inter 3, union 5 -> 3/5
    # class 1: pred {01,02,03,12,13}, true {02,03,12,13}: inter 4, union 5 -> 4/5
    # class 2: pred 7 pixels, true 8 pixels, all 7 inside: inter 7, union 8 -> 7/8
    expected = (3 / 5 + 4 / 5 + 7 / 8) / 3
    assert mean_iou(PRED, TARGET, num_classes=3) == pytest.approx(expected, abs=1e-12)
    # batched (N, H, W) input pools pixels over images (dataset-level, as VOC)
    both = mean_iou(torch.stack([PRED, TARGET]), torch.stack([TARGET, TARGET]), 3)
    # class 0: inter 3 + 4, union 5 + 4 ...
    expected2 = (7 / 9 + 8 / 9 + 15 / 16) / 3
    assert both == pytest.approx(expected2, abs=1e-12)
    assert mean_iou(TARGET, TARGET, 3) == 1.0


def test_mean_iou_ignore_index_and_absent_classes() -> None:
    target = TARGET.clone()
    target[0, 1] = 255  # the pixel where class 0 was predicted as 1 no longer counts
    # class 0: pred {00,10,11,22}, true {00,10,11}: 3/4; class 1: 4/4; class 2: 7/8
    expected = (3 / 4 + 1 + 7 / 8) / 3
    assert mean_iou(PRED, target, 3, ignore_index=255) == pytest.approx(expected, abs=1e-12)
    # a class that occurs nowhere (3 of num_classes=5 ... 4) is left out, not scored 0 or 1
    assert mean_iou(PRED, TARGET, 5) == pytest.approx((3 / 5 + 4 / 5 + 7 / 8) / 3)
    # ignoring a real class drops its pixels and its IoU: class 2 out, (2,2) pred 0 ignored
    # class 0: pred {00,10,11}, true {00,01,10,11}: 3/4; class 1: 4/5
    assert mean_iou(PRED, TARGET, 3, ignore_index=2) == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_mean_iou_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ"):
        mean_iou(PRED, TARGET[:2], 3)
    with pytest.raises(ValueError, match="argmax"):
        mean_iou(PRED.float(), TARGET, 3)


# ---------------------------------------------------------------- detection mAP


def _box(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1, y1, x2, y2]


def test_detection_map_by_hand() -> None:
    """Two ground-truth boxes of one class; detections in score order:

    1. score 0.9, exactly box A                  -> TP at every IoU threshold
    2. score 0.8, nowhere near any box           -> FP
    3. score 0.7, IoU 100/160 = 0.625 with box B -> TP for t in {.50, .55, .60}, FP above

    At t <= 0.60: precision/recall after each detection 1/.5, .5/.5, .667/1; COCO makes
    precision monotone (1, .667, .667) and samples it at 101 recall points: 51 points
    (r <= .5) read 1, 50 points read 2/3 -> AP = (51 + 100/3) / 101.
    At t >= 0.65: recall stops at .5 -> AP = 51/101.
    mAP = (3 * AP_low + 7 * AP_high) / 10 over the 10 thresholds .50:.05:.95.
    """
    targets = [
        {
            "boxes": torch.tensor([_box(0, 0, 10, 10), _box(20, 20, 36, 30)]),
            "labels": torch.tensor([1, 1]),
        }
    ]
    preds = [
        {
            "boxes": torch.tensor([_box(0, 0, 10, 10), _box(60, 60, 70, 70), _box(20, 20, 30, 30)]),
            "scores": torch.tensor([0.9, 0.8, 0.7]),
            "labels": torch.tensor([1, 1, 1]),
        }
    ]
    ap_low, ap_high = (51 + 100 / 3) / 101, 51 / 101
    result = detection_map(preds, targets)
    assert result["map_50"] == pytest.approx(ap_low, abs=1e-6)
    assert result["map_75"] == pytest.approx(ap_high, abs=1e-6)
    assert result["map"] == pytest.approx((3 * ap_low + 7 * ap_high) / 10, abs=1e-6)
    assert result["mar_100"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10, abs=1e-6)

    # the false positive ranked last costs nothing: AP@.5 = 1
    preds[0]["scores"] = torch.tensor([0.9, 0.1, 0.7])
    assert detection_map(preds, targets)["map_50"] == pytest.approx(1.0, abs=1e-6)
    # a wrong label misses box A of class 1 (recall stops at .5 -> 51/101); the detection
    # becomes an FP of class 2, which has no ground truth and so no AP (left out of the mean)
    preds[0]["labels"] = torch.tensor([2, 1, 1])
    assert detection_map(preds, targets)["map_50"] == pytest.approx(51 / 101, abs=1e-6)


def test_detection_map_rejects_mismatched_lists() -> None:
    with pytest.raises(ValueError, match="predictions but"):
        detection_map([], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])


# ---------------------------------------------------------------- curves keep what they scored


def test_miou_curve_hands_over_the_label_maps_it_scored(photo_crops) -> None:
    """``predictions=`` receives {(T, delay): labels}: what chapter 7's widget shows, no rerun."""
    import snnlite
    from snnlite import metrics

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(6, 4, 1)).eval()  # fmt: skip
    x = photo_crops[:6]
    masks = model(x).argmax(1).detach()
    snn = snnlite.convert(model, [x[:3], x[3:]], progress=False)
    kept: dict = {}
    curve = metrics.miou_curve(snn, x, masks, 4, [4, 16], ["auto", 0], batch_size=4,
                               progress=False, predictions=kept)  # fmt: skip
    assert set(kept) == {(4, "auto"), (16, "auto"), (4, 0), (16, 0)}
    direct = snn.simulate(x[:4], [16], delay=0, progress=False)[16].argmax(1)
    assert torch.equal(kept[(16, 0)][:4], direct)
    for (T, delay), labels in kept.items():
        assert labels.shape == masks.shape
        assert curve[delay][T] == metrics.mean_iou(labels, masks, 4)


# ---------------------------------------------------------------- stateful metrics, old formulas


def _old_mean_iou(preds: torch.Tensor, targets: torch.Tensor, classes: int, ignore: int) -> float:
    """``mean_iou`` as it was before the stateful metrics: one confusion matrix at once."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    confmat = MulticlassConfusionMatrix(classes, ignore_index=ignore, validate_args=True)
    matrix = confmat(preds.flatten().long(), targets.flatten().long()).double()
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp
    valid = union > 0
    if 0 <= ignore < classes:
        valid[ignore] = False
    return float((tp[valid] / union[valid]).mean())


def test_the_curves_equal_the_formulas_they_replaced(photo_crops) -> None:
    """accuracy_curve and miou_curve feed TopOneAccuracy / MeanIoU batch by batch; their
    numbers equal, bit for bit, the old sums of hits and the one confusion matrix."""
    import snnlite
    from snnlite import metrics

    torch.manual_seed(0)
    x = photo_crops[:20]
    classifier = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 15 * 15, 10),
    ).eval()  # fmt: skip
    labels = classifier(x).argmax(1).detach()
    labels[::3] = torch.randint(0, 10, labels[::3].shape)  # the SNN is not always right
    snn = snnlite.convert(classifier, [x[:10], x[10:]], progress=False)
    keys = [(T, d) for T in (4, 16) for d in ("auto", 0)]
    hits = dict.fromkeys(keys, 0)

    def count(outputs: dict, y: torch.Tensor) -> None:
        for key, logits in outputs.items():
            hits[key] += int((logits.argmax(dim=1) == y).sum())

    batches = [(x[s : s + 7], labels[s : s + 7]) for s in range(0, 20, 7)]
    metrics.simulate_batches(snn, batches, [4, 16], count, delay=["auto", 0])
    curve = metrics.accuracy_curve(snn, x, labels, [4, 16], ["auto", 0], batch_size=7,
                                   progress=False)  # fmt: skip
    assert {(T, d): curve[d][T] for T, d in keys} == {k: n / 20 for k, n in hits.items()}
    assert metrics.ann_accuracy(classifier, x, labels, batch_size=7) == float(
        (classifier(x).argmax(1) == labels).sum()) / 20  # fmt: skip

    segmenter = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(6, 5, 1)).eval()  # fmt: skip
    masks = segmenter(x).argmax(1).detach()
    masks[:, :4] = 255  # ignored
    masks[:, -4:] = torch.randint(0, 5, masks[:, -4:].shape)
    snn = snnlite.convert(segmenter, [x[:10], x[10:]], progress=False)
    kept: dict = {}
    curve = metrics.miou_curve(snn, x, masks, 5, [4, 16], ["auto", 0], batch_size=7,
                               ignore_index=255, progress=False, predictions=kept)  # fmt: skip
    for (T, d), preds in kept.items():
        assert curve[d][T] == _old_mean_iou(preds, masks, 5, 255)
        assert metrics.mean_iou(preds, masks, 5, 255) == _old_mean_iou(preds, masks, 5, 255)


def test_detection_map_metric_equals_one_call_on_every_image() -> None:
    torch.manual_seed(0)
    preds, truth = [], []
    for _ in range(9):
        boxes = torch.rand(int(torch.randint(0, 5, ())), 2).repeat(1, 2) * 50
        boxes[:, 2:] += 20
        labels = torch.randint(0, 3, (len(boxes),))
        preds.append({"boxes": boxes, "scores": torch.rand(len(boxes)), "labels": labels})
        truth.append({"boxes": boxes + torch.rand(len(boxes), 4) * 8, "labels": labels})
    metric = DetectionMAP()
    for start in range(0, 9, 4):
        metric.update(preds[start : start + 4], truth[start : start + 4])
    assert metric.compute() == detection_map(preds, truth)


class _ScriptedDetector:
    """Stands for a SpikingDetector in map_curve: detections made up from each image."""

    snn = None

    def simulate(self, images: list, timesteps: list, delay: list, **_options) -> dict:
        out = {}
        for T in timesteps:
            for d in delay:
                out[(T, d)] = [
                    {"boxes": image[:4].reshape(-1, 4).abs().cumsum(1) * 10,
                     "scores": (image[4:5] + T / 100).abs(), "labels": torch.zeros(1).long()}
                    for image in images
                ]  # fmt: skip
        return out


def test_map_curve_equals_one_call_on_every_detection() -> None:
    from snnlite import metrics

    torch.manual_seed(0)
    images = [torch.rand(5) for _ in range(9)]
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 8.0, 9.0]]), "labels": torch.zeros(1).long()}
               for _ in images]  # fmt: skip
    kept: dict = {}
    curve = metrics.map_curve(_ScriptedDetector(), images, targets, [4, 8], [0, "auto"],
                              batch_size=4, progress=False, predictions=kept)  # fmt: skip
    for (T, d), found in kept.items():
        assert len(found) == 9
        assert curve[d][T] == detection_map(found, targets)
