"""Every metric the SplitTrainingJob roles export, declared once."""

from __future__ import annotations

from edgeloom.runtime.metrics import MetricFactory

ROUND_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class ServerMetrics:
    def __init__(self, m: MetricFactory) -> None:
        # rounds completed / planned are the reporter's edgeloom_steps_completed / _planned
        self.round_duration = m.histogram(
            "round_duration_seconds", "Device (virtual) time of one round.", buckets=ROUND_BUCKETS
        )
        self.accuracy = m.gauge("accuracy_ratio", "Test accuracy after the last round (0-1).")
        self.loss = m.gauge("loss", "Test loss after the last round.")
        self.participants = m.gauge("participants", "Workers that completed the last round.")
        self.dropped = m.counter("workers_dropped_total", "Workers dropped from a round.")
        self.bytes = m.counter("bytes_total", "Bytes the server sent and received.")
        self._factory = m
        self._batch = m.gauge("batch_size", "Batch size assigned to a worker.", ("worker",))
        self._compute = m.gauge(
            "worker_compute_seconds", "Device compute time of a worker's last round.", ("worker",)
        )
        self._transfer = m.gauge(
            "worker_transfer_seconds", "Device transfer time of a worker's last round.", ("worker",)
        )

    def worker(self, index: int, batch: int, compute_s: float, transfer_s: float) -> None:
        label = str(index)
        self._factory.child(self._batch, worker=label).set(batch)
        self._factory.child(self._compute, worker=label).set(compute_s)
        self._factory.child(self._transfer, worker=label).set(transfer_s)


class WorkerMetrics:
    def __init__(self, m: MetricFactory) -> None:
        self.compute = m.histogram(
            "compute_seconds",
            "Device compute time of one command.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        )
        self.tensor_bytes = m.counter(
            "tensor_bytes_total", "Tensor bytes the worker received and sent."
        )
        self.batch_size = m.gauge("batch_size", "Batch size of the current round.")
