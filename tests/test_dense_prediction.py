"""Segmentation and detection structures: conversion, simulation, torchvision's own pipeline.

torchvision's ``fcn_resnet50``, ``deeplabv3_resnet50``, ``retinanet_resnet50_fpn`` and
``fcos_resnet50_fpn`` are built with ``weights=None, weights_backbone=None`` (no download) and
small inputs, so the structures (dilated ResNet-50s, ASPP with its pooling branch, bilinear
upsampling, FrozenBatchNorm2d backbones, FPN with LastLevelP6P7, the RetinaNet head and the
FCOS head with GroupNorm) are exercised in CI time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import detection, segmentation
from torchvision.ops.misc import FrozenBatchNorm2d

import snnlite
from snnlite.detection import DetectorNetwork, convert_detector, feature_shapes, postprocess
from snnlite.graph import UnsupportedLayerError, frozen_group_norms, prepare, site_nodes
from snnlite.groupnorm import FrozenGroupNorm


def _images(n: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=generator) for _ in range(n)]


@pytest.mark.parametrize(
    "builder, sites",
    # ResNet-50: stem + 16 bottlenecks x 3 = 49; FCNHead 1; DeepLabHead: ASPP 4 + pooling 1,
    # projection 1, head conv 1.
    [(segmentation.fcn_resnet50, 50), (segmentation.deeplabv3_resnet50, 56)],
)
def test_segmentation_structures_convert_and_simulate(builder, sites):
    torch.manual_seed(0)
    model = builder(weights=None, weights_backbone=None, aux_loss=False, num_classes=4).eval()
    x = torch.stack(_images(4, 48))
    snn = snnlite.convert(model, [x[:2], x[2:]], iterations=2, progress=False)
    assert len(snn.thresholds) == sites
    out = snn.simulate(x[:1], [1, 3], delay=0, progress=False)
    for readout in out.values():
        assert readout["out"].shape == (1, 4, 48, 48)  # bilinear upsampling back to the input
        assert torch.isfinite(readout["out"]).all()


def test_deeplab_pooling_branch_gets_its_own_neuron():
    model = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=3)
    gm = prepare(model.eval())
    pooling_sites = [name for name in snnlite.graph.activation_sites(gm) if "convs_4" in name]
    assert pooling_sites, "the ASPP global-pooling branch's ReLU must be an activation site"


def _frozen_batchnorms(module: nn.Module) -> nn.Module:
    """Swap BatchNorm2d for FrozenBatchNorm2d, as in torchvision's pretrained detectors
    (``weights_backbone=None`` builds plain BatchNorm2d), with non-trivial statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            c = child.num_features
            frozen.weight.uniform_(0.5, 1.5), frozen.bias.uniform_(-0.1, 0.1)
            frozen.running_mean.uniform_(-0.1, 0.1), frozen.running_var.uniform_(0.5, 2.0)
            assert frozen.weight.shape == (c,)
            setattr(module, name, frozen)
        else:
            _frozen_batchnorms(child)
    return module


