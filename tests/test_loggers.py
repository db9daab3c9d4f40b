"""-l wandb and -l mlflow: the clear error without the package, the loggers offline (a wandb offline run folder, an
MLflow file store in tmp_path), and one short training run through each."""
import glob
import json
import re
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from loguru import logger

from train_helpers import read_metrics, run_dir, train_argv
from yolox.apps.train import run_train_cli
from yolox.utils import LoggerPackageMissing, MlflowLogger, WandbLogger, split_wandb_options


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logger.remove()
    logger.add(sys.stderr)


# ------------------------------------------------------------------------------------------ without the packages
@pytest.mark.parametrize("name,make", [("wandb", WandbLogger), ("mlflow", MlflowLogger)])
def test_a_missing_package_is_one_clear_error_before_training(name, make, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # `import name` now fails as if it were not installed
    message = f"-l {name} needs the {name} package: pip install -e '.[{name}]' (or pip install {name})"
    with pytest.raises(LoggerPackageMissing, match=re.escape(message)):
        make()
    with pytest.raises(ValueError, match=re.escape(message)):
        run_train_cli(train_argv(tmp_path, "-l", name))
    assert not run_dir(tmp_path).exists()  # raised in the checks, before the output folder or any process


def test_wandb_options_are_split_from_the_exp_options_and_need_l_wandb(tmp_path):
    opts = ["max_epoch", "2", "wandb-name", "run-1", "wandb-project", "p", "input_size", "128,128", "wandb-x"]
    rest, wandb_opts = split_wandb_options(opts)
    assert rest == ["max_epoch", "2", "input_size", "128,128", "wandb-x"]  # the unpaired item stays for merge
    assert wandb_opts == {"name": "run-1", "project": "p"}  # the official lstrip("wandb-") made "name" "me"
    with pytest.raises(ValueError, match=r"wandb-project is an option of -l wandb.*add -l wandb"):
        run_train_cli(train_argv(tmp_path, "-l", "tensorboard") + ["wandb-project", "p"])


# ------------------------------------------------------------------------------------------ wandb
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """wandb in offline mode, every folder of it inside tmp_path; its service is stopped after the test."""
    wandb = pytest.importorskip("wandb")
    for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_DATA_DIR", "wandb_data"), ("WANDB_CACHE_DIR", "wandb_cache"),
                     ("WANDB_CONFIG_DIR", "wandb_config")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    yield tmp_path / "wandb_dir"
    if wandb.run is not None:
        wandb.finish()
    wandb.teardown()


def wandb_records(wandb_dir, timeout=60.0):
    """The records of the one offline run under wandb_dir, once its exit record is written (wandb's service process
    may still be writing the file when finish() has returned)."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = _wandb_file_records(wandb_dir)
        except DecodeError:  # a record read while it is being written: read again
            if time.monotonic() > deadline:
                raise
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _wandb_file_records(wandb_dir):
    """The records in the offline run's .wandb file: a LevelDB-style log (7-byte file header, 32 KiB blocks of
    chunks with a crc32 / length / type header) of protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    paths = glob.glob(str(Path(wandb_dir) / "wandb" / "offline-run-*" / "run-*.wandb"))
    if not paths:
        return []
    (path,) = paths
    data = Path(path).read_bytes()
    if len(data) < 7:
        return []
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_rows(records):
    """The logged history rows, without wandb's own _step/_runtime/_timestamp."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            rows.append({k: v for k, v in row.items() if not k.startswith("_")})
    return rows


def wandb_of_type(records, kind):
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def wandb_config(records):
    config = {}
    for c in wandb_of_type(records, "config"):
        config.update({item.key: json.loads(item.value_json) for item in c.update})
    return config


class _TinyValSet:
    """Two 20x40 validation images (shown at half their 40x80 size) with one box each, image ids 7 and 8."""
    class_ids = [5]
    cats = [{"id": 5, "name": "tree"}]

    def __len__(self):
        return 2

    def pull_item(self, index):
        img = np.zeros((20, 40, 3), np.uint8)
        labels = np.array([[0.0, 0.0, 20.0, 10.0, 0.0]])
        return img, labels, (40, 80), np.array([7 + index])


def test_wandb_offline_run_has_the_scalars_config_boxes_and_checkpoint(wandb_offline, tmp_path):
    options = WandbLogger.options_from(["wandb-num_eval_images", "1", "wandb-log_checkpoints", "true",
                                        "wandb-tags", "a,b"])
    assert options == {"num_eval_images": 1, "log_checkpoints": True, "tags": ["a", "b"]}
    with pytest.raises(ValueError, match="wandb-colour: neither WandbLogger nor wandb.init takes 'colour'"):
        WandbLogger.options_from(["wandb-colour", "red"])

    wl = WandbLogger(project="yolox-unit", name="unit", config={"max_epoch": 3, "input_size": [64, 64]},
                     val_dataset=_TinyValSet(), **options)
    wl.log_metrics({"train/total_loss": torch.tensor(2.5), "train/lr": 0.01}, step=10)
    wl.log_metrics({"val/COCOAP50": 0.5, "val/COCOAP50_95": 0.25, "train/epoch": 1})
    wl.log_images({7: {"bboxes": [[40.0, 20.0, 80.0, 40.0]], "scores": [0.9], "categories": [5]}})  # COCOEvaluator
    wl.log_images({7: (np.array([[40.0, 20.0, 80.0, 40.0]]), np.array([0]), np.array([0.9]))})  # VOCEvaluator
    ckpt = tmp_path / "last_epoch_ckpt.pth"
    torch.save({"model": {}}, ckpt)
    wl.save_checkpoint(str(tmp_path), "last_epoch", True, metadata={"epoch": 1})
    wl.finish()

    records = wandb_records(wandb_offline)
    (run,) = wandb_of_type(records, "run")
    assert (run.project, run.display_name) == ("yolox-unit", "unit")
    assert list(run.tags) == ["a", "b"]
    assert {"max_epoch": 3, "input_size": [64, 64]}.items() <= wandb_config(records).items()
    rows = wandb_rows(records)
    assert {"train/total_loss": 2.5, "train/lr": 0.01, "train/step": 10} in rows
    assert {"val/COCOAP50": 0.5, "val/COCOAP50_95": 0.25, "train/epoch": 1} in rows
    steps = {m.glob_name: m.step_metric for m in wandb_of_type(records, "metric") if m.glob_name}
    assert steps == {"train/*": "train/step", "val/*": "train/epoch"}

    image_rows = [r for r in rows if "val/predictions/count" in r]
    assert [(r["val/predictions/count"], r["val/predictions/captions"]) for r in image_rows] == [
        (1, ["image id 7"])] * 2
    box_files = glob.glob(str(wandb_offline / "wandb" / "offline-run-*" / "files" / "media" / "metadata" / "boxes2D"
                              / "val" / "*.json"))
    found = sorted(json.dumps([b["position"], b["class_id"], b.get("scores")], sort_keys=True)
                   for f in box_files for b in json.loads(Path(f).read_text())["box_data"])
    # fractions of the original 40x80 image: the prediction fills the bottom-right quarter, the truth the top-left
    expected = [[{"minX": 0.5, "maxX": 1.0, "minY": 0.5, "maxY": 1.0}, 5, {"score": 0.9}],
                [{"minX": 0.0, "maxX": 0.25, "minY": 0.0, "maxY": 0.25}, 5, None]]
    assert found == sorted(json.dumps(e, sort_keys=True) for e in expected * 2)  # the same from both formats

    (artifact,) = wandb_of_type(records, "artifact")
    assert artifact.name == f"model-{run.run_id}" and artifact.type == "model"
    assert sorted(artifact.aliases) == ["best", "epoch-1", "latest"]
    assert [e.path for e in artifact.manifest.contents] == ["model_ckpt.pth"]
    assert json.loads(artifact.metadata) == {"epoch": 1}
    assert [e.exit_code for e in wandb_of_type(records, "exit")] == [0]


def test_training_with_l_wandb_logs_every_print_interval_and_the_evaluation(wandb_offline, tmp_path):
    trainer = run_train_cli(train_argv(tmp_path, "-l", "wandb", max_epoch=1, no_aug_epochs=0)
                            + ["wandb-project", "yolox-test", "wandb-name", "tiny", "wandb-num_eval_images", "2",
                               "wandb-log_checkpoints", "True"])
    records = wandb_records(wandb_offline)
    (run,) = wandb_of_type(records, "run")
    assert (run.project, run.display_name) == ("yolox-test", "tiny")
    config = wandb_config(records)
    assert config["max_epoch"] == 1 and config["args.batch_size"] == 8 and "dataset" not in config

    rows = wandb_rows(records)
    train_rows = [r for r in rows if "train/step" in r]
    assert [r["train/step"] for r in train_rows] == list(range(1, trainer.max_iter + 1))  # print_interval 1
    metrics = read_metrics(run_dir(tmp_path))
    assert [r["train/total_loss"] for r in train_rows] == pytest.approx([m["total_loss"] for m in metrics
                                                                         if "total_loss" in m])
    (evaluation,) = [m for m in metrics if "AP50" in m]
    val_row = next(r for r in rows if "val/COCOAP50_95" in r)
    assert val_row["train/epoch"] == 1
    assert val_row["val/COCOAP50_95"] == pytest.approx(evaluation["AP50_95"])
    assert val_row["val/COCOAP50"] == pytest.approx(evaluation["AP50"])
    assert next(r for r in rows if "val/predictions/count" in r)["val/predictions/count"] == 2
    (artifact,) = wandb_of_type(records, "artifact")
    assert {"latest", "epoch-1"} <= set(artifact.aliases)
    assert [e.exit_code for e in wandb_of_type(records, "exit")] == [0]


# ------------------------------------------------------------------------------------------ mlflow
@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """MLflow on a file store in tmp_path (mlflow 3 wants MLFLOW_ALLOW_FILE_STORE for it), without telemetry; the
    client to read it."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "yolox-test")
    monkeypatch.setenv("YOLOX_MLFLOW_LOG_MODEL_ARTIFACTS", "True")
    for var in ("MLFLOW_RUN_ID", "MLFLOW_TAGS", "YOLOX_MLFLOW_RUN_NAME", "YOLOX_MLFLOW_LOG_MODEL_PER_n_EPOCHS",
                "YOLOX_MLFLOW_LOG_Nth_EPOCH_MODELS", "MLFLOW_NESTED_RUN", "YOLOX_MLFLOW_FLATTEN_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    yield mlflow.MlflowClient(tracking_uri=uri)
    while mlflow.active_run() is not None:
        mlflow.end_run()


def only_run(client, experiment="yolox-test"):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def metric_steps(client, run, key):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def artifact_paths(client, run, folder):
    return sorted(f.path for f in client.list_artifacts(run.info.run_id, folder))


def test_mlflow_logs_params_metrics_and_the_best_checkpoint_every_n_epochs(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOX_MLFLOW_LOG_MODEL_PER_n_EPOCHS", "2")
    monkeypatch.setenv("YOLOX_MLFLOW_RUN_NAME", "unit")
    monkeypatch.setenv("MLFLOW_TAGS", '{"release": "rc1"}')
    args = SimpleNamespace(experiment_name="unit", batch_size=8)
    exp = SimpleNamespace(max_epoch=3, input_size=(64, 64), save_history_ckpt=False, dataset=object())
    torch.save({"model": {}}, tmp_path / "best_ckpt.pth")

    ml = MlflowLogger()
    ml.setup(args, exp)
    ml.on_log(args, exp, 5, {"train/total_loss": torch.tensor(2.0), "train/lr": 0.01})
    ml.on_log(args, exp, 1, {"val/COCOAP50_95": 0.25})
    ml.save_checkpoints(args, exp, str(tmp_path), 0, {"epoch": 1}, update_best_ckpt=True)
    run = only_run(mlflow_store)
    assert artifact_paths(mlflow_store, run, "unit") == []  # epoch 1 of every 2: the new best waits
    ml.save_checkpoints(args, exp, str(tmp_path), 1, {"epoch": 2}, update_best_ckpt=False)
    assert artifact_paths(mlflow_store, run, "unit/best_ckpt") == ["unit/best_ckpt/best_ckpt.pth",
                                                                  "unit/best_ckpt/metadata.json"]
    ml.on_train_end(args, str(tmp_path), {"epoch": 3})

    run = only_run(mlflow_store)
    assert run.info.run_name == "unit" and run.info.status == "FINISHED"
    assert run.data.tags["release"] == "rc1"
    assert {"max_epoch": "3", "input_size": "[64, 64]", "save_history_ckpt": "False", "args.batch_size": "8",
            "args.experiment_name": "unit"} == run.data.params  # the dataset object is left out
    assert metric_steps(mlflow_store, run, "train/total_loss") == [(5, 2.0)]
    assert metric_steps(mlflow_store, run, "val/COCOAP50_95") == [(1, 0.25)]


def test_mlflow_reattached_run_keeps_its_params_and_bad_settings_are_clear(mlflow_store, monkeypatch):
    args = SimpleNamespace(experiment_name="unit")
    first = MlflowLogger()
    first.setup(args, SimpleNamespace(max_epoch=3))
    first.on_train_end(args, "unused", {}, status="KILLED")
    run = only_run(mlflow_store)
    assert run.info.status == "KILLED"

    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)  # resume into it with another max_epoch: no failure
    again = MlflowLogger()
    again.setup(args, SimpleNamespace(max_epoch=5, no_aug_epochs=2))
    again.on_train_end(args, "unused", {})
    params = only_run(mlflow_store).data.params
    assert params["max_epoch"] == "3" and params["no_aug_epochs"] == "2"

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)  # mlflow.end_run unsets it itself
    monkeypatch.setenv("YOLOX_MLFLOW_LOG_MODEL_PER_n_EPOCHS", "often")
    with pytest.raises(ValueError, match="YOLOX_MLFLOW_LOG_MODEL_PER_n_EPOCHS='often'"):
        MlflowLogger().setup(args, SimpleNamespace())


