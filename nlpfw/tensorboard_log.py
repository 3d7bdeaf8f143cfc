"""Optional TensorBoard logging (`trainer.tensorboard = true`): one point per epoch in `RUN_DIR/tensorboard/`.

Logged after each evaluation: train and dev loss, the task's dev summary scores and per-label score, the
learning rate, and the epoch timings. Needs the `tensorboard` package, which nlpfw does not
install; asking for it without the package is an error before training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlpfw.errors import NlpfwError


class EpochLog:
    """A TensorBoard event writer for a run's evaluation records."""

    def __init__(self, directory: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the tensorboard package is missing
            raise NlpfwError(
                "trainer.tensorboard = true needs the tensorboard package: pip install tensorboard "
                "(or set trainer.tensorboard = false)"
            ) from None
        self.directory = directory
        self.writer_class = SummaryWriter
        self.writer: Any = None  # opened by the first record, so a run that fails to start leaves no folder

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.directory))
        step, metric = record["epoch"], record["per_label_metric"]
        values = {
            "loss/train": record.get("train_loss"),
            "loss/dev": record.get("dev_loss"),
            "lr": record.get("lr"),
            **{f"dev/{key}": value for key, value in record["summary"].items()},
            **{f"dev_{metric}/{label}": row.get(metric) for label, row in record["per_label"].items() if label != "overall"},
            **{f"speed/{key}": value for key, value in record.get("speed", {}).items()},
        }
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
