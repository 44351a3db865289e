"""Packed seeds: the S seeds of one configuration trained as one model (``torch.func`` + ``vmap``).

Every weight, gradient, optimizer state and BatchNorm buffer gets a leading seed dimension; one
vmapped forward/backward and ONE optimizer step over the stacked tensors advance every seed. The
optimizers (Adam, Adamax, NAdam, RMSprop, SGD, with weight decay) are elementwise, so one optimizer
over stacked tensors is exactly S optimizers: nothing couples seeds. The parts that are not
elementwise are done per seed slice: SAM's gradient norm, SAL's stress, triggers and noise (each seed
keeps its own ``Method`` for the between-epoch logic, pointed at its slice), SWA's average and its
BatchNorm update. Each seed draws its data order, augmentation, dropout masks and method noise from
exactly the generators ``TrainingRun`` derives, so on the CPU a seed trained packed has the history
of the seed trained alone, up to float32 round-off of the batched kernels (tests/test_packed.py).

Dropout masks are drawn outside ``vmap`` from each seed's own "dropout" generator with the shape and
call the CPU kernel of ``F.dropout`` uses (``bernoulli_(1 - p)``, scaled by ``1 / (1 - p)``), so they
are the unpacked run's masks bit for bit; on CUDA the fused dropout kernel draws differently, so
packed and unpacked CUDA runs differ in their masks (not in their distribution).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..core import interrupts
from ..core.names import STATUS_DIVERGED, STATUS_FINISHED, STATUS_PRUNED, TAG_SEEDS_PER_MODEL
from ..core.rng import derive_seed
from ..methods import METHODS, REGISTRY, Method, MethodContext, build_optimizer
from ..methods.pdo import Interventions
from ..methods.sam import SAM, _freeze_bn_stats
from ..methods.swa import SWA
from ..spec.config import RunSpec, SpecError, configuration, flatten
from .data import augment_batch
from .epoch import divergence, epoch_stats, mean_row, validate_again
from .packed_ops import GroupedForward, MaskedDropout
from .packed_swa import PackedSWA
from .run import Result, TrainingRun
from .splits import DataBundle

__all__ = ["PACKABLE", "PackedRun"]


# Methods whose every step is elementwise per seed or done per seed slice here (each method says so).
PACKABLE = frozenset(name for name, info in METHODS.items() if info.packable)


def _same_but_seed(specs: list[RunSpec]) -> None:
    # a yoked control's seeds each copy their own partner's events: one configuration all the same
    def setting(s: RunSpec) -> dict:
        return configuration(flatten(s))

    first = setting(specs[0])
    for s in specs[1:]:
        other = setting(s)
        diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if diff:
            raise SpecError([f"{diff[0]}: packed seeds must share every setting but seed "
                             f"({first.get(diff[0])!r} vs {other.get(diff[0])!r}); fix: pack one configuration"])
    seeds = [s.seed for s in specs]
    if len(set(seeds)) != len(seeds):
        raise SpecError([f"seed={seeds!r} repeats a seed; fix: pack distinct seeds"])


class PackedRun:
    """S seeds of one configuration advanced epoch by epoch as one packed model.

    The interface of a group of runs: ``results`` (one per seed, in the order of ``specs``), ``done``,
    ``step()``, ``prune(message)``, ``finish()``. A diverged seed stops logging and stays in the pack
    (its slice computes NaN, which no other slice can see).
    """

    def __init__(self, specs: list[RunSpec], *, data: DataBundle | None = None, grouped: bool | None = None):
        """``grouped``: the grouped-operations forward (training/packed_ops.py; None: when the model's layers allow),
        else vmap."""
        _same_but_seed(specs)
        if specs[0].method.name not in PACKABLE:
            raise SpecError([f"method.name={specs[0].method.name!r} cannot be packed; fix: train.pack=off"])
        self.specs, spec = specs, specs[0]
        # One TrainingRun per seed builds exactly what the unpacked run starts from (data, device,
        # autocast, init weights, generators, the method with its between-epoch logic); the packed run
        # then owns the weights and only asks each seed's method to intervene.
        self.runs = runs = [TrainingRun(s, data=data) for s in specs]
        first = runs[0]
        if first.data.streamed:  # start_seeds never packs it (sal/training/seeds.py); the packed loop reads tensors
            raise SpecError(["a loader's Dataset (streamed data) cannot be packed; fix: train.pack=off"])
        self.device, self.data, self.autocast = first.device, first.data, first.autocast
        self.bs, self.n_batches, self.eval_bs = first.bs, first.n_batches, first.eval_bs
        self.S = S = len(specs)
        self.models = [r.model for r in runs]
        self.params, self.buffers = stack_module_state(self.models)
        self.trainable = [n for n, p in self.models[0].named_parameters() if p.requires_grad]
        for name, p in self.params.items():
            p.requires_grad_(name in self.trainable)
        self.template = copy.deepcopy(self.models[0]).to("meta")
        self.dropouts = self._masked_dropouts()
        self.mask_shapes = self._probe_dropout_shapes() if self.dropouts else []
        # The streams TrainingRun derives: the shared passes, SAM's second pass, SWA's BatchNorm update.
        can_group = GroupedForward.supports(self.template)
        if grouped and not can_group:
            raise SpecError([f"model.name={spec.model.name!r} has layers the grouped forward lacks; fix: grouped=None"])
        self.grouped = GroupedForward(self.template, S, channels_last=first.channels_last) \
            if (can_group if grouped is None else grouped) else None
        self.dropout_gens = {purpose: [torch.Generator(self.device).manual_seed(derive_seed(s.seed, name))
                                       for s in specs]
                             for purpose, name in (("main", "dropout"), ("sam", "dropout-sam"),
                                                   ("swa", "dropout-swa"))}
        self.data_gens = [r.data_gen for r in runs]
        self.optimizer = build_optimizer([self.params[n] for n in self.trainable], spec)
        self.scheduler = None
        if spec.optim.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, spec.train.epochs)
        self.methods = [self._between_epochs(r) for r in runs]
        self.sam = spec.method if spec.method.name == "sam" else None
        self.swa = PackedSWA(self) if spec.method.name == "swa" else None
        self.results = [r.result for r in runs]
        self.epoch = 0
        self.train_s = [0.0] * S

    # ------------------------------------------------------------------ setup

    def _masked_dropouts(self) -> list[MaskedDropout]:
        masked = []
        for module in list(self.template.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.Dropout):
                    replacement = MaskedDropout(child.p)
                    setattr(module, name, replacement)
                    masked.append(replacement)
        return [m for m in masked if m.p > 0]

    def _probe_dropout_shapes(self) -> list[tuple[int, ...]]:
        """Each dropout's input shape without the batch dimension, in forward order (one eval pass)."""
        order: list[tuple[MaskedDropout, tuple[int, ...]]] = []
        hooks = [m.register_forward_pre_hook(lambda mod, args: order.append((mod, tuple(args[0].shape[1:]))))
                 for m in self.dropouts]
        self.template.eval()
        with torch.no_grad():
            x = self.data.train.x[:2]
            self._forward({k: v[0] for k, v in self.params.items()}, {k: v[0] for k, v in self.buffers.items()},
                          [], x, packed=False)
        for h in hooks:
            h.remove()
        self.dropouts = [m for m, _ in order]
        return [shape for _, shape in order]

    def _between_epochs(self, run: TrainingRun) -> Method:
        """The seed's own method object, kept for its stress, triggers and noise generator; its
        interventions are pointed at the seed's slice of the stacked weights."""
        method = run.method
        if REGISTRY[run.spec.method.name] in (SAM, SWA):  # their between-epoch logic is the base one
            method = Method(MethodContext(model=run.model, spec=run.spec, loss_fn=None, generator=None,
                                          method_seed=0, autocast=run.autocast, train_batches=run._full_batches))
        s = self.runs.index(run)
        view_of = {id(p): self.params[name][s] for name, p in run.model.named_parameters()}
        for act in (getattr(method, "act", None), getattr(getattr(method, "pdo", None), "act", None)):
            if isinstance(act, Interventions):
                act.params = [view_of[id(p)] for p in act.params]
                act.deform_params = [view_of[id(p)] for p in act.deform_params]
        run.method = None  # the per-seed optimizer and SWA copy are not used packed; finish() sets it back
        return method

    # ------------------------------------------------------------------ compute

    def _forward(self, params, buffers, masks, x, *, packed=True, x_batched=True, y=None):
        """logits ([S,] B, C), and the per-seed mean loss when ``y`` is given."""
        smoothing = self.runs[0].spec.train.label_smoothing

        def one(p, b, m, xi, yi):
            for module, mask in zip(self.dropouts, m):
                module.mask = mask
            with self.autocast():
                logits = functional_call(self.template, (p, b), (xi,))
            if yi is None:
                return logits
            return F.cross_entropy(logits.float(), yi, label_smoothing=smoothing), logits

        try:
            if packed and self.grouped is not None:
                for module, mask in zip(self.dropouts, masks):
                    module.mask = mask
                with self.autocast():
                    logits = self.grouped(params, buffers, x, x_batched=x_batched)
                if y is None:
                    return logits
                losses = F.cross_entropy(logits.float().transpose(1, 2), y, label_smoothing=smoothing, reduction="none")
                return losses.mean(1), logits
            if not packed:
                return one(params, buffers, masks, x, y)
            dims = (0, 0, 0, 0 if x_batched else None, None if y is None else 0)
            return vmap(one, in_dims=dims, randomness="error")(params, buffers, masks, x, y)
        finally:
            for module in self.dropouts:
                module.mask = None

    def _masks(self, batch: int, stream: str = "main") -> list[torch.Tensor]:
        """Per dropout layer, [S, batch, ...] masks scaled by 1/(1-p), each seed from its own generator
        with the calls F.dropout makes on the CPU (so they equal the unpacked run's masks)."""
        if not self.dropouts or not self.template.training:
            return []
        per_seed = []
        for gen in self.dropout_gens[stream]:
            row = []
            for module, shape in zip(self.dropouts, self.mask_shapes):
                noise = torch.empty((batch, *shape), device=self.device).bernoulli_(1 - module.p, generator=gen)
                row.append(noise.div_(1 - module.p))
            per_seed.append(row)
        return [torch.stack(layer) for layer in zip(*per_seed)]

    def _batch(self, orders: list[torch.Tensor], b: int) -> tuple[torch.Tensor, torch.Tensor]:
        train_set, spec, bs = self.data.train, self.specs[0].data, self.bs
        idx = torch.stack([o[b * bs:(b + 1) * bs] for o in orders])
        x, y = train_set.x[idx], train_set.y[idx]
        if spec.augment:
            x = torch.stack([augment_batch(x[s], g, flip=spec.flip, translate=spec.translate)
                             for s, g in enumerate(self.data_gens)])
        return x, y

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, sam_norm: torch.Tensor | None):
        loss, logits = self._forward(self.params, self.buffers, self._masks(x.shape[1]), x, y=y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        if self.sam is not None:
            self._sam_second_pass(x, y, sam_norm)
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def _sam_second_pass(self, x: torch.Tensor, y: torch.Tensor, norm_sum: torch.Tensor) -> None:
        """SAM's ascent with each seed's own gradient norm, then the gradient at w + e (see methods/sam.py)."""
        k = self.sam
        with torch.no_grad():
            params = [self.params[n] for n in self.trainable if self.params[n].grad is not None]
            grads = [p.grad for p in params]
            scale = torch._foreach_add(torch._foreach_abs(params), k.eta) if k.adaptive else None
            grads_t = torch._foreach_mul(grads, scale) if scale is not None else grads
            norm = torch.linalg.vector_norm(torch.stack([g.flatten(1).norm(dim=1) for g in grads_t]), dim=0) + 1e-12
            eps = torch._foreach_mul(grads_t, scale) if scale is not None else [g.clone() for g in grads_t]
            factor = k.rho / norm
            for e in eps:
                e.mul_(factor.view(-1, *[1] * (e.dim() - 1)))
            torch._foreach_add_(params, eps)
            norm_sum += torch.linalg.vector_norm(torch.stack([e.flatten(1).norm(dim=1) for e in eps]), dim=0)
        _freeze_bn_stats(self.template, True)
        try:
            self.optimizer.zero_grad(set_to_none=True)
            self._forward(self.params, self.buffers, self._masks(x.shape[1], "sam"), x, y=y)[0].sum().backward()
        finally:
            _freeze_bn_stats(self.template, False)
            with torch.no_grad():
                torch._foreach_sub_(params, eps)

    @torch.no_grad()
    def _evaluate(self, params, buffers, split) -> torch.Tensor:
        """[3, S]: loss sum, correct, top-5 correct per seed (no sync)."""
        self.template.eval()
        totals = torch.zeros(3, self.S, device=self.device)
        for start in range(0, len(split), self.eval_bs):
            x, y = split.x[start:start + self.eval_bs], split.y[start:start + self.eval_bs]
            logits = self._forward(params, buffers, [], x, x_batched=False).float()
            k = min(5, logits.shape[-1])
            totals[0] += F.cross_entropy(logits.transpose(1, 2), y.expand(self.S, -1), reduction="none").sum(1)
            totals[1] += (logits.argmax(-1) == y).sum(1)
            totals[2] += (logits.topk(k, -1).indices == y[None, :, None]).any(-1).sum(1)
        return totals

    # ------------------------------------------------------------------ the run-group interface

    @property
    def done(self) -> bool:
        return all(r.status != STATUS_FINISHED for r in self.results) or self.epoch >= self.specs[0].train.epochs

    def step(self) -> list[dict[str, float] | None]:
        """Train and evaluate one more epoch of every seed; one history row per seed (None if stopped)."""
        interrupts.check()
        t0 = time.perf_counter()
        self.epoch += 1
        epoch, S, n = self.epoch, self.S, self.n_batches
        live = [r.status == STATUS_FINISHED for r in self.results]
        self.template.train()
        orders = [torch.randperm(len(self.data.train), device=self.device, generator=g) for g in self.data_gens]
        loss_sum = torch.zeros(S, device=self.device)
        correct = torch.zeros(S, device=self.device)
        sam_norm = torch.zeros(S, device=self.device) if self.sam is not None else None
        for b in range(n):
            x, y = self._batch(orders, b)
            loss, logits = self._train_step(x, y, sam_norm)
            loss_sum += loss.float()
            correct += (logits.argmax(-1) == y).sum(1)
        if self.swa is not None:
            self.swa.on_epoch_trained(epoch)
        has_val = len(self.data.val) > 0
        parts = [loss_sum, correct]
        if has_val:
            parts += list(self._evaluate(*self.eval_weights(), self.data.val))
        if sam_norm is not None:
            parts.append(sam_norm)
        values = torch.stack(parts).T.tolist()  # the epoch's one sync: [S][k]
        lr = self.optimizer.param_groups[0]["lr"]  # the epoch's lr, logged as optim/lr like Method.end_epoch
        if self.swa is not None and self.swa.n_averaged:
            self.swa.scheduler.step()
        elif self.scheduler is not None:
            self.scheduler.step()
        rows = [{**self._row(s, values[s], has_val), "optim/lr": lr} if live[s] else None for s in range(S)]
        again_for = [s for s, row in enumerate(rows)
                     if row is not None and validate_again(row, self.specs[s].train, has_val=has_val)]
        if again_for:
            again = self._evaluate(*self.eval_weights(), self.data.val)[:2].T.tolist()
            for s in again_for:
                rows[s]["val/loss"], rows[s]["val/acc"] = (v / len(self.data.val) for v in again[s])
        elapsed = (time.perf_counter() - t0) / max(1, sum(live))  # each live seed's share of the epoch
        for s, row in enumerate(rows):
            if row is not None:
                row["time/epoch_s"] = elapsed
                self.train_s[s] += elapsed
                self.results[s].history.append(row)
        return rows

    def _row(self, s: int, v: list[float], has_val: bool) -> dict[str, float]:
        n = self.n_batches
        row = mean_row(self.epoch, v, n_batches=n, batch_size=self.bs, n_val=len(self.data.val) if has_val else 0)
        if self.sam is not None:
            row["sam/perturb_norm"] = v[-1] / n
        result = self.results[s]
        why = divergence(row)
        if why:
            result.status, result.message = STATUS_DIVERGED, why
        else:
            row.update(self.methods[s].intervene(epoch_stats(row, self.specs[s].train)))
        return row

    def eval_weights(self) -> tuple[dict, dict]:
        """The stacked weights to evaluate: SWA's averages once averaging has begun."""
        if self.swa is not None and self.swa.n_averaged:
            return self.swa.eval_weights()
        return self.params, self.buffers

    def prune(self, message: str) -> None:
        """Stop every seed still training (a diverged seed keeps its status)."""
        for r in self.results:
            if r.status == STATUS_FINISHED:
                r.status, r.message = STATUS_PRUNED, message

    def finish(self) -> list[Result]:
        """Test metrics, timing and memory per seed: each seed's final weights go back into its own
        TrainingRun, whose ``finish`` computes them exactly as for an unpacked run; the sharpness (a
        forward and backward pass over up to 2048 samples per seed) is computed for all seeds at once."""
        params, buffers = self.eval_weights()
        limit = self.specs[0].train.sharpness_samples
        sharpness = self._grad_norms(params, buffers, limit) if limit else None
        for s, run in enumerate(self.runs):
            with torch.no_grad():
                for name, t in [*run.model.named_parameters(), *run.model.named_buffers()]:
                    t.copy_((params if name in params else buffers)[name][s])
            run.method = self.methods[s]  # its eval_model() is run.model
            run.train_s = self.train_s[s]
            spec, run.spec = run.spec, run.spec.model_copy(
                update={"train": run.spec.train.model_copy(update={"sharpness_samples": 0})})
            run.result.tags[TAG_SEEDS_PER_MODEL] = str(len(self.runs))
            run.finish()
            run.spec = spec
            if sharpness is not None and run.result.status != STATUS_DIVERGED:
                run.result.final["sharpness/grad_norm"] = sharpness[s]
        return self.results

    def _grad_norms(self, params: dict, buffers: dict, limit: int) -> list[float]:
        """train._grad_norm for every seed: the norm of the full-batch training-loss gradient over at most
        ``limit`` samples, in eval mode (one sync)."""
        self.template.eval()
        train_set, names = self.data.train, [n for n in self.trainable]
        weights = {k: v.detach().requires_grad_(k in names) for k, v in params.items()}
        n = min(limit, len(train_set))
        grads = [torch.zeros_like(weights[k]) for k in names]
        for start in range(0, n, self.eval_bs):
            x, y = train_set.x[start:min(start + self.eval_bs, n)], train_set.y[start:min(start + self.eval_bs, n)]
            logits = self._forward(weights, buffers, [], x, x_batched=False).float()
            loss = F.cross_entropy(logits.transpose(1, 2), y.expand(self.S, -1), reduction="none").sum(1) / n
            for acc, g in zip(grads, torch.autograd.grad(loss.sum(), [weights[k] for k in names], allow_unused=True)):
                if g is not None:
                    acc += g
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads])
        return torch.linalg.vector_norm(norms, dim=0).tolist()
