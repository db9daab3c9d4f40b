"""The Weights & Biases logger of `-l wandb` (wandb is an optional extra, imported only when a logger is made)."""
import inspect
import os

import numpy as np
import torch
from loguru import logger

from .trackers import _as_bool, _as_literal, import_logger_package, run_params

__all__ = ["WandbLogger", "split_wandb_options", "WANDB_OPTION_PREFIX"]

WANDB_OPTION_PREFIX = "wandb-"


def split_wandb_options(opts):
    """(the other options, {key: value}) of the trailing `key value` command-line options: `wandb-<key> <value>`
    pairs are for WandbLogger, the rest for Exp.merge (an unpaired last item stays with the rest)."""
    opts = list(opts or [])
    rest, wandb_opts = [], {}
    for i in range(0, len(opts), 2):
        key = str(opts[i])
        if key.startswith(WANDB_OPTION_PREFIX) and i + 1 < len(opts):
            wandb_opts[key[len(WANDB_OPTION_PREFIX):]] = opts[i + 1]
        else:
            rest.extend(opts[i:i + 2])
    return rest, wandb_opts


class WandbLogger:
    """Log a training run to Weights & Biases (`-l wandb`): the Exp's settings as the run's config, the losses and
    the learning rate of each print interval against `train/step` (the iteration), COCO AP50 and AP50:95 of each
    evaluation against `train/epoch`, the first `num_eval_images` validation images with their predicted and
    ground-truth boxes (`val/predictions`), and, with `log_checkpoints`, the evaluated checkpoint as a model
    artifact (aliases latest, best, epoch-N).

    On the command line, `wandb-<key> <value>` pairs after the other options set the constructor's arguments
    and wandb.init's (`-l wandb wandb-project yolox wandb-name nano-run wandb-log_checkpoints True`); offline runs
    use wandb's own WANDB_MODE=offline. The wandb package is imported only here (pip install -e '.[wandb]').

    Unlike the logger of the official release 0.3.0: `wandb-name` no longer loses its leading letters (the
    official `lstrip("wandb-")` strips characters, not a prefix), option values are typed (numbers, True/False)
    instead of strings, the validation metrics are bound to `train/epoch` (the official `define_metric("val/")`
    matched nothing), losses and lr are one row per print interval (not two), the config holds plain settings
    only (not the Exp's objects), a changed config on resume is accepted, the run folder defaults to the
    experiment's output folder (unless WANDB_DIR is set), and a checkpoint is uploaded once per evaluation (not
    once per file name saved).
    """

    _STRING_OPTIONS = ("project", "name", "id", "entity", "save_dir", "dir", "group", "job_type", "notes")
    _NOT_OPTIONS = ("config", "val_dataset", "kwargs", "self")

    def __init__(self, project=None, name=None, id=None, entity=None, save_dir=None, config=None, val_dataset=None,
                 num_eval_images=100, log_checkpoints=False, **kwargs):
        """
        Args:
            project, name, id, entity: the wandb project, run name, run id (to resume a run) and entity (team).
            save_dir: folder of wandb's local run files (`<save_dir>/wandb/`); None: WANDB_DIR or the current one.
            config: dict of settings shown as the run's config.
            val_dataset: the validation dataset, for the images of `log_images`.
            num_eval_images: validation images logged per evaluation (0: none, -1: all).
            log_checkpoints: upload the checkpoints of `save_checkpoint` as model artifacts.
            **kwargs: more wandb.init arguments (group, tags, mode, notes, ...).
        """
        self.wandb = import_logger_package("wandb")
        self.project, self.name, self.id, self.entity = project, name, id, entity
        self.save_dir = save_dir
        self.config = config
        self.kwargs = kwargs
        self.log_checkpoints = _as_bool(log_checkpoints, "log_checkpoints")
        if save_dir is not None:
            os.makedirs(save_dir, exist_ok=True)
        self._wandb_init = dict(project=project, name=name, id=id, entity=entity, dir=save_dir, resume="allow")
        self._wandb_init.update(kwargs)
        self._run = None
        _ = self.run
        if config:
            self.run.config.update(config, allow_val_change=True)
        self._define_metrics()
        self.val_dataset, self.num_log_images, self.class_labels = None, 0, {}
        self._set_eval_images(val_dataset, num_eval_images)

    @property
    def run(self):
        """The wandb run, started on first use (a run already started in this process is reused)."""
        if self._run is None:
            if self.wandb.run is not None:
                logger.info("a wandb run is already in progress: WandbLogger logs to it (call wandb.finish() before "
                            "to start a new one)")
                self._run = self.wandb.run
            else:
                self._run = self._start_run()
        return self._run

    def _start_run(self):
        try:
            return self.wandb.init(**self._wandb_init)
        except self.wandb.errors.Error as e:
            raise ValueError(f"-l wandb: wandb could not start the run ({e}); run `wandb login`, or set "
                             "WANDB_MODE=offline to keep the run on this machine") from e

    def _define_metrics(self):
        """Losses and lr against the iteration, validation scores and images against the epoch."""
        self.run.define_metric("train/step")
        self.run.define_metric("train/epoch")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("val/*", step_metric="train/epoch")

    @classmethod
    def initialize_from_args(cls, args, exp, val_dataset=None):
        """The logger of a `-l wandb` command line: the `wandb-<key> <value>` pairs of args.opts, the Exp's and
        the arguments' settings as config; wandb's files go to the experiment's output folder unless
        `wandb-save_dir` or WANDB_DIR says otherwise."""
        options = cls.options_from(getattr(args, "opts", None))
        if "save_dir" not in options and "dir" not in options and not os.environ.get("WANDB_DIR"):
            options["save_dir"] = os.path.join(exp.output_dir, args.experiment_name)
        return cls(config=run_params(exp, args), val_dataset=val_dataset, **options)

    @classmethod
    def options_from(cls, opts):
        """{argument: typed value} of the `wandb-<key> <value>` command-line pairs; ValueError names a key that
        neither this class nor wandb.init takes, or a value of the wrong kind."""
        _, raw = split_wandb_options(opts)
        if not raw:
            return {}
        wandb = import_logger_package("wandb")
        known = set(inspect.signature(cls.__init__).parameters) | set(inspect.signature(wandb.init).parameters)
        known -= set(cls._NOT_OPTIONS)
        options = {}
        for key, value in raw.items():
            if key not in known:
                raise ValueError(
                    f"{WANDB_OPTION_PREFIX}{key}: neither WandbLogger nor wandb.init takes {key!r}; valid keys: "
                    f"{', '.join(sorted(known))} (e.g. wandb-project yolox wandb-name run1 wandb-log_checkpoints True)"
                )
            options[key] = cls._typed_option(key, str(value))
        return options

    @classmethod
    def _typed_option(cls, key, value):
        if key in cls._STRING_OPTIONS:
            return value
        if key == "num_eval_images":
            try:
                return int(value)
            except ValueError:
                raise ValueError(
                    f"wandb-num_eval_images takes a whole number (0: none, -1: all); got {value!r}"
                ) from None
        if key == "log_checkpoints":
            return _as_bool(value, "wandb-log_checkpoints")
        if key == "tags":
            return [t.strip() for t in value.split(",") if t.strip()]
        return _as_literal(value)

    # ---------------------------------------------------------------------------------------- logging
    def log_metrics(self, metrics, step=None):
        """Log a dict of scalars (tensors are turned into numbers); `step` is recorded as `train/step`."""
        row = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        if step is not None:
            row["train/step"] = step
        self.run.log(row)

    def _set_eval_images(self, val_dataset, num_eval_images):
        """Keep the dataset and class names for log_images, when the dataset can give them."""
        num = int(num_eval_images)
        if val_dataset is None or num == 0:
            return
        class_ids = getattr(val_dataset, "class_ids", None)
        if class_ids is None or not callable(getattr(val_dataset, "pull_item", None)):
            logger.info(f"wandb: no validation images ({type(val_dataset).__name__} has no class_ids/pull_item)")
            return
        self.val_dataset = val_dataset
        self.num_log_images = len(val_dataset) if num < 0 else min(num, len(val_dataset))
        names = list(getattr(val_dataset, "_classes", None) or [str(c) for c in class_ids])
        cats = getattr(val_dataset, "cats", None) or [{"id": c, "name": n} for c, n in zip(class_ids, names)]
        self.class_labels = {int(c["id"]): str(c["name"]) for c in cats}

    def log_images(self, predictions):
        """Log the first num_eval_images validation images as `val/predictions`, with two box sets: the
        predictions and the ground truth. `predictions` is the evaluator's per-image output (return_outputs=True):
        COCO's {image id: {"bboxes", "scores", "categories"}} or VOC's {index: (boxes, classes, scores)}, boxes
        x1y1x2y2 in original-image pixels."""
        if self.num_log_images == 0 or predictions is None:
            return
        images = [self._eval_image(i, predictions) for i in range(self.num_log_images)]
        self.run.log({"val/predictions": images})

    def _eval_image(self, index, predictions):
        img, labels, (height, width), ids = self.val_dataset.pull_item(index)
        img_id = int(np.asarray(ids).reshape(-1)[0])
        class_ids = self.val_dataset.class_ids
        predicted = [
            self._box(box, int(cat), height, width, score)
            for box, cat, score in zip(*_image_detections(predictions.get(img_id), class_ids))
        ]
        truth = [self._box(row[:4], int(class_ids[int(row[4])]), height, width) for row in np.asarray(labels)]
        boxes = {
            "predictions": {"box_data": predicted, "class_labels": self.class_labels},
            "ground_truth": {"box_data": truth, "class_labels": self.class_labels},
        }
        return self.wandb.Image(np.ascontiguousarray(img[:, :, ::-1]), boxes=boxes, caption=f"image id {img_id}")

    def _box(self, xyxy, category, height, width, score=None):
        """A wandb box in fractions of the image (the logged image may be a resized copy)."""
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        box = {
            "position": {"minX": _fraction(x1, width), "maxX": _fraction(x2, width),
                         "minY": _fraction(y1, height), "maxY": _fraction(y2, height)},
            "class_id": category,
            "box_caption": self.class_labels.get(category, str(category)),
        }
        if score is not None:
            box["scores"] = {"score": float(score)}
            box["box_caption"] += f" {float(score):.2f}"
        return box

    def save_checkpoint(self, save_dir, model_name, is_best, metadata=None):
        """With log_checkpoints, upload `<save_dir>/<model_name>_ckpt.pth` as a version of the model artifact
        `model-<run id>`, aliased latest, best when is_best, and epoch-N when metadata has "epoch"."""
        if not self.log_checkpoints:
            return
        metadata = dict(metadata or {})
        artifact = self.wandb.Artifact(name=f"model-{self.run.id}", type="model", metadata=metadata)
        artifact.add_file(os.path.join(save_dir, f"{model_name}_ckpt.pth"), name="model_ckpt.pth")
        aliases = ["latest"] + (["best"] if is_best else [])
        if "epoch" in metadata:
            aliases.append(f"epoch-{metadata['epoch']}")
        self.run.log_artifact(artifact, aliases=aliases)

    def finish(self, exit_code=None):
        """End the run (exit_code 1 marks it failed); nothing when it was never started."""
        if self._run is not None:
            self._run.finish(exit_code=exit_code)
            self._run = None


def _image_detections(output, class_ids):
    """(boxes, category ids, scores) of one image's evaluator output: COCO's dict, VOC's (boxes, classes, scores)
    tuple (classes as indices into class_ids), or None (nothing detected)."""
    if output is None:
        return [], [], []
    if isinstance(output, dict):
        return output["bboxes"], output["categories"], output["scores"]
    boxes, classes, scores = output
    return list(boxes), [class_ids[int(c)] for c in classes], list(scores)


def _fraction(value, size):
    return min(max(value / max(float(size), 1.0), 0.0), 1.0)
