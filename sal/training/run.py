"""``train(spec) -> Result``: one run = method x data set x model x seed. No I/O of its own.

The seed derives three generators: model init, data order/augmentation, and the method's own noise.
So runs with the same seed start from the same weights and see the same batches under every method
(paired comparisons), and the same seed + spec on the CPU gives the same history bit for bit.
Each epoch does one host-device sync: every on-device sum is read in one ``tolist()``.

With ``train.checkpoint_every`` and a checkpoint directory, a run saves its whole state every k epochs
(sal/training/checkpoints.py) and a run of the same configuration and seed resumes from it, ending bit for bit
where the uninterrupted run ends (wall-clock and memory readings aside).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core import interrupts
from ..core.names import (
    METRIC_NOISE_STD,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    STATUS_PRUNED,
    TAG_SEEDS_PER_MODEL,
)
from ..core.rng import RngStream, derive_seed
from ..methods import REGISTRY, MethodContext, build_method
from ..metrics.classmetrics import class_f1_metrics, class_report, confusion_counts
from ..metrics.events import DTYPE_TAG, EVENTS, EVENTS_TAG, MEDIAN_ABS_WEIGHT, NOISE_STD_MAX, signature
from ..metrics.instability import instability
from ..spec.config import RunSpec
from .checkpoints import RunCheckpoint
from .data import augment_batch, load_data
from .epoch import divergence, epoch_stats, mean_row, validate_again
from .models import build_model
from .robustness import CHUNK, STD_SAMPLES, perturbations, robust_scores
from .splits import AnySplit, DataBundle

__all__ = ["Result", "PruneRun", "TrainingRun", "train", "derive_seed", "resolve_device"]

EpochCallback = Callable[[int, dict[str, float]], None]

log = logging.getLogger(__name__)


class PruneRun(Exception):
    """Raised by an ``on_epoch`` callback to stop a run early (a pruned study trial)."""


@dataclass
class Result:
    """What one run produced. ``status``: finished, diverged or pruned."""

    spec: RunSpec
    status: str
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch, contract names
    final: dict[str, float] = field(default_factory=dict)  # test/acc, test/top5, test/loss, time/..., mem/...
    message: str = ""
    n_params: int = 0
    device: str = "cpu"
    analysis: dict = field(default_factory=dict)  # sal.training.run_analysis output: final "weights", "trajectory"
    resumed_from: int = 0  # epochs taken from a checkpoint: the history's first rows, trained by a killed attempt
    tags: dict[str, str] = field(default_factory=dict)  # MLflow tags of what the run did (sal.events, ...)
    per_class: list[dict] = field(default_factory=list)  # test precision, recall, f1, support per class

    @property
    def ok(self) -> bool:
        return self.status == STATUS_FINISHED

    def last(self, metric: str) -> float:
        """The metric's value at the last epoch (nan if absent)."""
        return self.history[-1].get(metric, math.nan) if self.history else math.nan

    def metric(self, name: str) -> float:
        """A per-epoch metric at the last epoch, else the final metric of that name, else nan."""
        value = self.last(name)
        return self.final.get(name, math.nan) if math.isnan(value) else value


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def _evaluate(model: nn.Module, split: AnySplit, batch_size: int, autocast, *,
              classes: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """[loss sum, correct, top-5 correct] as device tensors, and with ``classes`` the confusion matrix
    (true x predicted) too (no sync)."""
    model.eval()
    totals = [torch.zeros((), device=split.device) for _ in range(3)]
    confusion = torch.zeros(classes, classes, dtype=torch.long, device=split.device) if classes else None
    k = None
    for x, y in split.batches(batch_size):
        with autocast():
            logits = model(x).float()
        k = k or min(5, logits.shape[1])
        pred = logits.argmax(1)
        totals[0] += F.cross_entropy(logits, y, reduction="sum")
        totals[1] += (pred == y).sum()
        totals[2] += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
        if confusion is not None:
            confusion += confusion_counts(y, pred, classes)
    return totals, confusion


def _grad_norm(model: nn.Module, split: AnySplit, batch_size: int, limit: int, autocast) -> float:
    """Sharpness as the paper measures it (Fig. 7): the norm of the full-batch training-loss gradient
    at the final weights, over at most ``limit`` training samples, in eval mode."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    n = min(limit, len(split))
    grads = [torch.zeros_like(p) for p in params]
    for x, y in split.batches(batch_size, stop=n):
        with autocast():
            loss = F.cross_entropy(model(x).float(), y, reduction="sum") / n
        for acc, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                acc += g
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).item()


def _infer_ms(model: nn.Module, split: AnySplit, batch_size: int, batches: int, autocast) -> float:
    """Median milliseconds to predict one batch in eval mode, after one warm-up batch (the model's time
    alone: the batch is read once, before the clock starts)."""
    model.eval()
    x, _ = split.head(batch_size)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(batches + 1):
            sync()
            t0 = time.perf_counter()
            with autocast():
                model(x)
            sync()
            if i:
                times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


class TrainingRun:
    """One run advanced epoch by epoch, so a study can step several seeds in lockstep.

    The run keeps its own dropout RNG state and swaps it in only while it computes, so interleaved
    runs give the same histories as runs one after another, and the caller's global RNG is untouched
    (every draw the run makes from it is the dropout stream's, which a checkpoint saves).

    With ``train.checkpoint_every`` = k > 0 and a ``checkpoint_dir``, the run resumes from its checkpoint
    when one exists (``resumed_from`` epochs are then already in the history), saves one after every
    k-th epoch but the last, and deletes it when it ends (``finish``, or ``drop_checkpoint`` on failure).
    """

    def __init__(self, spec: RunSpec, *, data: DataBundle | None = None,
                 checkpoint_dir: str | os.PathLike | None = None):
        self.spec = spec
        self.device = resolve_device(spec.train.device)
        self.cuda = self.device.type == "cuda"
        self.checkpoint = None
        if checkpoint_dir is not None and spec.train.checkpoint_every > 0:
            self.checkpoint = RunCheckpoint(checkpoint_dir, spec, device=self.device.type)
        self._build(data)
        state = self.checkpoint.load() if self.checkpoint is not None else None
        if state is not None:
            try:
                self.load_state_dict(state)
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
                self.checkpoint.ignore("does not fit this run", err)
                self._build(data)  # loading may have stopped half-way: start afresh rather than train a hybrid
            else:
                log.info("resumed from epoch %d (checkpoint %s)", self.epoch, self.checkpoint.path)

    def _build(self, data: DataBundle | None) -> None:
        """Everything a run starts from: data, model, generators, method, an empty result."""
        spec, device, cuda = self.spec, self.device, self.cuda
        self._dropout_rng = RngStream(derive_seed(spec.seed, "dropout"), device)
        with self._dropout_rng.active():
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            self.data = data = (data or load_data(spec.data, device)).to(device)
            t = spec.train
            amp = t.amp if t.amp is not None else cuda
            bf16 = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
            self.autocast = bf16 if amp else contextlib.nullcontext
            self.channels_last = len(data.in_shape) == 3 and (t.channels_last if t.channels_last is not None else cuda)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(spec.seed, "init"))
                model = build_model(spec.model, data.in_shape, data.num_classes)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            self.model = model.to(device, memory_format=fmt)
            self.net = torch.compile(self.model) if t.compile else self.model
            self.data_gen = torch.Generator(device).manual_seed(derive_seed(spec.seed, "data"))
            self.method_gen = method_gen = torch.Generator(device).manual_seed(derive_seed(spec.seed, "method"))
            n_train = len(data.train)
            # Batches are known before the method is built: per-batch schedules (onecycle) need their count.
            full_batch = getattr(REGISTRY.get(spec.method.name), "full_batch", False)
            self.bs = n_train if full_batch else min(t.batch_size, n_train)
            if full_batch and data.train.streamed:
                log.warning("method %s takes the whole streamed training split (%d samples) as one batch every "
                            "epoch: it must fit on the device", spec.method.name, n_train)
            self.n_batches = n_train // self.bs  # drop the ragged batch: static shapes, no 1-sample BN
            self.eval_bs = max(self.bs, 512)
            self.method = build_method(MethodContext(
                model=self.net, spec=spec, generator=method_gen,
                method_seed=derive_seed(spec.seed, "method-host"),
                loss_fn=lambda logits, y: F.cross_entropy(logits.float(), y, label_smoothing=t.label_smoothing),
                autocast=self.autocast, train_batches=self._full_batches, steps_per_epoch=self.n_batches,
                side_rng=lambda purpose: RngStream(derive_seed(spec.seed, f"dropout-{purpose}"), device),
            ))
        self.result = Result(spec=spec, status=STATUS_FINISHED, n_params=sum(p.numel() for p in model.parameters()),
                             device=str(device))
        self.epoch = 0
        self.train_s = 0.0
        self.analysis = None  # ---- analysis hook: landscape measures, off by default
        if spec.analysis.enabled:
            from .run_analysis import RunAnalysis

            self.analysis = RunAnalysis(spec, data.train, model=self.model)

    @property
    def resumed_from(self) -> int:
        """Epochs taken from a checkpoint (0: trained from the start)."""
        return self.result.resumed_from

    def state_dict(self) -> dict:
        """The run's whole state after ``self.epoch`` epochs, as tensors and plain values (weights_only)."""
        state = {"epoch": self.epoch, "train_s": self.train_s, "history": self.result.history,
                 "model": self.model.state_dict(), "method": self.method.state_dict(),
                 "data_generator": self.data_gen.get_state(), "method_generator": self.method_gen.get_state(),
                 "dropout_rng": self._dropout_rng.state_dict()}
        if self.analysis is not None:
            # sal.training.run_analysis keeps no other state between epochs: its measures draw from per-epoch seeds
            state["analysis"] = {"snapshots": self.analysis.snapshots, "epochs": self.analysis.snapshot_epochs}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()`` on a run freshly built for the same spec."""
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.data_gen.set_state(state["data_generator"])
        self.method_gen.set_state(state["method_generator"])
        self._dropout_rng.load_state_dict(state["dropout_rng"])
        if self.analysis is not None:
            a = state["analysis"]
            self.analysis.snapshots = [t.to(self.device) for t in a["snapshots"]]
            self.analysis.snapshot_epochs = list(a["epochs"])
        self.epoch, self.train_s = int(state["epoch"]), float(state["train_s"])
        self.result.history = [dict(row) for row in state["history"]]
        if len(self.result.history) != self.epoch:
            raise ValueError(f"{len(self.result.history)} history rows for {self.epoch} epochs")
        self.result.resumed_from = self.epoch

    def drop_checkpoint(self) -> None:
        """Delete the run's checkpoint (``finish`` does; call it when the run fails instead)."""
        if self.checkpoint is not None:
            self.checkpoint.delete()

    def _full_batches(self):
        return self.data.train.batches(self.eval_bs)

    @property
    def done(self) -> bool:
        return self.result.status != STATUS_FINISHED or self.epoch >= self.spec.train.epochs

    def step(self) -> dict[str, float]:
        """Train and evaluate one more epoch; returns its history row (also kept in the result)."""
        interrupts.check()
        t0 = time.perf_counter()
        with self._dropout_rng.active():
            row = self._epoch()
        row["time/epoch_s"] = time.perf_counter() - t0
        self.train_s += row["time/epoch_s"]
        if self.analysis is not None and self.result.status == STATUS_FINISHED:
            # Not timed as training; any RNG draw inside (none expected) is thrown away, not the run's
            with torch.random.fork_rng(devices=[self.device] if self.cuda else [], device_type=self.device.type):
                row.update(self.analysis.after_epoch(self.epoch, self.method.eval_model()))
        self.result.history.append(row)
        every = self.spec.train.checkpoint_every
        if self.checkpoint is not None and self.epoch % every == 0 and not self.done:
            self.checkpoint.save(self.state_dict())
        return row

    def _epoch(self) -> dict[str, float]:
        self.epoch += 1
        epoch, device, method, train_set, bs = self.epoch, self.device, self.method, self.data.train, self.bs
        self.net.train()
        order = torch.randperm(len(train_set), device=device, generator=self.data_gen)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for acc in method.device_metrics.values():
            acc.zero_()
        for x, y in train_set.batches(bs, order, drop_last=True):  # the ragged batch is dropped (see _build)
            if self.spec.data.augment:
                x = augment_batch(x, self.data_gen, flip=self.spec.data.flip, translate=self.spec.data.translate)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, logits = method.train_step(x, y)
            loss_sum += loss.float()
            correct += (logits.argmax(1) == y).sum()
        method.on_epoch_trained(epoch)
        has_val = len(self.data.val) > 0
        val = _evaluate(method.eval_model(), self.data.val, self.eval_bs, self.autocast)[0] if has_val else []
        extra_names = list(method.device_metrics)
        values = torch.stack([loss_sum, correct, *val, *method.device_metrics.values()]).tolist()  # the sync
        n = self.n_batches
        row = mean_row(epoch, values, n_batches=n, batch_size=bs, n_val=len(self.data.val) if has_val else 0)
        for name, v in zip(extra_names, values[2 + len(val):]):
            row[name] = v / n
        why = divergence(row)
        if why:
            self.stop(STATUS_DIVERGED, why)
            return row
        row.update(method.end_epoch(epoch_stats(row, self.spec.train)))
        if validate_again(row, self.spec.train, has_val=has_val):
            loss, correct = torch.stack(_evaluate(method.eval_model(), self.data.val, self.eval_bs,
                                                  self.autocast)[0][:2]).tolist()
            row["val/loss"], row["val/acc"] = loss / len(self.data.val), correct / len(self.data.val)
        return row

    def _describe_interventions(self, result: Result) -> None:
        """What a report needs to tell whether two cells trained alike and whether the noise could matter:
        the event signature, the largest noise std, the weights' median magnitude and the compute dtype."""
        result.tags[EVENTS_TAG] = signature(result.history)
        result.tags[DTYPE_TAG] = "bfloat16" if self.autocast is not contextlib.nullcontext else "float32"
        result.tags.setdefault(TAG_SEEDS_PER_MODEL, "1")  # a packed run (sal.training.packed) says how many
        result.final[NOISE_STD_MAX] = max((row.get(METRIC_NOISE_STD, 0.0) for row in result.history), default=0.0)
        with torch.no_grad():
            weights = [p.detach().abs().flatten() for p in self.model.parameters() if p.requires_grad]
            if weights:
                result.final[MEDIAN_ABS_WEIGHT] = torch.cat(weights).float().median().item()

    def _robust_scores(self, model: nn.Module) -> dict[str, float]:
        """Accuracy on perturbed val and test inputs (sal.training.robustness), noise in units of the training std."""
        r = self.spec.robustness
        pairs = perturbations(r.noise, r.corruptions, r.levels, image=len(self.data.in_shape) == 3)
        unit = self.data.train.head(STD_SAMPLES)[0].float().std().item()
        splits = {name: (lambda s=split: s.batches(CHUNK)) for name, split in
                  (("val", self.data.val), ("test", self.data.test)) if len(split)}
        return robust_scores(model, splits, pairs, unit=unit, autocast=self.autocast)

    def stop(self, status: str, message: str) -> None:
        self.result.status, self.result.message = status, message

    def finish(self) -> Result:
        """Test metrics, timing and memory; call once, after the last step."""
        result = self.result
        result.final["time/train_s"] = self.train_s
        result.final["test/n_samples"] = float(len(self.data.test))  # a report's ROPE is judged against 1/n
        for event in EVENTS:  # a stress-aware cell that never acted is flagged
            result.final[f"sal/n_{event}"] = float(sum(row.get(f"sal/{event}", 0.0) for row in result.history))
        self._describe_interventions(result)
        result.final.update(instability(result.history))
        if result.status != STATUS_DIVERGED:
            with self._dropout_rng.active():
                final_model = self.method.eval_model()
                totals, confusion = _evaluate(final_model, self.data.test, self.eval_bs, self.autocast,
                                              classes=self.data.num_classes)
                loss, top1, top5 = torch.stack(totals).tolist()
                n = len(self.data.test)
                result.final.update({"test/loss": loss / n, "test/acc": top1 / n, "test/top5": top5 / n})
                result.per_class, per_class_final = class_report(confusion.cpu().numpy())  # Table 5
                result.final.update(per_class_final)
                result.final.update(class_f1_metrics(result.per_class))
                result.final["time/infer_ms"] = _infer_ms(final_model, self.data.test, self.bs,
                                                          self.spec.train.infer_batches, self.autocast)
                if self.spec.robustness.enabled:
                    t0 = time.perf_counter()
                    result.final.update(self._robust_scores(final_model))
                    result.final["time/robustness_s"] = time.perf_counter() - t0
                if self.spec.train.sharpness_samples:
                    result.final["sharpness/grad_norm"] = _grad_norm(
                        final_model, self.data.train, self.eval_bs, self.spec.train.sharpness_samples, self.autocast)
        result.final["mem/peak_mb"] = _peak_mb(self.device)
        if self.analysis is not None:
            result.analysis = self.analysis.finish(
                self.method.eval_model() if result.status != STATUS_DIVERGED else None)
        self.drop_checkpoint()
        return result


def train(spec: RunSpec, *, on_epoch: EpochCallback | None = None, data: DataBundle | None = None,
          checkpoint_dir: str | os.PathLike | None = None) -> Result:
    """Train one run. A NaN/inf loss ends it with status ``diverged``; ``on_epoch`` may raise PruneRun.

    With ``checkpoint_dir`` (and ``train.checkpoint_every``), a run resumed from a checkpoint calls
    ``on_epoch`` only for the epochs it trains; ``result.resumed_from`` says how many rows came before.
    The checkpoint is deleted when the run ends, also by an error; a KeyboardInterrupt keeps it for the retry.
    """
    run = TrainingRun(spec, data=data, checkpoint_dir=checkpoint_dir)
    try:
        while not run.done:
            row = run.step()
            if on_epoch is not None and run.result.status == STATUS_FINISHED:
                try:
                    on_epoch(run.epoch, row)
                except PruneRun as stop:
                    run.stop(STATUS_PRUNED, str(stop) or f"pruned after epoch {run.epoch}")
        return run.finish()
    except Exception:
        run.drop_checkpoint()  # a failed run; only an interrupted one (KeyboardInterrupt) is resumed
        raise
