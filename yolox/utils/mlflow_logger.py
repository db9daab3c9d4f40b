"""The MLflow logger of `-l mlflow`: the run's settings as params, losses, lr and COCO AP as metrics, checkpoints
as artifacts. mlflow is an optional extra (pip install -e '.[mlflow]'), imported only when the logger is made."""
import importlib
import json
import os

import torch
from loguru import logger

from .trackers import import_logger_package, run_params

__all__ = ["MlflowLogger"]

_TRUE = ("1", "ON", "YES", "TRUE")
_FALSE = ("0", "OFF", "NO", "FALSE")


def _env_flag(name, default=False):
    """The environment variable `name` as a bool; ValueError names it when it is neither true nor false."""
    value = os.getenv(name, "").strip()
    if not value:
        return default
    if value.upper() in _TRUE:
        return True
    if value.upper() in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: set it to True or False (or 1/0)")


def _env_positive_int(name, default):
    value = os.getenv(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name}={value!r}: set it to a whole number of epochs >= 1")
    return number


def _env_tags(name="MLFLOW_TAGS"):
    value = os.getenv(name, "").strip()
    if not value:
        return {}
    try:
        tags = json.loads(value)
    except json.JSONDecodeError:
        tags = None
    if not isinstance(tags, dict):
        raise ValueError(f"{name}={value!r}: set it to a JSON object, e.g. '{{\"release\": \"rc1\"}}'")
    return {str(k): str(v) for k, v in tags.items()}


def _flatten(params, parent="", delimiter="."):
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in params.items():
        name = f"{parent}{delimiter}{key}" if parent else str(key)
        if isinstance(value, dict):
            flat.update(_flatten(value, name, delimiter))
        else:
            flat[name] = value
    return flat


def _validation_limits():
    """(longest param value, params per batch) of the installed mlflow."""
    try:
        validation = importlib.import_module("mlflow.utils.validation")
    except ImportError:
        validation = None
    return (int(getattr(validation, "MAX_PARAM_VAL_LENGTH", 500)),
            int(getattr(validation, "MAX_PARAMS_TAGS_PER_BATCH", 100)))


