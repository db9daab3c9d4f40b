"""The Trainer: the official YOLOX training loop (EMA, warm cosine lr, multi-scale, close-mosaic/L1 phase,
evaluation and checkpoints), with exact resume, atomic checkpoints, a finite-loss guard and a clean Ctrl-C.

Hooks keep the official names (before_train, before_epoch, before_iter, train_one_iter, after_iter, after_epoch,
after_train, resume_train, evaluate_and_save_model, save_ckpt) so that users' Trainer subclasses keep working. What is
not the loop itself is a part in `self.parts` (yolox.core.parts.TrainerPart): the stop request, the time budget, the
metric writers, early stopping, frozen layers, results.csv, the profile. A new concern is a part appended there.
"""
import contextlib
import functools
import os
import time

import torch
import torch.distributed as dist
from loguru import logger
from torch.nn.parallel import DistributedDataParallel as DDP

from yolox.utils import (MeterBuffer, ModelEMA, adjust_status, all_reduce_norm, get_local_rank, get_model_info,
                         get_rank, get_world_size, gpu_mem_usage, mem_usage, occupy_mem, set_rng_states,
                         setup_logger, synchronize, unwrap_model)
from yolox.utils.checkpoint import CheckpointError
from yolox.utils.heap import keep_image_buffers_in_heap

from .checkpointer import DISK_ERRNOS, Checkpointer, make_output_dir, output_failure_message
from .data_report import DataReportPart
from .data_stream import DataStream, batch_per_rank, check_train_loader
from .early_stopping import EarlyStopping, RunExtension
from .eval_report import EvalReportPart
from .faults import FaultInjection
from .freeze import FrozenLayers
from .metric_writers import CURVE_FILE, METRICS_FILE, MetricRecord, MetricWriters
from .parts import call_each
from .rank_state import RankLocalState
from .results_table import ResultsTable
from .stage_profile import PROFILE_WARMUP_ITERS, NullClock, ProfileDone, StageProfile
from .step import (LOSS_KEYS, NonFiniteLossError, TrainStep, grad_scaler, is_finite, mixed_precision,
                   rank_local_buffers)
from .stop_request import StopRequest, TrainingInterrupted
from .time_budget import TimeBudgetPart
from .watchdog import Watchdog

__all__ = ["Trainer", "TrainingInterrupted", "NonFiniteLossError", "PROFILE_WARMUP_ITERS", "METRICS_FILE",
           "CURVE_FILE", "make_output_dir"]


