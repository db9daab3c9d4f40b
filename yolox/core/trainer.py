"""The Trainer: the official YOLOX training loop (EMA, warm cosine lr, multi-scale, close-mosaic/L1 phase,
evaluation and checkpoints), with exact resume, atomic checkpoints, a finite-loss guard, a clean Ctrl-C and a
per-stage profile.

Hooks keep the official names (before_train, before_epoch, before_iter, train_one_iter, after_iter, after_epoch,
after_train, resume_train, evaluate_and_save_model, save_ckpt) so that users' Trainer subclasses keep working.
"""
import datetime
import inspect
import json
import os
import random
import signal
import threading
import time

import torch
import torch.distributed as dist
from loguru import logger
from torch.nn.parallel import DistributedDataParallel as DDP

from yolox.data import DataPrefetcher
from yolox.exp import mismatch_hint
from yolox.utils import (
    CheckpointError,
    CheckpointMismatchError,
    MatplotlibMissing,
    MeterBuffer,
    MlflowLogger,
    ModelEMA,
    WandbLogger,
    adjust_status,
    all_reduce_norm,
    atomic_save,
    check_fits,
    get_local_rank,
    get_model_info,
    get_rank,
    get_rng_states,
    get_world_size,
    gpu_mem_usage,
    is_parallel,
    load_checkpoint_file,
    mem_usage,
    mix_seed,
    occupy_mem,
    plot_training_curve,
    set_rng_states,
    setup_logger,
    state_dict_from_checkpoint,
    synchronize,
)
from yolox.utils.heap import keep_image_buffers_in_heap

from .stage_profile import NullClock, StageClock, profile_table, stage_hooks
from .step import LOSS_KEYS, NonFiniteLossError, TrainStep, cpu_has_native_bfloat16
from .time_budget import TimeBudget

__all__ = ["Trainer", "TrainingInterrupted", "NonFiniteLossError", "PROFILE_WARMUP_ITERS", "METRICS_FILE"]

PROFILE_WARMUP_ITERS = 5
# one JSON object per logged iteration and per evaluation, appended by rank 0 beside train_log.txt: the same numbers
# as the log lines, at full precision, for curves and scripts
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "training_curve.png"  # drawn from METRICS_FILE at the end of training (matplotlib)


class TrainingInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped training between two iterations; `latest_ckpt.pth` holds the state to resume."""


class _StopRequest:
    """SIGINT/SIGTERM handler: the first signal asks for a stop after the current iteration, a second one raises
    KeyboardInterrupt at once. Installed only in the main thread, and the previous handlers come back after."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stop requested: finishing this iteration and saving latest_ckpt.pth (again to stop now)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False


def _unwrap(model):
    return model.module if is_parallel(model) else model