def test_training_with_l_mlflow_logs_metrics_params_and_the_best_checkpoint(mlflow_store, tmp_path):
    trainer = run_train_cli(train_argv(tmp_path, "-l", "mlflow", max_epoch=1, no_aug_epochs=0))
    run = only_run(mlflow_store)
    assert run.info.status == "FINISHED"
    assert run.data.params["max_epoch"] == "1" and run.data.params["args.batch_size"] == "8"

    metrics = read_metrics(run_dir(tmp_path))
    losses = metric_steps(mlflow_store, run, "train/total_loss")
    assert [step for step, _ in losses] == list(range(1, trainer.max_iter + 1))  # at the iteration, not the epoch
    assert [v for _, v in losses] == pytest.approx([m["total_loss"] for m in metrics if "total_loss" in m])
    (evaluation,) = [m for m in metrics if "AP50" in m]
    assert metric_steps(mlflow_store, run, "val/COCOAP50_95") == [(1, pytest.approx(evaluation["AP50_95"]))]
    assert metric_steps(mlflow_store, run, "val/COCOAP50") == [(1, pytest.approx(evaluation["AP50"]))]

    # YOLOX_MLFLOW_LOG_MODEL_ARTIFACTS: the best checkpoint, uploaded at the end (epoch 1 of every 30)
    folder = "yolox_nano_forest/best_ckpt"
    assert artifact_paths(mlflow_store, run, folder) == [f"{folder}/best_ckpt.pth", f"{folder}/metadata.json"]
    local = Path(mlflow_store.download_artifacts(run.info.run_id, f"{folder}/metadata.json", str(tmp_path)))
    assert json.loads(local.read_text())["epoch"] == 1
