"""torch.distributed: two gloo processes against one.

Every scenario (calibration with each recipe, the low-latency tuning, the metric curves,
the activity, the detection mAP, the command line's evaluation and a whole ``snnlite
convert`` run) runs once in this process, alone, and once in each of two processes spawned
together: one spawn for the whole file (a module fixture), tiny random networks and a few
dozen images, so that it stays fast on a loaded two-core machine.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import snnlite
from snnlite import distributed
from snnlite.cli import main
from snnlite.cli.evaluate import evaluate, evaluation_loader
from snnlite.graph import activation_sites, frozen_group_norms
from snnlite.metrics import DetectionMAP, accuracy_curve, detection_map, miou_curve

WORLD = 2
CALIBRATION_BATCH = 10
MODEL_FILE = """\
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 10)).eval()
"""


def _inputs() -> dict[str, Any]:
    """Tiny random networks and data, made once and handed to every process."""
    torch.manual_seed(0)
    classifier = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    ).eval()  # fmt: skip
    grouped = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    ).eval()  # fmt: skip
    segmenter = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 1))
    images = torch.rand(45, 1, 8, 8)  # 4 full calibration batches and one of 5
    scenes = torch.rand(13, 3, 8, 8)
    masks = segmenter(scenes).argmax(1).detach()
    masks[:, 0, :3] = 255  # VOC's border pixels: ignored
    boxes = [torch.rand(int(n), 2).repeat(1, 2) + torch.tensor([0, 0, 0.3, 0.4])
             for n in torch.randint(0, 4, (11,))]  # fmt: skip
    detections = [{"boxes": b, "scores": torch.rand(len(b)).round(decimals=1),
                   "labels": torch.randint(0, 3, (len(b),))} for b in boxes]  # fmt: skip
    truth = [{"boxes": b + 0.05, "labels": d["labels"]} for b, d in zip(boxes, detections)]
    return {
        "classifier": classifier, "grouped": grouped, "segmenter": segmenter.eval(),
        "images": images, "labels": torch.randint(0, 10, (45,)), "scenes": scenes, "masks": masks,
        "detections": detections, "truth": truth,
    }  # fmt: skip


def _calibration(data: dict[str, Any]) -> DataLoader:
    """This process's share of every global batch of CALIBRATION_BATCH images."""
    dataset = TensorDataset(data["images"], data["labels"])
    sampler = distributed.BatchShardSampler(dataset, CALIBRATION_BATCH)
    return DataLoader(dataset, batch_sampler=sampler)


def _state(snn: snnlite.SpikingNetwork) -> dict[str, Any]:
    sites = activation_sites(snn.ann)
    norms = frozen_group_norms(snn.ann)
    return {
        "thresholds": {name: site.threshold.clone() for name, site in sites.items()},
        "group_norms": {name: (norm.scale, norm.shift) for name, norm in norms.items()},
        "charges": {name: site.charge for name, site in sites.items()},
        "delay": (snn.delay_estimate, snn.delay_schedule),
    }


CONVERSIONS = {
    "ltb_channel": {"iterations": 7},  # cycles over the 4 global batches
    "ltb_layer": {"granularity": "layer", "iterations": 3},
    "max_channel": {"method": "max"},
    "robust_layer": {"method": "robust", "granularity": "layer"},
    "ltb_target_8": {"iterations": 4, "target_timesteps": 8, "tuning_size": 25},
    "group_norm": {"model": "grouped", "group_norm": "freeze", "iterations": 3},
}


