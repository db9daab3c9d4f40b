"""The data check before the first iteration: the summary of yolox.data.data_check in the log, labels.png and the
pictures of the first training batches in <run>/data_check/ (rank 0), without changing the run."""
import os

from loguru import logger

from yolox.data import CorruptImageError
from yolox.data.data_check import DATA_CHECK_DIR, check_datasets, log_report, raise_if_fatal, write_data_pictures
from yolox.utils import MatplotlibMissing, get_rng_states, set_rng_states

from .data_stream import batch_per_rank
from .parts import TrainerPart

__all__ = ["DataReportPart", "SCAN_FILES_LIMIT"]

# Reading every file (hash, header) of a split larger than this would hold up the start of training for more than a
# few seconds: such splits get the label statistics only, and the check_data command does the rest.
SCAN_FILES_LIMIT = 2000


class DataReportPart(TrainerPart):
    """Logs the data report and writes the pictures before training (Exp.check_data, default True). It reads the
    data through its own sampler and a copy of the loader's dataset, and puts the RNG states back: a seeded run
    trains on the same batches with or without it."""

    def before_train(self, trainer):
        if trainer.rank != 0 or not getattr(trainer.exp, "check_data", True):
            return
        states = get_rng_states()
        try:
            self._report(trainer)
        finally:
            set_rng_states(states)

    def _report(self, trainer):
        source = trainer.train_loader.dataset  # MosaicDetection around the training set
        train = getattr(source, "_dataset", source)
        val = getattr(getattr(trainer.evaluator, "dataloader", None), "dataset", None)
        datasets = {"train": train, **({"val": val} if val is not None and hasattr(val, "_labels") else {})}
        if not hasattr(train, "_labels"):
            logger.info("data check skipped: the training set is not a COCO-style dataset")
            return
        scan = all(len(d) <= SCAN_FILES_LIMIT for d in datasets.values())
        report = check_datasets(datasets, scan_files=scan)
        out_dir = os.path.join(trainer.file_name, DATA_CHECK_DIR)
        log_report(report, out_dir, fatal_level="WARNING")
        if not scan:
            logger.info(f"image files not checked (over {SCAN_FILES_LIMIT} images): python -m yolox.tools.check_data "
                        f"-f <exp file> checks them all")
        try:
            write_data_pictures(out_dir, source, val, train.class_names, batch_per_rank(trainer.train_loader,
                                trainer.args.batch_size), seed=trainer.exp.seed or 0, mosaic=not trainer.no_aug,
                                train_labels=train._labels, img_size=train.img_size)
        except MatplotlibMissing as e:
            logger.info(f"labels.png left out: {e}")  # matplotlib is an optional extra; training goes on
        except CorruptImageError as e:
            logger.warning(f"data pictures left out: {e}")
        raise_if_fatal(report)  # before the first iteration, as one line (exit status 2 from the command)