class Trainer:
    def __init__(self, exp, args):
        self.exp = exp
        self.args = args

        self.max_epoch = exp.max_epoch
        self.is_distributed = get_world_size() > 1
        self.rank = get_rank()
        self.local_rank = get_local_rank()
        self.device = torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        self.amp_training = bool(getattr(args, "fp16", False))
        # --fp16 without CUDA: bfloat16 autocast where the CPU has bfloat16 in hardware; elsewhere float32, as the
        # official --fp16 does on a CPU (its CUDA autocast does nothing there)
        self._fp16_ignored = self.amp_training and self.device.type == "cpu" and not cpu_has_native_bfloat16()
        if self._fp16_ignored:
            self.amp_training = False
        self.scaler = _grad_scaler(enabled=self.amp_training and self.device.type == "cuda")
        self.use_model_ema = exp.ema
        self.save_history_ckpt = exp.save_history_ckpt
        self._finished = False  # every epoch ran (the curve is drawn then, not after a stop or an error)

        # float16 batches on CUDA as officially; the CPU's bfloat16 autocast takes float32 inputs
        self.data_type = torch.float16 if self.amp_training and self.device.type == "cuda" else torch.float32
        self.input_size = tuple(exp.input_size)
        self.best_ap = 0.0
        self.curr_ap = 0.0
        self.start_iter = 0  # iteration within start_epoch to begin at (a run resumed mid-epoch)
        self.data_seed = None
        self.profile_iters = int(getattr(args, "profile", 0) or 0)
        self.clock = NullClock()
        self.stop_request = _StopRequest()
        self._agreed_stop = False
        self.tblogger = None
        self.wandb_logger = None  # -l wandb (rank 0)
        self.mlflow_logger = None  # -l mlflow (rank 0)

        # Exp.max_train_minutes (this project): max_epoch is lowered to what fits that wall-clock budget
        self.train_start_time = getattr(args, "start_time", None) or time.time()
        minutes = getattr(exp, "max_train_minutes", None)
        self.time_budget = TimeBudget(float(minutes)) if minutes else None
        self._max_epoch_asked = exp.max_epoch  # the budget's ceiling
        self._epoch_start_time = None

        self.meter = MeterBuffer(window_size=exp.print_interval)
        self.file_name = os.path.join(exp.output_dir, args.experiment_name)
        if self.rank == 0:
            make_output_dir(self.file_name)
        synchronize()
        setup_logger(self.file_name, distributed_rank=self.rank, filename="train_log.txt", mode="a")

    # ------------------------------------------------------------------------------------------ the loop
    def train(self):
        self.before_train()
        try:
            with self.stop_request:
                self.train_in_epoch()
        except _ProfileDone:
            pass
        finally:
            self.after_train()

    def train_in_epoch(self):
        self.epoch = self.start_epoch
        while self.epoch < self.max_epoch:  # max_epoch may change on the way (max_train_minutes)
            self.before_epoch()
            self.train_in_iter()
            self.after_epoch()
            if self.epoch + 1 >= self.max_epoch:
                break  # self.epoch stays the last epoch trained (0-based), as after a for loop
            self.epoch += 1
        self._finished = True

    def train_in_iter(self):
        first = self.start_iter if self.epoch == self.start_epoch else 0
        for self.iter in range(first, self.max_iter):
            self.before_iter()
            self.train_one_iter()
            self.after_iter()

    def train_one_iter(self):
        iter_start_time = time.time()
        self.clock.start()

        inps, targets = self.prefetcher.next()
        self.clock.mark("data wait")
        inps = inps.to(self.data_type)
        targets = targets.to(self.data_type)
        targets.requires_grad = False
        inps, targets = self.exp.preprocess(inps, targets, self.input_size)
        data_end_time = time.time()
        self.clock.mark("preprocessing/resize")

        values = self.step(inps, targets)

        lr = self.lr_scheduler.update_lr(self.progress_in_iter + 1)
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr

        iter_end_time = time.time()
        self.meter.update(iter_time=iter_end_time - iter_start_time, data_time=data_end_time - iter_start_time, lr=lr,
                          **values)

    def _check_step(self, values):
        """Before backward: stop every rank together on a non-finite loss or a stop request (one all-reduce)."""
        not_finite = not all(map(_finite, values.values()))
        stop = self.stop_request.requested
        if self.is_distributed:
            flags = torch.tensor([float(not_finite), float(stop)], device=self._collective_device())
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            not_finite, stop = bool(flags[0].item()), bool(flags[1].item())
        # only the agreed value decides (a signal arriving after the all-reduce waits for the next one)
        self._agreed_stop = stop
        if not_finite:
            terms = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            where = f"epoch {self.epoch + 1}/{self.max_epoch}, iter {self.iter + 1}/{self.max_iter}"
            raise NonFiniteLossError(
                f"the loss is not finite at {where} ({terms}){'' if self.rank == 0 else ' on some rank'}; training "
                f"stopped and the last checkpoint in {self.file_name} was kept. Lower basic_lr_per_img or raise "
                "warmup_epochs, and check the labels of the data."
            )

    # ------------------------------------------------------------------------------------------ set-up
    def before_train(self):
        logger.info("args: {}".format(self.args))
        logger.info("exp value:\n{}".format(self.exp))
        if self.amp_training and self.device.type != "cuda":
            logger.info("--fp16 on the CPU: bfloat16 autocast, no GradScaler (float16 mixed precision needs CUDA)")
        if self._fp16_ignored:
            logger.info("--fp16 on a CPU without bfloat16 in hardware (AVX512-BF16 or AMX): training in float32, where "
                        "emulated bfloat16 would be slower")

        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        model = self.exp.get_model()
        if callable(getattr(self.exp, "apply_memory_format", None)):
            model = self.exp.apply_memory_format(model)  # also for an Exp whose own get_model does not
        logger.info("Model Summary: {}".format(get_model_info(model, self.exp.test_size)))
        model.to(self.device)

        self.optimizer = self.exp.get_optimizer(self.args.batch_size)
        ckpt = self.resume_train(model)

        self.no_aug = self.start_epoch >= self.max_epoch - self.exp.no_aug_epochs
        self.train_loader = self.exp.get_data_loader(
            batch_size=self.args.batch_size,
            is_distributed=self.is_distributed,
            no_aug=self.no_aug,
            cache_img=getattr(self.args, "cache", None),
        )
        if getattr(self.train_loader, "num_workers", 0) == 0:
            keep_image_buffers_in_heap()  # this process builds the samples itself (see yolox.utils.heap)
        self.max_iter = len(self.train_loader)
        if self.exp.print_interval > self.max_iter:
            logger.warning(
                f"print_interval {self.exp.print_interval} is above the {self.max_iter} iterations of an epoch (batch "
                f"{self.args.batch_size} over {get_world_size()} process(es)): no progress line, and no loss in "
                f"metrics.jsonl or the training curve; set print_interval to {self.max_iter} or less"
            )
        self._check_class_count()
        self._align_resume_with_loader(ckpt)
        self.lr_scheduler = self.exp.get_lr_scheduler(self.exp.basic_lr_per_img * self.args.batch_size, self.max_iter)
        if getattr(self.args, "occupy", False):
            if self.device.type == "cuda":
                occupy_mem(self.local_rank)
            else:
                logger.info("-o/--occupy reserves GPU memory; ignored on the CPU")

        if self.is_distributed:
            device_ids = [self.local_rank] if self.device.type == "cuda" else None
            model = DDP(model, device_ids=device_ids, **_rank_local_buffers())

        if self.use_model_ema:
            self.ema_model = ModelEMA(model, getattr(self.exp, "ema_decay", 0.9998),
                                      ramp_updates=getattr(self.exp, "ema_ramp_updates", 2000))
            if ckpt is not None and "raw_model" in ckpt:
                self.ema_model.ema.load_state_dict(ckpt["model"])
                self.ema_model.updates = int(ckpt.get("ema_updates", self.max_iter * self.start_epoch))
            else:  # a fresh run, or an official checkpoint (its "model" is the EMA): the official rebuild
                self.ema_model.updates = self.max_iter * self.start_epoch + self.start_iter
        self.model = model
        self.step = TrainStep(self.model, self.optimizer, self.scaler, self.ema_model if self.use_model_ema else None,
                              self.device, self.amp_training, check=self._check_step)

        self.evaluator = self.exp.get_evaluator(batch_size=self.args.batch_size, is_distributed=self.is_distributed)
        self._setup_loggers()
        if self.profile_iters > 0:
            self.clock = StageClock(self.device)
            self.step.clock = self.clock
            self._profile_hooks = stage_hooks(self.model, self.clock)
            self._profile_hooks.__enter__()
            logger.info(f"profiling {self.profile_iters} iterations after {PROFILE_WARMUP_ITERS} of warm-up")

        self._start_data_stream(self.start_epoch * self.max_iter + self.start_iter)
        if ckpt is not None and "rng" in ckpt:
            set_rng_states(ckpt["rng"])
        logger.info("Training start...")
        logger.info("\n{}".format(_unwrap(model)))

    def _check_class_count(self):
        """A COCO-format training set must have exactly the Exp's num_classes categories."""
        dataset = getattr(self.train_loader, "dataset", None)
        dataset = getattr(dataset, "_dataset", dataset)  # the set inside MosaicDetection
        class_ids = getattr(dataset, "class_ids", None)
        if class_ids is not None and len(class_ids) != self.exp.num_classes:
            raise ValueError(
                f"{getattr(dataset, 'ann_path', 'the training set')} has {len(class_ids)} categories but the Exp has "
                f"num_classes = {self.exp.num_classes}; set `self.num_classes = {len(class_ids)}` in the Exp file or "
                f"add `num_classes {len(class_ids)}` to the command line"
            )

    def _setup_loggers(self):
        """The -l logger on rank 0: tensorboard, wandb (options from `wandb-<key> <value>`) or mlflow (environment
        variables)."""
        self._setup_tensorboard()
        choice = getattr(self.args, "logger", None)
        if self.rank != 0 or choice not in ("wandb", "mlflow"):
            return
        if choice == "wandb":
            self.wandb_logger = WandbLogger.initialize_from_args(self.args, self.exp, self.evaluator.dataloader.dataset)
        else:
            self.mlflow_logger = MlflowLogger()
            self.mlflow_logger.setup(args=self.args, exp=self.exp)

    def _setup_tensorboard(self):
        if self.rank != 0 or getattr(self.args, "logger", None) != "tensorboard":
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if getattr(self.args, "logger_explicit", True):
                raise ValueError(
                    "-l tensorboard needs the tensorboard package: pip install -e '.[tensorboard]' "
                    "(or pip install tensorboard), or leave out -l"
                ) from None
            logger.info("tensorboard is not installed: no tensorboard/ scalars (pip install -e '.[tensorboard]')")
            return
        self.tblogger = SummaryWriter(os.path.join(self.file_name, "tensorboard"))

    def _train_sampler(self):
        """The loader's InfiniteSampler (anything with set_start), or None for a custom sampler."""
        batch_sampler = getattr(self.train_loader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", None)
        return sampler if callable(getattr(sampler, "set_start", None)) else None

    def _batch_per_rank(self):
        batch_sampler = getattr(self.train_loader, "batch_sampler", None)
        return int(getattr(batch_sampler, "batch_size", None) or self.args.batch_size // get_world_size())

    def _start_data_stream(self, progress):
        """(Re)start the loader at iteration `progress` of the run: its data is a function of the seed and of that
        position only."""
        sampler = self._train_sampler()
        if sampler is not None:
            if self.data_seed is None:
                seed = getattr(self.exp, "seed", None)
                self.data_seed = seed if seed is not None else self._shared_random_seed()
            sampler.set_seed(self.data_seed)
            sampler.set_start(progress * self._batch_per_rank())
        elif progress > 0 and not getattr(self, "_warned_sampler", False):
            self._warned_sampler = True
            logger.warning("the Exp's train loader has no InfiniteSampler: a resumed run sees other data than the "
                           "uninterrupted run would have")
        epoch = progress // max(self.max_iter, 1)
        generator = torch.Generator()
        generator.manual_seed(mix_seed(self.data_seed or 0, epoch, self.rank))
        self.train_loader.generator = generator  # worker seeds from (seed, epoch, global rank) + worker id
        logger.info("init prefetcher, this might take one minute or less...")
        self.prefetcher = DataPrefetcher(self.train_loader, self.device)

    def _shared_random_seed(self):
        """A random seed drawn on rank 0 and given to every rank (the Exp has seed None)."""
        seed = torch.tensor([random.SystemRandom().randrange(2**62)], dtype=torch.int64,
                            device=self._collective_device())
        if self.is_distributed:
            dist.broadcast(seed, 0)
        return int(seed.item())

    def _collective_device(self):
        return self.device if self.is_distributed and dist.get_backend() == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------------------------------ epochs and iterations
    def after_train(self):
        if getattr(self, "_profile_hooks", None) is not None:
            self._profile_hooks.__exit__(None, None, None)
            self._profile_hooks = None
        if self.tblogger is not None:
            self.tblogger.close()
        self._finish_loggers()
        if self._finished and self.rank == 0:
            self._draw_training_curve()
        logger.info("Training of experiment is done and the best AP is {:.2f}".format(self.best_ap * 100))

    def _draw_training_curve(self):
        metrics = os.path.join(self.file_name, METRICS_FILE)
        if not os.path.isfile(metrics):
            return
        out = os.path.join(self.file_name, CURVE_FILE)
        try:
            plot_training_curve(metrics, out, title=f"{self.args.experiment_name}: best AP50:95 {self.best_ap:.3f}")
        except MatplotlibMissing as e:
            logger.info(f"no {CURVE_FILE}: {e}")
            return
        logger.info(f"training curve: {out}")

    def before_epoch(self):
        logger.info("---> start train epoch{}".format(self.epoch + 1))
        self._epoch_start_time = time.time()
        if self.epoch + 1 == self.max_epoch - self.exp.no_aug_epochs or self.no_aug:
            logger.info("--->No mosaic aug now!")
            self.train_loader.close_mosaic()
            logger.info("--->Add additional L1 loss now!")
            _unwrap(self.model).head.use_l1 = True
            self.exp.eval_interval = 1
            if not self.no_aug:
                # batches already made with mosaic are dropped: the stream restarts here without it
                first = self.epoch * self.max_iter + (self.start_iter if self.epoch == self.start_epoch else 0)
                self._start_data_stream(first)
                self.save_ckpt(ckpt_name="last_mosaic_epoch", next_iteration=first)

    def after_epoch(self):
        evaluated = (self.epoch + 1) % self.exp.eval_interval == 0
        eval_start = time.time()
        if evaluated:
            all_reduce_norm(self.model)
            if self.use_model_ema:
                all_reduce_norm(self.ema_model.ema)
            self.evaluate_and_save_model()
        else:
            self.save_ckpt(ckpt_name="latest")
        if self.time_budget is not None and self._epoch_start_time is not None:
            now = time.time()
            if evaluated:
                self.time_budget.record_eval(now - eval_start)
            self.time_budget.record_epoch(eval_start - self._epoch_start_time)
            self._fit_to_time_budget(now)

    def _fit_to_time_budget(self, now):
        """Lower max_epoch (and the lr schedule with it) to what fits Exp.max_train_minutes (rank 0 decides)."""
        exp = self.exp
        new_max = self.time_budget.plan(now - self.train_start_time, self.epoch + 1, self.max_epoch,
                                        self._max_epoch_asked, exp.warmup_epochs, exp.eval_interval,
                                        exp.no_aug_epochs)
        if self.is_distributed:
            decided = torch.tensor([float(new_max or 0)], device=self._collective_device())
            dist.broadcast(decided, 0)
            new_max = int(decided.item()) or None
        if new_max is None or new_max == self.max_epoch:
            return
        epoch_s, eval_s = self.time_budget.estimate()
        logger.info(
            f"max_train_minutes {self.time_budget.minutes:g}: {(now - self.train_start_time) / 60:.1f} min so far, "
            f"{epoch_s:.1f} s per epoch and {eval_s:.1f} s per evaluation here: max_epoch {self.max_epoch} -> "
            f"{new_max} ({new_max * self.max_iter} iterations)"
        )
        self.max_epoch = exp.max_epoch = new_max
        self.lr_scheduler = exp.get_lr_scheduler(exp.basic_lr_per_img * self.args.batch_size, self.max_iter)

    def before_iter(self):
        if self._agreed_stop:
            self.save_ckpt(ckpt_name="latest", next_iteration=self.progress_in_iter)
            raise TrainingInterrupted(
                f"training stopped before epoch {self.epoch + 1}, iter {self.iter + 1}; resume with --resume "
                f"(the state is in {os.path.join(self.file_name, 'latest_ckpt.pth')})"
            )
        if self.profile_iters > 0:
            done = self.progress_in_iter - (self.start_epoch * self.max_iter + self.start_iter)
            self.clock.recording = PROFILE_WARMUP_ITERS <= done < PROFILE_WARMUP_ITERS + self.profile_iters

    def after_iter(self):
        if (self.iter + 1) % self.exp.print_interval == 0:
            self._log_progress()
            self.meter.clear_meters()

        # random resizing
        if (self.progress_in_iter + 1) % 10 == 0:
            self.input_size = self.exp.random_resize(self.train_loader, self.epoch, self.rank, self.is_distributed)
        self.clock.end_iteration()
        if self.profile_iters > 0 and self.clock.iterations >= self.profile_iters:
            self._report_profile()

    def _log_progress(self):
        left_iters = self.max_iter * self.max_epoch - (self.progress_in_iter + 1)
        eta_seconds = self.meter["iter_time"].global_avg * left_iters
        eta_str = "ETA: {}".format(datetime.timedelta(seconds=int(eta_seconds)))
        progress_str = "epoch: {}/{}, iter: {}/{}".format(self.epoch + 1, self.max_epoch, self.iter + 1, self.max_iter)
        loss_meter = {k: self.meter[k] for k in LOSS_KEYS if k in self.meter}
        loss_str = ", ".join("{}: {:.1f}".format(k, v.latest) for k, v in loss_meter.items())
        time_meter = self.meter.get_filtered_meter("time")
        time_str = ", ".join("{}: {:.3f}s".format(k, v.avg) for k, v in time_meter.items())
        gpu_mb, rss_gb = gpu_mem_usage(), mem_usage()
        mem_str = "gpu mem: {:.0f}Mb, mem: {:.1f}Gb".format(gpu_mb, rss_gb)
        logger.info(
            "{}, {}, {}, {}, lr: {:.3e}".format(progress_str, mem_str, time_str, loss_str, self.meter["lr"].latest)
            + ", size: {:d}, {}".format(self.input_size[0], eta_str)
        )
        step = self.progress_in_iter + 1
        record = {"iteration": step, "epoch": self.epoch + 1, "lr": self.meter["lr"].latest,
                  **{k: v.latest for k, v in loss_meter.items()},
                  **{k: v.avg for k, v in time_meter.items()}, "size": self.input_size[0], "rss_gb": rss_gb,
                  "gpu_mem_mb": gpu_mb}
        self._write_metrics(record)
        scalars = {"train/lr": self.meter["lr"].latest, **{f"train/{k}": v.latest for k, v in loss_meter.items()}}
        if self.tblogger is not None:
            for k, v in scalars.items():
                self.tblogger.add_scalar(k, v, step)
        if self.wandb_logger is not None:
            self.wandb_logger.log_metrics(scalars, step=step)
        if self.mlflow_logger is not None:
            self.mlflow_logger.on_log(self.args, self.exp, step, scalars)

    def _write_metrics(self, record):
        if self.rank != 0:
            return
        with open(os.path.join(self.file_name, METRICS_FILE), "a") as f:
            f.write(json.dumps(record) + "\n")

    def _report_profile(self):
        title = (f"per-stage profile: {self.clock.iterations} iterations after {PROFILE_WARMUP_ITERS} of warm-up, "
                 f"batch {self._batch_per_rank()} per process, size {self.input_size}, "
                 f"simota_mode {getattr(_unwrap(self.model).head, 'simota_mode', '-')}, device {self.device}")
        logger.info("\n" + profile_table(self.clock.per_iteration_ms(), title))
        self.profile_iters = 0
        self.clock = NullClock()
        self.step.clock = self.clock
        raise _ProfileDone()

    @property
    def progress_in_iter(self):
        return self.epoch * self.max_iter + self.iter

    # ------------------------------------------------------------------------------------------ checkpoints
    def resume_train(self, model):
        """Load the run to resume (--resume) or the weights to fine-tune from (-c); returns the checkpoint or None."""
        self.start_epoch = 0
        if getattr(self.args, "resume", False):
            ckpt_file = self.args.ckpt or os.path.join(self.file_name, "latest_ckpt.pth")
            if not os.path.isfile(ckpt_file):
                raise FileNotFoundError(
                    f"--resume found no checkpoint at {ckpt_file}: train without --resume to start afresh, or give "
                    "the checkpoint to resume with -c (and the experiment name with -expn)"
                )
            logger.info(f"resume training from {ckpt_file}")
            ckpt = load_checkpoint_file(ckpt_file, map_location=self.device)
            weights = ckpt.get("raw_model") or state_dict_from_checkpoint(ckpt, ckpt_file)
            if "raw_model" not in ckpt:
                logger.warning(f"{ckpt_file} holds only the EMA weights (an official or older checkpoint): training "
                               "continues from them, so the resumed run is close to, not equal to, the original")
            _check_fits(model, weights, ckpt_file)
            model.load_state_dict(weights)
            if "optimizer" in ckpt:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            if "scaler" in ckpt and self.scaler.is_enabled():
                self.scaler.load_state_dict(ckpt["scaler"])
            self.best_ap = float(ckpt.get("best_ap", 0.0))
            self.curr_ap = float(ckpt.get("curr_ap", 0.0))
            self.data_seed = ckpt.get("data_seed")
            if ckpt.get("input_size") is not None:
                self.input_size = tuple(int(v) for v in ckpt["input_size"])
            if self.time_budget is not None:
                # the time already spent, and the schedule the budget fitted (unless this command asks for another
                # max_epoch than the run did), carry over
                self.train_start_time = time.time() - float(ckpt.get("train_seconds", 0.0))
                if ckpt.get("max_epoch") is not None and ckpt.get("max_epoch_asked") == self.max_epoch:
                    self.max_epoch = self.exp.max_epoch = int(ckpt["max_epoch"])
            if self.args.start_epoch is not None:
                self.start_epoch = self.args.start_epoch - 1
                ckpt.pop("iteration", None)  # -e: from the start of that epoch
            else:
                self.start_epoch = int(ckpt.get("start_epoch", 0))
            logger.info(f"loaded checkpoint '{ckpt_file}' (epoch {self.start_epoch})")
            return ckpt
        if self.args.ckpt is not None:
            logger.info("loading checkpoint for fine tuning")
            self._load_for_fine_tuning(model, self.args.ckpt)
        return None

    def _load_for_fine_tuning(self, model, ckpt_file):
        """Load the checkpoint's weights where names and shapes fit; skip the class-prediction tensors of another
        class count (one log line), and refuse a checkpoint of another model size."""
        state_dict = state_dict_from_checkpoint(load_checkpoint_file(ckpt_file, map_location=self.device), ckpt_file)
        model_sd = model.state_dict()
        other_shape = [k for k, v in state_dict.items() if k in model_sd and v.shape != model_sd[k].shape]
        structural = [k for k in other_shape if ".cls_preds." not in k]
        if structural or not any(k in model_sd for k in state_dict):
            _check_fits(model, state_dict, ckpt_file)  # raises with the details
        kept = {k: v for k, v in state_dict.items() if k in model_sd and k not in other_shape}
        missing = [k for k in model_sd if k not in kept]
        if other_shape:
            logger.info(f"fine-tuning: {len(other_shape)} tensors of another shape left as initialised "
                        f"(another class count): {', '.join(other_shape)}")
        if missing and len(missing) > len(other_shape):
            logger.warning(f"fine-tuning: {len(missing) - len(other_shape)} model tensors are not in {ckpt_file} "
                           f"(e.g. {[k for k in missing if k not in other_shape][0]})")
        model.load_state_dict(kept, strict=False)

    def _align_resume_with_loader(self, ckpt):
        """The iteration to resume at, now that the epoch length is known (mid-epoch checkpoints of Ctrl-C)."""
        self.start_iter = 0
        if ckpt is None or "iteration" not in ckpt:
            return
        if int(ckpt.get("iters_per_epoch", -1)) != self.max_iter:
            logger.warning(f"the checkpoint was written with {ckpt.get('iters_per_epoch')} iterations per epoch and "
                           f"this run has {self.max_iter} (batch size or data changed): resuming at epoch "
                           f"{self.start_epoch + 1} from its first iteration")
            return
        epoch, it = divmod(int(ckpt["iteration"]), self.max_iter)
        self.start_epoch, self.start_iter = epoch, it

    def evaluate_and_save_model(self):
        evalmodel = self.ema_model.ema if self.use_model_ema else _unwrap(self.model)
        ap50_95, ap50, summary, predictions = self._evaluate(evalmodel)
        if self.is_distributed:  # rank 0 scored: everyone takes its numbers, so that "best" is the same everywhere
            scores = torch.tensor([ap50_95, ap50], dtype=torch.float64, device=self._collective_device())
            dist.broadcast(scores, 0)
            ap50_95, ap50 = scores.tolist()
        update_best_ckpt = ap50_95 > self.best_ap
        self.best_ap = max(self.best_ap, ap50_95)
        self.curr_ap = ap50_95

        if self.rank == 0:
            if self.tblogger is not None:
                self.tblogger.add_scalar("val/COCOAP50", ap50, self.epoch + 1)
                self.tblogger.add_scalar("val/COCOAP50_95", ap50_95, self.epoch + 1)
            self._log_evaluation(ap50_95, ap50, predictions)
            logger.info("\n" + (summary or ""))
            logger.info(f"Evaluation at epoch {self.epoch + 1}/{self.max_epoch}, iteration "
                        f"{self.progress_in_iter + 1}: AP50:95 {ap50_95:.4f}, AP50 {ap50:.4f}, "
                        f"best AP50:95 {self.best_ap:.4f}")
            self._write_metrics({"iteration": self.progress_in_iter + 1, "epoch": self.epoch + 1,
                                 "AP50_95": ap50_95, "AP50": ap50})
        synchronize()

        self.save_ckpt("latest")
        self.save_ckpt("last_epoch", update_best_ckpt)
        if self.save_history_ckpt:
            self.save_ckpt(f"epoch_{self.epoch + 1}")
        self._log_checkpoint_artifacts(update_best_ckpt)

    def _evaluate(self, evalmodel):
        """(AP50:95, AP50, summary, per-image outputs or None): the outputs only when wandb logs images."""
        with_outputs = self.wandb_logger is not None and self.wandb_logger.num_log_images > 0
        with adjust_status(evalmodel, training=False):
            if not with_outputs:
                return (*self.exp.eval(evalmodel, self.evaluator, self.is_distributed), None)
            (ap50_95, ap50, summary), outputs = self.exp.eval(evalmodel, self.evaluator, self.is_distributed,
                                                              return_outputs=True)
        return ap50_95, ap50, summary, outputs

    def _log_evaluation(self, ap50_95, ap50, predictions):
        """The validation scores (and images) of this epoch to wandb or mlflow."""
        scores = {"val/COCOAP50": ap50, "val/COCOAP50_95": ap50_95}
        if self.wandb_logger is not None:
            self.wandb_logger.log_metrics({**scores, "train/epoch": self.epoch + 1})
            self.wandb_logger.log_images(predictions)
        if self.mlflow_logger is not None:
            self.mlflow_logger.on_log(self.args, self.exp, self.epoch + 1, {**scores, "val/best_ap": self.best_ap})

    def _tracker_metadata(self):
        """What the wandb / mlflow checkpoint artifacts carry beside the file."""
        return {"epoch": getattr(self, "epoch", self.start_epoch) + 1, "input_size": list(self.input_size),
                "best_ap": float(self.best_ap), "curr_ap": float(self.curr_ap),
                "start_ckpt": getattr(self.args, "ckpt", None), "exp_file": getattr(self.args, "exp_file", None)}

    def _log_checkpoint_artifacts(self, update_best_ckpt):
        """The checkpoint of this evaluation as an artifact, once (wandb with log_checkpoints; mlflow with
        YOLOX_MLFLOW_LOG_MODEL_ARTIFACTS)."""
        if self.wandb_logger is not None:
            self.wandb_logger.save_checkpoint(self.file_name, "last_epoch", update_best_ckpt, self._tracker_metadata())
        if self.mlflow_logger is not None:
            self.mlflow_logger.save_checkpoints(self.args, self.exp, self.file_name, self.epoch,
                                                self._tracker_metadata(), update_best_ckpt)

    def _finish_loggers(self):
        """End the wandb / mlflow run (marked failed / killed when training did not reach its last epoch)."""
        if self.wandb_logger is not None:
            self.wandb_logger.finish(exit_code=0 if self._finished else 1)
            self.wandb_logger = None
        if self.mlflow_logger is not None:
            self.mlflow_logger.on_train_end(self.args, self.file_name, self._tracker_metadata(),
                                            status="FINISHED" if self._finished else "KILLED")
            self.mlflow_logger = None

    def checkpoint_state(self, next_iteration=None):
        """Everything a resume restores; "model" holds the EMA weights (as the published files)."""
        if next_iteration is None:
            next_iteration = (self.epoch + 1) * self.max_iter
        raw = _unwrap(self.model).state_dict()
        state = {
            "start_epoch": next_iteration // self.max_iter,
            "model": self.ema_model.ema.state_dict() if self.use_model_ema else raw,
            "optimizer": self.optimizer.state_dict(),
            "best_ap": self.best_ap,
            "curr_ap": self.curr_ap,
            "iteration": next_iteration,
            "iters_per_epoch": self.max_iter,
            "input_size": list(self.input_size),
            "data_seed": self.data_seed,
            "rng": get_rng_states(),
            "exp": str(self.exp),
            "max_epoch": self.max_epoch,  # fitted by max_train_minutes, perhaps: a resume keeps it
            "max_epoch_asked": self._max_epoch_asked,
            "train_seconds": time.time() - self.train_start_time,
        }
        if self.use_model_ema:
            state["raw_model"] = raw
            state["ema_updates"] = self.ema_model.updates
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def save_ckpt(self, ckpt_name, update_best_ckpt=False, next_iteration=None):
        if self.rank != 0:
            return
        state = self.checkpoint_state(next_iteration)
        path = os.path.join(self.file_name, f"{ckpt_name}_ckpt.pth")
        logger.info("Save weights to {}".format(path))
        atomic_save(state, path)
        if update_best_ckpt:
            atomic_save(state, os.path.join(self.file_name, "best_ckpt.pth"))


class _ProfileDone(Exception):
    """Raised after the profile table is printed: a --profile run stops there."""


def _grad_scaler(enabled):
    """The CUDA GradScaler of --fp16 (torch.amp from torch 2.3, torch.cuda.amp before)."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def _check_fits(model, state_dict, path):
    """check_fits, naming the published model a checkpoint of another size holds."""
    try:
        check_fits(model, state_dict, path)
    except CheckpointMismatchError as e:
        raise CheckpointError(f"{e}{mismatch_hint(state_dict)}") from None


def _rank_local_buffers():
    """DDP keyword for BN statistics kept per rank (synced at start only), as the official broadcast_buffers=False;
    newer torch names it forward_sync_buffers."""
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def _finite(value):
    return value == value and value not in (float("inf"), float("-inf"))


def make_output_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(
            f"cannot write to the output folder {path} ({e.strerror or e}); set output_dir in the Exp or on the "
            "command line (e.g. `output_dir /tmp/YOLOX_outputs`), or choose another -expn"
        ) from None
