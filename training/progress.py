"""Training progress: a bar in a terminal, a fixed-width log line otherwise."""

import logging
import sys
import time

from tqdm import tqdm

logger = logging.getLogger(__name__)


class EpochProgress:
    """Reports batches of one epoch: loss, throughput, data time and ETA."""

    def __init__(self, epoch: int, epochs: int, batches: int, log_every: int) -> None:
        self.epoch, self.epochs, self.batches = epoch, epochs, batches
        self.log_every = log_every
        self.started = time.perf_counter()
        self.rows = 0
        self.bar = None
        if sys.stderr.isatty():
            self.bar = tqdm(total=batches, desc=f"epoch {epoch}/{epochs}", unit="batch")

    def update(self, step: int, rows: int, loss: float, data_seconds: float) -> None:
        self.rows += rows
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            self.bar.update(1)
            return
        if step % self.log_every and step != self.batches:
            return

        elapsed = time.perf_counter() - self.started
        eta = elapsed / step * (self.batches - step)
        logger.info(
            "epoch %d/%d | batch %5d/%d | loss %.4f | %7.1f rows/s | data %.3fs | eta %4.0fs",
            self.epoch, self.epochs, step, self.batches, loss,
            self.rows / elapsed, data_seconds, eta,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