def _scenarios(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Everything measured, run alone (no process group) or by each rank of a group."""
    torch.manual_seed(0)
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the last calibration batch, too small to split
        for name, options in CONVERSIONS.items():
            options = dict(options)
            model = data[options.pop("model", "classifier")]
            snn = snnlite.convert(model, _calibration(data), progress=False, **options)
            out[name] = _state(snn)
    # Max norm: the same thresholds bit for bit, so the metrics below compare exactly.
    snn = snnlite.convert(data["classifier"], _calibration(data), "max", progress=False)
    images, labels = data["images"][:31], data["labels"][:31]  # shares of 16 and 15
    out["accuracy"] = accuracy_curve(snn, images, labels, [4, 8], ["auto", 0], batch_size=7,
                                     progress=False, record_spikes=True)  # fmt: skip
    activity = snn.last_activity
    out["activity"] = (activity.samples, activity.events, activity.sops)
    scenes = TensorDataset(data["scenes"])
    scene_batches = DataLoader(scenes, batch_sampler=distributed.BatchShardSampler(scenes, 13))
    segmenter = snnlite.convert(data["segmenter"], scene_batches, "max", progress=False)
    labels_seen: dict = {}
    out["miou"] = miou_curve(segmenter, data["scenes"], data["masks"], 5, [4, 8], batch_size=4,
                             ignore_index=255, progress=False, predictions=labels_seen)  # fmt: skip
    out["miou_labels"] = labels_seen
    part = distributed.shard(len(data["detections"]))
    score = DetectionMAP()
    score.update(data["detections"][part.start : part.stop], data["truth"][part.start : part.stop])
    out["map"] = score.compute()
    loader = evaluation_loader(TensorDataset(images, labels), 6)  # this process's share
    evaluation = evaluate(data["classifier"], snn, loader, [4, 8], ["auto", 0], progress=False)
    out["evaluation"] = (evaluation.images, evaluation.ann_correct, evaluation.clipped_correct,
                         evaluation.snn_correct, evaluation.activity.sops)  # fmt: skip
    report = folder / f"report{distributed.world_size()}"
    status = main(["convert", "--model", f"{folder / 'tiny_model.py'}:build", "--data",
                   "fashion-mnist", "--images", "30", "--calibration-images", "40",
                   "--calibration-batch-size", "10", "--calibration-batches", "5",
                   "--timesteps", "4,8", "--batch-size", "8", "--no-plots", "--no-progress",
                   "--out", str(report)])  # fmt: skip
    out["cli_status"] = status
    return out


def _worker(rank: int, folder: Path) -> None:
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank,
                            world_size=WORLD)  # fmt: skip
    try:
        data = torch.load(folder / "inputs.pt", weights_only=False)
        torch.save(_scenarios(data, folder), folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """{"alone": ..., "rank0": ..., "rank1": ...}: the scenarios' results."""
    folder = tmp_path_factory.mktemp("distributed")
    (folder / "tiny_model.py").write_text(MODEL_FILE)
    data = _inputs()
    torch.save(data, folder / "inputs.pt")
    context = mp.spawn(_worker, args=(folder,), nprocs=WORLD, join=False)
    alone = _scenarios(data, folder)  # meanwhile, here
    context.join()
    ranks = {f"rank{r}": torch.load(folder / f"rank{r}.pt", weights_only=False)
             for r in range(WORLD)}  # fmt: skip
    return {"alone": alone, **ranks, "folder": folder}


@pytest.mark.parametrize("name", CONVERSIONS)
def test_thresholds_equal_one_process_on_the_global_batches(runs, name: str) -> None:
    alone, first, second = (runs[k][name] for k in ("alone", "rank0", "rank1"))
    for site, theta in alone["thresholds"].items():
        assert torch.equal(first["thresholds"][site], second["thresholds"][site])  # bit for bit
        torch.testing.assert_close(first["thresholds"][site], theta, rtol=1e-6, atol=0)
    for site, charge in alone["charges"].items():
        assert (charge is None) == (first["charges"][site] is None)
        if charge is not None:
            assert torch.equal(first["charges"][site], second["charges"][site])
            torch.testing.assert_close(first["charges"][site], charge, rtol=1e-5, atol=1e-6)
    assert first["delay"] == second["delay"] == alone["delay"]
    for norm, (scale, shift) in alone["group_norms"].items():
        torch.testing.assert_close(first["group_norms"][norm], (scale, shift), rtol=1e-6, atol=0)
    assert (name == "group_norm") == bool(alone["group_norms"])


def test_metric_curves_and_activity_equal_one_process(runs) -> None:
    alone = runs["alone"]
    for rank in ("rank0", "rank1"):
        got = runs[rank]
        assert got["accuracy"] == alone["accuracy"]
        assert got["miou"] == alone["miou"]
        assert got["map"] == alone["map"]
        samples, events, sops = got["activity"]
        assert samples == alone["activity"][0] == 31
        for source, counts in alone["activity"][1].items():
            assert torch.equal(events[source], counts)
            torch.testing.assert_close(sops[source], alone["activity"][2][source])
        for key, labels in alone["miou_labels"].items():
            assert torch.equal(got["miou_labels"][key], labels)  # gathered in order


def test_detection_map_gathers_every_image(runs) -> None:
    data = torch.load(runs["folder"] / "inputs.pt", weights_only=False)
    assert runs["rank0"]["map"] == detection_map(data["detections"], data["truth"])


def test_the_cli_evaluation_counts_equal_one_process(runs) -> None:
    alone = runs["alone"]["evaluation"]
    for rank in ("rank0", "rank1"):
        got = runs[rank]["evaluation"]
        assert got[:4] == alone[:4]
        assert got[0] == 31
        for source, sops in alone[4].items():
            torch.testing.assert_close(got[4][source], sops)


def test_snnlite_convert_under_two_processes_writes_the_same_report(runs) -> None:
    assert runs["alone"]["cli_status"] == runs["rank0"]["cli_status"] == 0
    assert runs["rank1"]["cli_status"] == 0
    folder = runs["folder"]
    assert not (folder / "report2" / "summary.md").read_text() == ""
    alone = json.loads((folder / "report1" / "results.json").read_text())
    shared = json.loads((folder / "report2" / "results.json").read_text())
    assert shared.keys() == alone.keys()
    for key, value in alone.items():
        if isinstance(value, float):
            assert shared[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert shared[key] == value, key
    assert alone["images"] == 30


# ---------------------------------------------------------------- shards, one process


def test_shards_add_up_and_keep_the_order() -> None:
    for length in (0, 1, 7, 10):
        parts = [distributed.shard(length, r, 3) for r in range(3)]
        assert [i for part in parts for i in part] == list(range(length))
        sampler = [list(distributed.ShardSampler(length, r, 3)) for r in range(3)]
        assert sampler == [list(part) for part in parts]
    with pytest.raises(ValueError, match="does not exist"):
        distributed.shard(5, 3, 3)


def test_batch_shards_make_the_single_process_batches() -> None:
    alone = list(distributed.BatchShardSampler(23, 5))
    assert alone == [list(range(s, min(s + 5, 23))) for s in range(0, 23, 5)]
    with pytest.warns(UserWarning, match="last batch"):
        ranks = [list(distributed.BatchShardSampler(23, 5, r, 4)) for r in range(4)]
    assert {len(batches) for batches in ranks} == {4}  # the batch of 3 is dropped
    for k in range(4):
        assert [i for batches in ranks for i in batches[k]] == alone[k]
    with pytest.raises(ValueError, match="at least the number of processes"):
        distributed.BatchShardSampler(23, 3, 0, 4)


def test_helpers_are_identities_without_a_process_group() -> None:
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    x = torch.arange(3.0)
    assert distributed.all_reduce_sum(x) is x
    assert distributed.all_gather_cat(x) is x
    assert distributed.all_gather_object("a") == ["a"]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.count_ranks(True) == 1
