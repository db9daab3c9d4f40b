"""-l wandb and -l mlflow: the clear error without the package, the loggers offline (wandb in offline mode, the
calls our logger makes to it recorded; an MLflow file store in tmp_path, read back with its client), and one short
training run through each."""
import functools
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from loguru import logger

from train_helpers import read_metrics, run_dir, train_argv
from yolox.tools.train import run_train_cli
from yolox.utils import LoggerPackageMissing, MlflowLogger, WandbLogger, split_wandb_options
from yolox.utils import wandb_logger as wandb_logger_module


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


class WandbCalls:
    """What our code handed to wandb, through wandb's public API: the wandb.init arguments and, for the run it
    returned, the config updates, the define_metric calls, the logged rows, the images (wandb.Image's arguments),
    the artifacts (wandb.Artifact's arguments, their add_file calls, log_artifact's aliases) and the finish calls.
    Every call goes on to the real wandb (offline), so a call that wandb refuses (a bad box, an unknown argument)
    still fails the test; nothing is read back from wandb's own files, whose format is wandb's private business.

    Only our logger sees the recording: it gets its wandb module from import_logger_package, which hands it a
    stand-in that delegates everything else to the real module (wandb's own isinstance checks keep its classes)."""

    def __init__(self, wandb, monkeypatch):
        self.inits, self.runs, self.config, self.step_metrics = [], [], {}, {}
        self.rows, self.finished = [], []
        self._images, self._artifacts = [], []
        real_init, real_image, real_artifact = wandb.init, wandb.Image, wandb.Artifact

        @functools.wraps(real_init)  # WandbLogger.options_from reads wandb.init's signature
        def init(*args, **kwargs):
            assert not args, args  # WandbLogger names every argument
            self.inits.append(kwargs)
            run = _RecordingRun(real_init(**kwargs), self)
            self.runs.append(run)
            return run

        def image(data, *args, **kwargs):
            made = real_image(data, *args, **kwargs)
            self._images.append((made, dict(kwargs, data=np.array(data))))
            return made

        def artifact(*args, **kwargs):
            made = real_artifact(*args, **kwargs)
            record = {"args": args, **kwargs, "files": [], "aliases": None}
            real_add_file = made.add_file

            def add_file(local_path, name=None, **more):
                record["files"].append((str(local_path), name))
                return real_add_file(local_path, name=name, **more)

            made.add_file = add_file
            self._artifacts.append((made, record))
            return made

        seen = _WandbModule(wandb, init=init, Image=image, Artifact=artifact)
        real_import = wandb_logger_module.import_logger_package
        monkeypatch.setattr(wandb_logger_module, "import_logger_package",
                            lambda name: seen if name == "wandb" else real_import(name))

    def image(self, made):
        """The arguments our code gave wandb.Image for the image object `made` (found in a logged row)."""
        return next(kwargs for obj, kwargs in self._images if obj is made)

    def image_rows(self, key="val/predictions"):
        """The arguments of each image of each row that logged `key`."""
        return [[self.image(made) for made in row[key]] for row in self.rows if key in row]

    @property
    def logged_artifacts(self):
        return [record for _, record in self._artifacts if record["aliases"] is not None]

    def _logged(self, artifact, aliases):
        record = next(r for obj, r in self._artifacts if obj is artifact)
        record["aliases"] = list(aliases or [])


class _WandbModule:
    """The wandb module with some of its functions replaced."""

    def __init__(self, module, **replaced):
        self._module = module
        vars(self).update(replaced)

    def __getattr__(self, name):
        return getattr(self._module, name)


class _RecordingRun:
    """A wandb run as WandbLogger sees it: what it calls is recorded in `calls`, then done by the real run."""

    def __init__(self, run, calls):
        self._run, self._calls = run, calls

    def __getattr__(self, name):  # id, name, project ...: the real run's
        return getattr(self._run, name)

    @property
    def config(self):
        return _RecordingConfig(self._run.config, self._calls)

    def define_metric(self, name, *args, **kwargs):
        self._calls.step_metrics[name] = kwargs.get("step_metric")
        return self._run.define_metric(name, *args, **kwargs)

    def log(self, data, *args, **kwargs):
        assert not args and "step" not in kwargs, (args, kwargs)  # the steps are our own train/step, train/epoch
        self._calls.rows.append(dict(data))
        return self._run.log(data, *args, **kwargs)

    def log_artifact(self, artifact, *args, aliases=None, **kwargs):
        self._calls._logged(artifact, aliases)
        return self._run.log_artifact(artifact, *args, aliases=aliases, **kwargs)

    def finish(self, *args, exit_code=None, **kwargs):
        self._calls.finished.append(exit_code)
        return self._run.finish(*args, exit_code=exit_code, **kwargs)


class _RecordingConfig:
    def __init__(self, config, calls):
        self._config, self._calls = config, calls

    def __getattr__(self, name):
        return getattr(self._config, name)

    def update(self, values, *args, **kwargs):
        self._calls.config.update(values)
        return self._config.update(values, *args, **kwargs)


@pytest.fixture
def wandb_calls(wandb_offline, monkeypatch):
    return WandbCalls(pytest.importorskip("wandb"), monkeypatch)


def _plain(value):
    """Whether a logged value is a plain number (not a tensor nor a numpy scalar), as wandb's charts expect."""
    return type(value) in (int, float)


class _TinyValSet:
    """Two 20x40 validation images (shown at half their 40x80 size) with one box each, image ids 7 and 8."""
    class_ids = [5]
    cats = [{"id": 5, "name": "tree"}]

    def __len__(self):
        return 2

    def pull_item(self, index):
        img = np.zeros((20, 40, 3), np.uint8)
        img[..., 0] = 200  # blue in BGR: wandb is given RGB
        labels = np.array([[0.0, 0.0, 20.0, 10.0, 0.0]])
        return img, labels, (40, 80), np.array([7 + index])


