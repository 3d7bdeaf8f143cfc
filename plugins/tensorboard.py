"""`tensorboard.v1`: TensorBoard logging as a training callback, one point per epoch in
`RUN_DIR/tensorboard/` (`trainer.tensorboard = true` is a shorthand for it).

Logged after each evaluation: train and dev loss, the task's dev summary scores and per-label
score, the learning rate, and the epoch timings. Needs the `tensorboard` package, which nlpfw
does not install; asking for it without the package is an error before training starts.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nlpfw.errors import NlpfwError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Callback, Config


class TensorBoardConfig(Config):
    folder: str = Field(default="tensorboard", pattern=r"^\w[\w.-]*$", description="event folder, inside the run folder")


class TensorBoard(Callback):
    """A TensorBoard event writer for a run's evaluation records (rank 0 only)."""

    config_model = TensorBoardConfig
    config: TensorBoardConfig

    def __init__(self, config: TensorBoardConfig):
        super().__init__(config)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the tensorboard package is missing
            raise NlpfwError(
                "TensorBoard logging (trainer.tensorboard = true, or a tensorboard.v1 callback) needs the "
                "tensorboard package: pip install tensorboard (or set trainer.tensorboard = false)"
            ) from None
        self.writer_class = SummaryWriter
        self.writer: Any = None  # opened by the first record, so a run that fails to start leaves no folder

    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None:
        if trainer.run_dir is None or not trainer.context.main:
            return
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(trainer.run_dir / self.config.folder))
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

    def on_train_end(self, trainer: Any, history: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@hookimpl
def register_callbacks(register):
    register("tensorboard.v1", TensorBoard)
