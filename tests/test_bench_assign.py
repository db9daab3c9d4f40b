"""The SimOTA benchmark: measurement helpers see known allocations and syncs, the runner on a tiny configuration."""
import json

import pytest
import torch

from benchmarks import bench_assign
from benchmarks.assign import SCENARIOS, BenchConfig, estimate_assign_bytes, format_table, make_scenario, run_benchmark
from yolox.models.simota import in_centre_prior, pairwise_iou_cxcywh
from benchmarks.profiler import measure_call, peak_of_running_sum, profile_call

TINY = dict(image_size=64, num_classes=4, batch_sizes=(2, 4), repeats=1, gt_scale=0.05, top_ops=3)


@pytest.fixture(scope="module")
def tiny_report():
    return run_benchmark(BenchConfig(**TINY), progress=False)


# ---------------------------------------------------------------------------------------------------------- profiler
def test_peak_memory_sees_a_known_allocation():
    mib = 2 ** 20

    def allocate_4mb():
        x = torch.ones(mib)  # 4 MiB of float32, freed on return
        return float(x[0])

    _, m = measure_call(allocate_4mb, repeats=1)
    assert 4.0 <= m.peak_mb < 5.0

    def sequential():  # 4 MiB freed before 2 MiB is taken: the peak is 4, not 6
        a = torch.ones(mib)
        del a
        return torch.ones(mib // 2)

    def together():
        a = torch.ones(mib)
        return a, torch.ones(mib // 2)

    assert 4 * mib <= profile_call(sequential)[1].peak_bytes < 5 * mib
    assert 6 * mib <= profile_call(together)[1].peak_bytes < 7 * mib


def test_peak_of_running_sum_orders_events_by_time():
    assert peak_of_running_sum([(2, -5), (1, 10), (3, 7), (4, -12)]) == 12
    assert peak_of_running_sum([(1, -3)]) == 0
    assert peak_of_running_sum([]) == 0


def test_sync_count_sees_item_tolist_and_nonzero():
    x = torch.arange(10.0)
    assert profile_call(lambda: x * 2)[1].syncs == 0
    assert profile_call(lambda: (x * 2).sum().item())[1].syncs == 1  # aten::item > _local_scalar_dense: one sync
    assert profile_call(lambda: x.tolist())[1].syncs == 1  # no aten op on the CPU: seen through the marker
    assert profile_call(lambda: (x > 3).nonzero())[1].syncs == 1
    with_range = profile_call(lambda: _marked_sync(x))[1]
    assert with_range.syncs == 1  # a marked range around a .tolist(): counted once
    assert with_range.ops > 0


def _marked_sync(x):
    with torch.profiler.record_function("simota::host_sync"):
        return (x + 1).tolist()


# ---------------------------------------------------------------------------------------------------------- scenarios
def test_scenarios_are_reproducible_and_shaped_as_described():
    a = make_scenario("coco", 4, seed=3)
    b = make_scenario("coco", 4, seed=3)
    assert torch.equal(a.pred_boxes, b.pred_boxes) and torch.equal(a.cls_logits, b.cls_logits)
    assert a.gt_counts == b.gt_counts
    assert not torch.equal(make_scenario("coco", 4, seed=4).gt_boxes, a.gt_boxes)
    # gt counts do not depend on the image size: a small image keeps this fast
    assert all(1 <= n <= 3 for n in make_scenario("sparse", 8, image_size=64).gt_counts)
    assert make_scenario("crowded", 2, image_size=64).gt_counts == [300, 300]
    one = make_scenario("one1000", 3, image_size=64)
    assert one.gt_counts[0] == 1000 and all(1 <= n <= 3 for n in one.gt_counts[1:])
    counts = make_scenario("coco", 64, image_size=64).gt_counts
    assert 12 <= sum(counts) / len(counts) <= 30 and max(counts) <= 120 and max(counts) > 2 * (sum(counts) / 64)


def test_predictions_look_early_in_training():
    batch = make_scenario("coco", 2, seed=1)
    assert abs(batch.cls_logits.mean().item() + 4.6) < 0.05
    # a fraction of the anchors inside some gt's centre prior predicts a box close to one of those gts
    g = batch.gt_boxes[0, batch.gt_valid[0]]  # (G, 4)
    cx, cy = batch.grid.centres()
    prior = in_centre_prior(g[:, 0:1], g[:, 1:2], cx, cy, batch.grid.strides)  # (G, A)
    ious = pairwise_iou_cxcywh(g.unsqueeze(1), batch.pred_boxes[0].unsqueeze(0))  # (G, A)
    best = torch.where(prior, ious, torch.zeros_like(ious)).amax(0)[prior.any(0)]  # (C,)
    assert 0.2 < (best > 0.3).float().mean().item() < 0.8


def test_memory_estimate_grows_with_packing():
    loop = estimate_assign_bytes("loop", [20] * 16, [500] * 16, 8400, 80, 640)
    packed = estimate_assign_bytes("packed", [20] * 16, [500] * 16, 8400, 80, 640)
    assert loop > 20 * 500 * 80 * 4 and packed > 15 * 15 * loop  # 15 images of 640 share a 10000-wide sub-batch
    assert estimate_assign_bytes("batched", [20], [500], 8400, 80, 640) is None


# ---------------------------------------------------------------------------------------------------------- runner
def test_runner_tiny_config_structure(tiny_report):
    records = tiny_report["records"]
    assert len(records) == len(SCENARIOS) * 2 * 3
    for r in records:
        assert r["status"] == "ok", r
        assert r["ms"] > 0 and r["peak_mb"] > 0 and r["ops"] > 0 and r["syncs"] >= 0
        assert len(r["times_ms"]) == 1
        if r["mode"] != "loop":
            assert r["same_as_loop"], r  # every mode gives the loop's assignment
    assert {(r["scenario"], r["batch"]) for r in records} == {(s, b) for s in SCENARIOS for b in (2, 4)}
    json.dumps(tiny_report)  # JSON-ready
    table = format_table(records)
    assert all(s in table for s in SCENARIOS) and "batched syncs" in table
    assert any("host syncs" in t["name"] for t in tiny_report["targets"])


def test_batched_syncs_do_not_grow_with_batch_size(tiny_report):
    for scenario in SCENARIOS:
        syncs = {r["batch"]: r["syncs"] for r in tiny_report["records"]
                 if r["scenario"] == scenario and r["mode"] == "batched"}
        loop = {r["batch"]: r["syncs"] for r in tiny_report["records"]
                if r["scenario"] == scenario and r["mode"] == "loop"}
        assert syncs[2] == syncs[4] >= 1, syncs  # the deliberate sync is seen, and only it
        assert loop[4] > loop[2]  # the loop synchronises per image


def test_cells_over_the_memory_budget_are_skipped():
    report = run_benchmark(BenchConfig(**{**TINY, "scenarios": ("crowded",), "batch_sizes": (2,), "max_gb": 1e-9}),
                           progress=False)
    by_mode = {r["mode"]: r for r in report["records"]}
    assert by_mode["loop"]["status"] == by_mode["packed"]["status"] == "skipped"
    assert by_mode["packed"]["note"].startswith("skipped (needs ~")
    assert by_mode["batched"]["status"] == "ok"
    assert "skipped (needs ~" in format_table(report["records"])


def test_bad_configuration_names_the_value():
    with pytest.raises(ValueError, match="nosuch"):
        run_benchmark(BenchConfig(scenarios=("nosuch",)), progress=False)
    with pytest.raises(ValueError, match="image_size=50"):
        run_benchmark(BenchConfig(image_size=50), progress=False)


def test_cli_writes_json_and_prints_targets(tmp_path, capsys):
    """benchmarks/bench_assign.py (tools/bench_assign.py launches it)."""
    out = tmp_path / "bench.json"
    bench_assign.run(["--size", "64", "--scenarios", "sparse,coco", "--batch-sizes", "2", "--repeats", "1",
                      "--json", str(out)])
    printed = capsys.readouterr().out
    assert "targets" in printed and "coco" in printed
    data = json.loads(out.read_text())
    assert data["config"]["threads"] == 1 and len(data["records"]) == 2 * 3