class MlflowLogger:
    """Log a training run to MLflow (`-l mlflow`), configured by environment variables as the official logger:

    - MLFLOW_TRACKING_URI: where runs go (a server URL, `file:///path/mlruns`, `sqlite:///mlflow.db`); unset:
      mlflow's default. MLFLOW_EXPERIMENT_NAME: the experiment (created when missing); unset: mlflow's default.
    - MLFLOW_RUN_ID: log into this existing run (e.g. when resuming); MLFLOW_NESTED_RUN=True: a nested run;
      MLFLOW_TAGS: a JSON object of run tags; YOLOX_MLFLOW_RUN_NAME: the name of a new run.
    - YOLOX_MLFLOW_FLATTEN_PARAMS=True: dict settings become one param per entry (`key.sub`).
    - YOLOX_MLFLOW_LOG_MODEL_ARTIFACTS=True: upload checkpoints as artifacts: `best_ckpt.pth` (when it changed)
      every YOLOX_MLFLOW_LOG_MODEL_PER_n_EPOCHS epochs (default 30) and at the end of training, plus
      `epoch_N_ckpt.pth` then with YOLOX_MLFLOW_LOG_Nth_EPOCH_MODELS=True (needs the Exp's save_history_ckpt);
      each under `<experiment name>/<checkpoint name>/` with a metadata.json.

    Params are the Exp's plain settings and the command-line arguments (`args.<name>`); metrics are the losses
    and lr of each print interval against the iteration and the validation AP50, AP50:95 and best AP50:95 of
    each evaluation against the epoch.

    Unlike the official logger (added after release 0.3.0): the training scalars are logged at their iteration
    (the official logs them at the epoch number, so every print interval of an epoch lands on one step),
    python-dotenv is not needed, attaching to an existing run (MLFLOW_RUN_ID) with changed settings keeps the
    run's params instead of failing (MLflow params cannot change), bad environment values and an unusable
    tracking store are one-line errors, and a run that stopped early can be ended as KILLED rather than FINISHED.
    """

    def __init__(self):
        self._ml_flow = import_logger_package("mlflow")
        self._max_param_length, self._max_params_per_batch = _validation_limits()
        self._initialized = False
        self._auto_end_run = False
        self.best_ckpt_upload_pending = False

    def _read_environment(self):
        self._tracking_uri = os.getenv("MLFLOW_TRACKING_URI") or None
        self._experiment_name = os.getenv("MLFLOW_EXPERIMENT_NAME") or None
        self._run_id = os.getenv("MLFLOW_RUN_ID") or None
        self._nested_run = _env_flag("MLFLOW_NESTED_RUN")
        self._tags = _env_tags()
        self.run_name = os.getenv("YOLOX_MLFLOW_RUN_NAME") or None
        self._flatten_params = _env_flag("YOLOX_MLFLOW_FLATTEN_PARAMS")
        self._log_artifacts = _env_flag("YOLOX_MLFLOW_LOG_MODEL_ARTIFACTS")
        self._log_every_n_epochs = _env_positive_int("YOLOX_MLFLOW_LOG_MODEL_PER_n_EPOCHS", 30)
        self._log_nth_epoch_models = _env_flag("YOLOX_MLFLOW_LOG_Nth_EPOCH_MODELS")

    def setup(self, args, exp):
        """Read the environment, start (or attach to) the run and log the params; ValueError when the
        environment or the tracking store is unusable."""
        self._read_environment()
        if self._log_artifacts and self._log_nth_epoch_models and not getattr(exp, "save_history_ckpt", False):
            logger.warning("YOLOX_MLFLOW_LOG_Nth_EPOCH_MODELS needs the Exp's save_history_ckpt = True (no "
                           "epoch_N_ckpt.pth is written otherwise): only best_ckpt.pth is uploaded")
        errors = importlib.import_module("mlflow.exceptions")
        try:
            if self._tracking_uri:
                self._ml_flow.set_tracking_uri(self._tracking_uri)
            self._start_run()
            self._log_params(run_params(exp, args))
            if self._tags:
                self._ml_flow.set_tags(self._tags)
        except errors.MlflowException as e:
            where = self._tracking_uri or "mlflow's default store"
            raise ValueError(f"-l mlflow: MLflow could not set up the run at {where} ({e}); check "
                             "MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME and MLFLOW_RUN_ID") from e
        self._initialized = True

    def _start_run(self):
        if self._ml_flow.active_run() is not None and not self._nested_run and not self._run_id:
            logger.info("mlflow: logging to the run already active in this process")
            self._auto_end_run = False
            return
        if self._experiment_name and not self._run_id:
            self._ml_flow.set_experiment(self._experiment_name)
        run = self._ml_flow.start_run(run_id=self._run_id, run_name=self.run_name, nested=self._nested_run)
        self._auto_end_run = True
        logger.info(f"mlflow: run {run.info.run_id} at {self._ml_flow.get_tracking_uri()}")

    def _param_value(self, value):
        text = str(value)
        limit = self._max_param_length
        return text if len(text) <= limit else text[:limit - 3] + "..."

    def _log_params(self, params):
        """Log the params the run does not have yet, in batches; values it already has differently are kept."""
        if self._flatten_params:
            params = _flatten(params)
        values = {k: self._param_value(v) for k, v in params.items()}
        existing = self._ml_flow.get_run(self._ml_flow.active_run().info.run_id).data.params
        changed = sorted(k for k, v in values.items() if k in existing and existing[k] != v)
        if changed:
            logger.warning(f"mlflow: the run already has other values of {', '.join(changed)}; they are kept "
                           "(MLflow params cannot change: start a new run to record the new ones)")
        items = [(k, v) for k, v in values.items() if k not in existing]
        for i in range(0, len(items), self._max_params_per_batch):
            self._ml_flow.log_params(dict(items[i:i + self._max_params_per_batch]))

    def on_log(self, args, exp, step, logs):
        """Log the numbers of `logs` ({name: number or 1-element tensor}) at `step`; set up on first use."""
        if not self._initialized:
            self.setup(args, exp)
        metrics, skipped = {}, []
        for key, value in logs.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)):
                metrics[key] = float(value)
            else:
                skipped.append(key)
        if skipped:
            logger.warning(f"mlflow: {', '.join(skipped)} are not numbers and are not logged as metrics")
        self._ml_flow.log_metrics(metrics, step=int(step))

    def save_checkpoints(self, args, exp, file_name, epoch, metadata, update_best_ckpt):
        """After the checkpoints of an evaluation are saved in the folder `file_name`: with
        YOLOX_MLFLOW_LOG_MODEL_ARTIFACTS, upload them every YOLOX_MLFLOW_LOG_MODEL_PER_n_EPOCHS epochs
        (`epoch` is the 0-based index of the epoch just finished, the trainer's self.epoch)."""
        if not self._initialized or not self._log_artifacts:
            return
        if update_best_ckpt:
            self.best_ckpt_upload_pending = True
        if (epoch + 1) % self._log_every_n_epochs != 0:
            return
        self._upload_pending_best(args, file_name, metadata)
        if self._log_nth_epoch_models and getattr(exp, "save_history_ckpt", False):
            self._log_checkpoint(args, file_name, f"epoch_{epoch + 1}_ckpt", metadata)

    def _upload_pending_best(self, args, file_name, metadata):
        if self.best_ckpt_upload_pending:
            self._log_checkpoint(args, file_name, "best_ckpt", metadata)
            self.best_ckpt_upload_pending = False

    def _log_checkpoint(self, args, file_name, name, metadata):
        """Upload `<file_name>/<name>.pth` and its metadata to `<experiment name>/<name>/` of the run."""
        path = os.path.join(file_name, f"{name}.pth")
        if not os.path.isfile(path):
            logger.warning(f"mlflow: no {path} to upload")
            return
        folder = f"{args.experiment_name}/{name}"
        logger.info(f"mlflow: uploading {path} to the run's artifacts {folder}/")
        self._ml_flow.log_artifact(path, artifact_path=folder)
        if metadata:
            self._ml_flow.log_dict(dict(metadata), f"{folder}/metadata.json")

    def on_train_end(self, args, file_name, metadata, status="FINISHED"):
        """Upload a best checkpoint not uploaded yet (with YOLOX_MLFLOW_LOG_MODEL_ARTIFACTS) and end the run this
        logger started, with `status` (FINISHED, or KILLED / FAILED for a run that stopped early)."""
        if not self._initialized:
            return
        if self._log_artifacts:
            self._upload_pending_best(args, file_name, metadata)
        if self._auto_end_run and self._ml_flow.active_run() is not None:
            self._ml_flow.end_run(status=status)
        self._initialized = False