def test_wandb_run_gets_the_scalars_config_boxes_and_checkpoint(wandb_calls, tmp_path):
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

    calls = wandb_calls
    (init,) = calls.inits
    assert {"project": "yolox-unit", "name": "unit", "tags": ["a", "b"], "resume": "allow"}.items() <= init.items()
    (run,) = calls.runs
    assert calls.config == {"max_epoch": 3, "input_size": [64, 64]}
    assert calls.step_metrics == {"train/step": None, "train/epoch": None, "train/*": "train/step",
                                  "val/*": "train/epoch"}
    scalar_rows = [r for r in calls.rows if "val/predictions" not in r]
    assert scalar_rows == [{"train/total_loss": 2.5, "train/lr": 0.01, "train/step": 10},
                           {"val/COCOAP50": 0.5, "val/COCOAP50_95": 0.25, "train/epoch": 1}]
    assert all(_plain(v) for r in scalar_rows for v in r.values())  # the tensor was turned into a number

    # one image per log (num_eval_images 1), the same from both evaluator formats; boxes in fractions of the
    # original 40x80 image: the prediction fills the bottom-right quarter, the truth the top-left one
    images = calls.image_rows()
    assert [len(row) for row in images] == [1, 1]
    labels = {5: "tree"}
    expected_boxes = {
        "predictions": {"class_labels": labels, "box_data": [
            {"position": {"minX": 0.5, "maxX": 1.0, "minY": 0.5, "maxY": 1.0}, "class_id": 5,
             "box_caption": "tree 0.90", "scores": {"score": 0.9}}]},
        "ground_truth": {"class_labels": labels, "box_data": [
            {"position": {"minX": 0.0, "maxX": 0.25, "minY": 0.0, "maxY": 0.25}, "class_id": 5,
             "box_caption": "tree"}]},
    }
    for (image,) in images:
        assert image["caption"] == "image id 7"
        assert image["boxes"] == expected_boxes
        assert image["data"].shape == (20, 40, 3) and (image["data"][..., 2] == 200).all()  # RGB

    (artifact,) = calls.logged_artifacts
    assert (artifact["name"], artifact["type"], artifact["metadata"]) == (f"model-{run.id}", "model", {"epoch": 1})
    assert artifact["files"] == [(str(ckpt), "model_ckpt.pth")]
    assert sorted(artifact["aliases"]) == ["best", "epoch-1", "latest"]
    assert calls.finished == [None]  # wandb's default: a run that ended well


def test_wandb_logger_logs_no_checkpoint_unless_asked_and_finish_marks_a_failure(wandb_calls, tmp_path):
    wl = WandbLogger(project="yolox-unit", val_dataset=_TinyValSet(), num_eval_images=0)
    torch.save({"model": {}}, tmp_path / "last_epoch_ckpt.pth")
    wl.save_checkpoint(str(tmp_path), "last_epoch", True, metadata={"epoch": 1})
    wl.log_images({7: {"bboxes": [], "scores": [], "categories": []}})
    wl.finish(exit_code=1)
    wl.finish(exit_code=1)  # a second finish does nothing
    assert wandb_calls.logged_artifacts == [] and wandb_calls.image_rows() == []
    assert wandb_calls.config == {} and wandb_calls.finished == [1]


def test_training_with_l_wandb_logs_every_print_interval_and_the_evaluation(wandb_calls, tmp_path):
    trainer = run_train_cli(train_argv(tmp_path, "-l", "wandb", max_epoch=1, no_aug_epochs=0)
                            + ["wandb-project", "yolox-test", "wandb-name", "tiny", "wandb-num_eval_images", "2",
                               "wandb-log_checkpoints", "True"])
    calls = wandb_calls
    (init,) = calls.inits
    assert (init["project"], init["name"]) == ("yolox-test", "tiny")
    assert calls.config["max_epoch"] == 1 and calls.config["args.batch_size"] == 8 and "dataset" not in calls.config

    train_rows = [r for r in calls.rows if "train/step" in r]
    assert [r["train/step"] for r in train_rows] == list(range(1, trainer.max_iter + 1))  # print_interval 1
    assert all(_plain(v) for r in train_rows for v in r.values())
    metrics = read_metrics(run_dir(tmp_path))
    assert [r["train/total_loss"] for r in train_rows] == pytest.approx([m["total_loss"] for m in metrics
                                                                         if "total_loss" in m])
    (evaluation,) = [m for m in metrics if "AP50" in m]
    (val_row,) = [r for r in calls.rows if "val/COCOAP50_95" in r]
    assert val_row["train/epoch"] == 1
    assert val_row["val/COCOAP50_95"] == pytest.approx(evaluation["AP50_95"])
    assert val_row["val/COCOAP50"] == pytest.approx(evaluation["AP50"])
    (images,) = calls.image_rows()
    assert len(images) == 2 and all(set(i["boxes"]) == {"predictions", "ground_truth"} for i in images)
    assert all(len(i["boxes"]["ground_truth"]["box_data"]) > 0 for i in images)  # the val tiles' crowns
    (artifact,) = calls.logged_artifacts
    assert {"latest", "epoch-1"} <= set(artifact["aliases"])
    assert artifact["files"] == [(str(run_dir(tmp_path) / "last_epoch_ckpt.pth"), "model_ckpt.pth")]
    assert artifact["metadata"]["epoch"] == 1
    assert calls.finished == [0]  # the trainer ends the run as finished


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