class Trainer:
    """exp, args: the Exp and the parsed command line of tools/train.py. clock: the wall clock of the time budget
    (time.time; a test may give its own)."""

    def __init__(self, exp, args, clock=None):
        self.exp = exp
        self.args = args

        self.max_epoch = exp.max_epoch
        self.is_distributed = get_world_size() > 1
        self.rank = get_rank()
        self.local_rank = get_local_rank()
        self.device = torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        self.amp_training, self._precision_note = mixed_precision(self.device, getattr(args, "fp16", False))
        self.scaler = grad_scaler(enabled=self.amp_training and self.device.type == "cuda")
        self.use_model_ema = exp.ema
        self.save_history_ckpt = exp.save_history_ckpt

        # float16 batches on CUDA as officially; the CPU's bfloat16 autocast takes float32 inputs
        self.data_type = torch.float16 if self.amp_training and self.device.type == "cuda" else torch.float32
        self.input_size = tuple(exp.input_size)
        self.best_ap = 0.0
        self.curr_ap = 0.0
        self.start_iter = 0  # iteration within start_epoch to begin at (a run resumed mid-epoch)
        self.clock = NullClock()  # the per-stage clock of --profile
        self._finished = False  # every epoch ran (the curve is drawn then, not after a stop or an error)
        self.tblogger = self.wandb_logger = self.mlflow_logger = None  # the -l logger's object (rank 0)

        self.meter = MeterBuffer(window_size=exp.print_interval)
        self.file_name = os.path.join(exp.output_dir, args.experiment_name)
        self.checkpointer = Checkpointer(self)
        self.stop_request = StopRequest()
        # Exp.max_train_minutes counts from the command's start (its imports too) unless a clock is given
        start = None if clock is not None else getattr(args, "start_time", None)
        self.run_time = TimeBudgetPart(getattr(exp, "max_train_minutes", None), exp.max_epoch, start_time=start,
                                       clock=clock or time.time)
        self.metric_writers = MetricWriters()
        self.data_stream = DataStream()
        self.parts = [self.stop_request, self.run_time, self.data_stream, self.metric_writers, DataReportPart(),
                      RunExtension(), FrozenLayers(getattr(exp, "freeze", None)),
                      EarlyStopping(getattr(exp, "patience", None)), EvalReportPart(), ResultsTable(),
                      FaultInjection()]
        profile_iters = int(getattr(args, "profile", 0) or 0)
        if profile_iters > 0:
            self.parts.append(StageProfile(profile_iters))
        self.rank_state = RankLocalState()
        self.parts.append(self.rank_state)
        # last: its after_train (the first called) stops watching before the others close the run
        self.watchdog = Watchdog(getattr(exp, "stall_timeout", 600), getattr(exp, "heartbeat_timeout", 60))
        self.parts.append(self.watchdog)

        if self.rank == 0:
            make_output_dir(self.file_name)
        synchronize()
        setup_logger(self.file_name, distributed_rank=self.rank, filename="train_log.txt", mode="a")

    def _notify(self, hook, *extra):
        for part in self.parts:
            getattr(part, hook)(self, *extra)

    def _notify_end(self):
        """after_train to every part, the last added first, each even when another fails."""
        try:
            call_each(functools.partial(part.after_train, self, self._finished) for part in reversed(self.parts))
        except OSError as e:  # a full or failing disk under the closing plots and tables: one line
            if e.errno not in DISK_ERRNOS:
                raise
            raise CheckpointError(output_failure_message(e.filename or self.file_name, e, self.file_name)) from e

    # ------------------------------------------------------------------------------------------ the loop
    def train(self):
        with self._dead_worker_named():  # the loader's first batches are read here already
            self.before_train()
        try:
            with self._dead_worker_named(), self.stop_request:
                self.train_in_epoch()
        except ProfileDone:
            pass
        finally:
            self.after_train()

    @contextlib.contextmanager
    def _dead_worker_named(self):
        """torch's error for a dead DataLoader worker (raised wherever its SIGCHLD lands) becomes the one-line
        DataWorkerDiedError."""
        try:
            yield
        except RuntimeError as e:
            failure = self.data_stream.explain_failure(e, self)
            if failure is None:
                raise
            raise failure from e

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
        self.watchdog.data_ready(self)
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
        if self.stop_request.agree(self, not_finite=not all(map(is_finite, values.values()))):
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
        if self._precision_note:
            logger.info(self._precision_note)

        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        model = self.exp.get_model()
        if callable(getattr(self.exp, "apply_memory_format", None)):
            model = self.exp.apply_memory_format(model)  # also for an Exp whose own get_model does not
        h, w = self.exp.test_size
        logger.info("Model Summary: {}, input size {}x{}".format(get_model_info(model, (h, w)), h, w))
        model.to(self.device)
        self._notify("model_built", model)  # e.g. frozen layers, which the optimiser then leaves out

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
        check_train_loader(self.exp, self.train_loader, self.args.batch_size)
        self.start_epoch, self.start_iter = self.checkpointer.resume_position(ckpt, self.max_iter, self.start_epoch)
        self.lr_scheduler = self._make_lr_scheduler()
        if getattr(self.args, "occupy", False):
            if self.device.type == "cuda":
                occupy_mem(self.local_rank)
            else:
                logger.info("-o/--occupy reserves GPU memory; ignored on the CPU")

        if self.is_distributed:
            device_ids = [self.local_rank] if self.device.type == "cuda" else None
            model = DDP(model, device_ids=device_ids, **rank_local_buffers())
        self.model = model
        self.ema_model = None
        if self.use_model_ema:
            self.ema_model = ModelEMA(model, getattr(self.exp, "ema_decay", 0.9998),
                                      ramp_updates=getattr(self.exp, "ema_ramp_updates", 2000))
            self.checkpointer.restore_ema(self.ema_model, ckpt, self.max_iter, self.start_epoch, self.start_iter)
        self.step = TrainStep(self.model, self.optimizer, self.scaler, self.ema_model, self.device, self.amp_training,
                              check=self._check_step)

        self.evaluator = self.exp.get_evaluator(batch_size=self.args.batch_size, is_distributed=self.is_distributed)
        self._notify("before_train")

        self._start_data_stream(self.start_epoch * self.max_iter + self.start_iter)
        if ckpt is not None and "rng" in ckpt:
            # last: nothing after it draws from the generators before the first batch
            set_rng_states(self.rank_state.rng_states(ckpt["rng"]))
        logger.info("Training start...")
        logger.debug("\n{}".format(unwrap_model(model)))  # the one-line Model Summary above is at info

    def _make_lr_scheduler(self):
        return self.exp.get_lr_scheduler(self.exp.basic_lr_per_img * self.args.batch_size, self.max_iter)

    def set_max_epoch(self, max_epoch):
        """Change the run's length (the time budget does), with the cosine lr schedule fitted to the new end."""
        self.max_epoch = self.exp.max_epoch = max_epoch
        self.lr_scheduler = self._make_lr_scheduler()

    def batch_per_rank(self):
        return batch_per_rank(self.train_loader, self.args.batch_size)

    def _start_data_stream(self, progress):
        self.prefetcher = self.data_stream.start(self, progress)

    @property
    def data_seed(self):
        return self.data_stream.seed

    @data_seed.setter
    def data_seed(self, seed):
        self.data_stream.seed = seed

    @property
    def time_budget(self):
        """The TimeBudget of Exp.max_train_minutes, or None."""
        return self.run_time.budget

    @property
    def train_start_time(self):
        return self.run_time.start_time

    def collective_device(self):
        return self.device if self.is_distributed and dist.get_backend() == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------------------------------ epochs and iterations
    def after_train(self):
        self._notify_end()
        if self._finished:
            logger.info("Training of experiment is done and the best AP is {:.2f}".format(self.best_ap * 100))
        else:
            logger.info("Training stopped before its end; the best AP so far is {:.2f}".format(self.best_ap * 100))

    def before_epoch(self):
        logger.info("---> start train epoch{}".format(self.epoch + 1))
        self._notify("before_epoch")
        if self.epoch + 1 == self.max_epoch - self.exp.no_aug_epochs or self.no_aug:
            self._enter_last_phase()

    def _enter_last_phase(self):
        """The official last epochs: no mosaic, the L1 loss on, an evaluation after every epoch. Entered during the
        run, the data stream restarts here without mosaic and last_mosaic_epoch_ckpt.pth is saved."""
        logger.info("--->No mosaic aug now!")
        self.train_loader.close_mosaic()
        logger.info("--->Add additional L1 loss now!")
        unwrap_model(self.model).head.use_l1 = True
        self.exp.eval_interval = 1
        if self.no_aug:
            return  # the run started (or resumed) in this phase: its stream is already without mosaic
        # batches already made with mosaic are dropped: the stream restarts here without it
        first = self.epoch * self.max_iter + (self.start_iter if self.epoch == self.start_epoch else 0)
        self._start_data_stream(first)
        self.save_ckpt(ckpt_name="last_mosaic_epoch", next_iteration=first)

    def after_epoch(self):
        self._notify("epoch_trained")
        evaluated = (self.epoch + 1) % self.exp.eval_interval == 0
        if evaluated:
            all_reduce_norm(self.model)
            if self.use_model_ema:
                all_reduce_norm(self.ema_model.ema)
            self.evaluate_and_save_model()
        else:
            self.save_ckpt(ckpt_name="latest")
        self._notify("after_epoch", evaluated)

    def before_iter(self):
        self._notify("before_iter")

    def after_iter(self):
        if (self.iter + 1) % self.exp.print_interval == 0:
            self.metric_writers.write(self._train_record())
            self.meter.clear_meters()

        # random resizing
        if (self.progress_in_iter + 1) % 10 == 0:
            self.input_size = self.exp.random_resize(self.train_loader, self.epoch, self.rank, self.is_distributed)
        self.clock.end_iteration()
        self._notify("after_iter")

    def _train_record(self):
        """The record of a logged iteration: the latest losses, the mean times since the last one."""
        loss_meter = {k: self.meter[k] for k in LOSS_KEYS if k in self.meter}
        time_meter = self.meter.get_filtered_meter("time")
        left_iters = self.max_iter * self.max_epoch - (self.progress_in_iter + 1)
        values = {"lr": self.meter["lr"].latest, **{k: v.latest for k, v in loss_meter.items()},
                  **{k: v.avg for k, v in time_meter.items()}, "size": self.input_size[0], "rss_gb": mem_usage(),
                  "gpu_mem_mb": gpu_mem_usage()}
        context = {"max_epoch": self.max_epoch, "iter": self.iter + 1, "max_iter": self.max_iter,
                   "time_keys": list(time_meter), "eta_seconds": self.meter["iter_time"].global_avg * left_iters}
        return MetricRecord("train", self.progress_in_iter + 1, self.epoch + 1, values, context)

    @property
    def progress_in_iter(self):
        return self.epoch * self.max_iter + self.iter

    # ------------------------------------------------------------------------------------------ checkpoints
    def resume_train(self, model):
        """Load the run to resume (--resume) or the weights to fine-tune from (-c); returns the checkpoint or None."""
        self.start_epoch = 0
        if getattr(self.args, "resume", False):
            return self.checkpointer.resume(self, model)
        if self.args.ckpt is not None:
            logger.info("loading checkpoint for fine tuning")
            self.checkpointer.load_for_fine_tuning(model, self.args.ckpt)
        return None

    def evaluate_and_save_model(self):
        evalmodel = self.ema_model.ema if self.use_model_ema else unwrap_model(self.model)
        ap50_95, ap50, summary, predictions = self._evaluate(evalmodel)
        if self.is_distributed:  # rank 0 scored: everyone takes its numbers, so that "best" is the same everywhere
            scores = torch.tensor([ap50_95, ap50], dtype=torch.float64, device=self.collective_device())
            dist.broadcast(scores, 0)
            ap50_95, ap50 = scores.tolist()
        update_best_ckpt = ap50_95 > self.best_ap
        self.best_ap = max(self.best_ap, ap50_95)
        self.curr_ap = ap50_95
        self._notify("evaluated", ap50_95, ap50)  # before the checkpoints, which carry what parts count

        if self.rank == 0:
            context = {"summary": summary, "max_epoch": self.max_epoch, "best_ap": self.best_ap,
                       "predictions": predictions}
            self.metric_writers.write(MetricRecord("eval", self.progress_in_iter + 1, self.epoch + 1,
                                                   {"AP50_95": ap50_95, "AP50": ap50}, context))
        synchronize()

        self.save_ckpt("latest")
        self.save_ckpt("last_epoch", update_best_ckpt)
        if self.save_history_ckpt:
            self.save_ckpt(f"epoch_{self.epoch + 1}")
        self.metric_writers.checkpoint_saved(self.file_name, self.epoch, update_best_ckpt, self.tracker_metadata())

    def _evaluate(self, evalmodel):
        """(AP50:95, AP50, summary, per-image outputs or None): the outputs only when a writer shows them."""
        with adjust_status(evalmodel, training=False):
            if not self.metric_writers.wants_predictions:
                return (*self.exp.eval(evalmodel, self.evaluator, self.is_distributed), None)
            (ap50_95, ap50, summary), outputs = self.exp.eval(evalmodel, self.evaluator, self.is_distributed,
                                                              return_outputs=True)
        return ap50_95, ap50, summary, outputs

    def tracker_metadata(self):
        """What the wandb / mlflow checkpoint artifacts carry beside the file."""
        return {"epoch": getattr(self, "epoch", self.start_epoch) + 1, "input_size": list(self.input_size),
                "best_ap": float(self.best_ap), "curr_ap": float(self.curr_ap),
                "start_ckpt": getattr(self.args, "ckpt", None), "exp_file": getattr(self.args, "exp_file", None)}

    def checkpoint_state(self, next_iteration=None):
        """Everything a resume restores (see Checkpointer.state); "model" holds the EMA weights."""
        return self.checkpointer.state(self, next_iteration)

    def save_ckpt(self, ckpt_name, update_best_ckpt=False, next_iteration=None):
        self.rank_state.collect(self)  # every rank: what differs between the processes, to rank 0
        if self.rank != 0:
            return
        self.checkpointer.save(self.checkpoint_state(next_iteration), ckpt_name, best=update_best_ckpt)