def _detector(builder, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    # A low score threshold, so that random weights (prior 0.01) still produce detections.
    model = builder(
        weights=None, weights_backbone=None, num_classes=5, min_size=96, max_size=96,
        score_thresh=0.005, **kwargs,
    )  # fmt: skip
    return _frozen_batchnorms(model).eval()


@pytest.mark.parametrize(
    "builder, options",
    [
        (detection.retinanet_resnet50_fpn, {}),
        (detection.fcos_resnet50_fpn, {"group_norm": "freeze"}),
    ],
)
def test_detection_structures_convert_and_simulate(builder, options):
    model = _detector(builder)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    images = _images(4, 96)
    detector = convert_detector(model, [images[:2], images[2:]], iterations=2, progress=False,
                                **options)  # fmt: skip
    # LastLevelP6P7 calls F.relu on P6: that call is an activation site of its own.
    paths = {node: snnlite.graph._module_path(node) for node in site_nodes(detector.snn.ann)}
    extra = [node for node, stack in paths.items() if any("extra_blocks" in p for p in stack)]
    assert len(extra) == 1
    # Backbone 49 + P6P7 1 + two heads x 4 convs x 5 levels; FCOS's ReLU on its box
    # distances feeds no synapse: it stays analog (part of the output layer).
    assert len(detector.snn.thresholds) == 90
    results = detector.simulate(images[:2], [1, 3], delay=0, progress=False)
    for detections in results.values():
        assert len(detections) == 2
        for found in detections:
            assert set(found) == {"boxes", "scores", "labels"}
            assert torch.isfinite(found["boxes"]).all()
            assert (found["boxes"] >= 0).all() and (found["boxes"] <= 96).all()


@pytest.mark.parametrize("builder", [detection.retinanet_resnet50_fpn, detection.fcos_resnet50_fpn])
def test_postprocessing_is_torchvisions(builder):
    """The prepared network (ReLUs as sites with infinite thresholds) followed by snnlite's
    hand-off gives exactly torchvision's own ``model(images)`` detections."""
    model = _detector(builder)
    images = _images(2, 96, seed=1)
    with torch.no_grad():
        expected = model(images)
    group_norms = [name for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)]
    # No BN folding and GroupNorm kept as it is: the network computes bit for bit what the
    # detector's does, so any difference would come from the hand-off.
    network = prepare(DetectorNetwork(model), keep_analog=group_norms, fold_batchnorm=False)
    batch = snnlite.detection.transformed_batch(model, images)
    with torch.no_grad():
        outputs = network(batch)
    got = postprocess(model, images, outputs, feature_shapes(model, batch))
    assert sum(len(e["boxes"]) for e in expected) > 0
    for g, e in zip(got, expected):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(g[key], e[key]), key


def test_group_norm_is_refused_by_default_with_the_way_out_named():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU())
    with pytest.raises(UnsupportedLayerError, match="group_norm='freeze'") as error:
        snnlite.convert(model, [torch.rand(2, 3, 8, 8)], progress=False)
    assert "'1'" in str(error.value)  # the node


def test_frozen_group_norm_is_exact_on_its_calibration_sample_and_per_call():
    """With one calibration sample the frozen affine reproduces GroupNorm on that sample; two
    calls of one GroupNorm module get separate statistics."""

    class TwoCalls(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.norm = nn.GroupNorm(4, 8)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            z = self.conv(x)
            return self.head(F.relu(self.norm(z)) + F.relu(self.norm(3 * z + 1)))

    torch.manual_seed(0)
    model = TwoCalls().eval()
    nn.init.uniform_(model.norm.weight, 0.5, 1.5)
    nn.init.uniform_(model.norm.bias, -0.2, 0.2)
    x = torch.randn(1, 3, 6, 6)
    snn = snnlite.convert(model, [x], method="max", group_norm="freeze", progress=False)
    norms = frozen_group_norms(snn.ann)
    assert len(norms) == 2 and all(isinstance(n, FrozenGroupNorm) for n in norms.values())
    first, second = norms.values()
    assert not torch.allclose(first.shift, second.shift)
    relux = snn.relux()
    for site in snnlite.graph.activation_sites(relux).values():
        site.threshold = torch.full_like(site.threshold, float("inf"))
    torch.testing.assert_close(relux(x), model(x), rtol=1e-5, atol=1e-5)
    # ...and it is linear per step: simulating it gives finite outputs that approach the ANN.
    out = snn.simulate(x, [256], delay=0, progress=False)[256]
    reference = snn.relux()(x)
    assert (out - reference).abs().max() < 0.05 * reference.abs().max()


def test_an_activation_at_the_output_stays_analog():
    """A ReLU whose spikes would feed no synapse (FCOS's box distances) is part of the analog
    output layer: no neuron, and the SNN's output is ReLU of the averaged last layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU()).eval()
    x = torch.randn(4, 1, 8, 8)
    snn = snnlite.convert(model, [x], method="max", progress=False)
    assert list(snn.thresholds) == ["_1"]
    out = snn.simulate(x, [512], delay=0, progress=False)[512]
    reference = snn.relux()(x)
    assert (out >= 0).all()  # not clipped at a threshold, not quantised, but still a ReLU
    assert (out - reference).abs().max() < 0.02 * reference.abs().max()
