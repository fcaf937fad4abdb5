"""MetaPoison (Huang et al. 2020): clean-label poisons optimised through unrolled victim training steps, on an
ensemble of networks at staggered stages of training, by the algorithm of the official code
(wronnyhuang/metapoison: main.py, meta.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch.func import functional_call
from torch.nn import functional as F

from ..data import Dataset
from ..errors import ConfigError
from ..models import Classifier, for_second_order
from ..models.train import augment
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import GradientAttack, check_choice
from .feature_space import adversarial_labels, open_targeted, project


@dataclass(frozen=True)
class MetaPoison(GradientAttack):
    """min over poisons (eps box) of the target's adversarial loss averaged over the K = `unroll` networks θ1..θK
    that K SGD steps from a surrogate's weights reach (Huang et al. 2020, Algorithm 1), differentiated through the
    steps. As the official code does it:

    - `stages` surrogates of the surrogate's architecture, surrogate m `stage_epochs`·m epochs into its own
      training; every crafting step advances each one by a full epoch of training on the clean data
      (`trajectory="clean"`; "poison" trains on the current poisons), and one whose epoch count wraps around
      `stages`·`stage_epochs` is re-initialised;
    - over that epoch, each batch that holds poisons (the poisons in place of their bases, in random batches of
      `batch_size` as in training) gives a metagradient: K unrolled steps, the first on that batch, the next ones
      on the following batches (their poisons fixed), the target's loss read after each step and averaged;
    - the loss is Carlini-Wagner's margin (max other logit - adversarial logit, floored at -100; `objective="cw"`)
      or cross-entropy ("xent");
    - the summed metagradients, over the batches and averaged over the surrogates, take one Adam step at `lr`
      (200/255: the official 200 on 0-255 pixels), warmed up by ((step + 1) / 5)² and divided by 10 at steps
      `lr_drops` and 2·`lr_drops`; the perturbation starts uniform in ±eps and is clipped to the eps box;
    - the surrogates train by plain SGD (`momentum` 0) at `inner_lr`, linearly warmed up over their first 5 epochs.

    The official run has 24 surrogates 1 epoch apart, 61 steps, batch 125. Departures: `meta_batches` > 0 takes
    metagradients on that many of an epoch's poison-bearing batches only (CPU time; 0: all, as the official
    code); flips and crops on every batch when `augment` (the official default trains without; here it follows
    the victim's recipe); poisons are kept inside [0, 1]; additive perturbations only (no ReColorAdv colour
    term). `params["adversarial_loss"]` holds the final ensemble's unrolled loss with the bases and with the
    poisons (on the same batches)."""

    name: ClassVar[str] = "metapoison"
    summary: ClassVar[str] = "clean-label targeted: poisons through unrolled training, staggered ensemble (2020)"

    steps: int = 60
    lr: float = 200 / 255
    lr_drops: int = 20
    unroll: int = 2
    inner_lr: float = 0.1
    momentum: float = 0.0
    stages: int = 24
    stage_epochs: int = 1
    batch_size: int = 125
    objective: str = "cw"
    trajectory: str = "clean"
    meta_batches: int = 0
    augment: bool = True

    def __post_init__(self) -> None:
        check_choice("objective", self.objective, ("cw", "xent"))
        check_choice("trajectory", self.trajectory, ("clean", "poison"))
        if min(self.steps, self.unroll, self.stages, self.batch_size, self.stage_epochs, self.lr_drops) < 1 or \
                self.meta_batches < 0 or self.lr <= 0 or self.inner_lr <= 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"metapoison needs steps, unroll, stages, stage_epochs, batch_size, lr_drops >= 1, "
                              f"meta_batches >= 0, positive learning rates and momentum in [0, 1); got "
                              f"{asdict(self)}.")

    def craft(self, train: Dataset, threat: ThreatModel, surrogate: Classifier | list[Classifier] | None = None,
              seed: int = 0, validation: Dataset | None = None) -> PoisonSet:
        if len(train) < self.batch_size * (self.unroll + 1):
            raise ConfigError(f"metapoison unrolls {self.unroll} steps over batches of {self.batch_size}: it needs "
                              f"at least {self.batch_size * (self.unroll + 1)} training images; got {len(train)}. "
                              "Lower batch_size.")
        g = generator(seed, self.name)
        opening = open_targeted(self, train, threat, surrogate, g)
        device = opening.bases.device
        run = Run(self, train, opening.indices, opening.bases, opening.target,
                  adversarial_labels(opening.target, threat.target_class))
        start = (torch.rand(opening.bases.shape, generator=g).to(device) * 2 - 1) * threat.eps
        delta = (project(opening.bases + start, opening.bases, threat.eps) - opening.bases).requires_grad_(True)
        adam = torch.optim.Adam([delta], lr=self.lr)
        surrogates = [Surrogate(self, opening.models[0], g) for _ in range(self.stages)]
        for step in range(self.steps):
            total = torch.zeros_like(delta)
            for m, member in enumerate(surrogates):
                epoch = (m * self.stage_epochs + step) % (self.stages * self.stage_epochs)
                member.reach(epoch, run, fresh=step == 0)
                total += member.epoch_with_metagradients(run, delta)
            delta.grad = total / len(surrogates)
            for group in adam.param_groups:
                group["lr"] = self.craft_rate(step)
            adam.step()
            with torch.no_grad():
                delta.copy_(project(opening.bases + delta, opening.bases, threat.eps) - opening.bases)
        poisons = (opening.bases + delta.detach()).clamp(0, 1)
        before, after = (run.ensemble_loss(surrogates, d)
                         for d in (torch.zeros_like(poisons), poisons - opening.bases))
        return opening.poison_set(self, poisons, threat, adversarial_loss=[before, after])

    def craft_rate(self, step: int) -> float:
        """The official schedule: warm-up ((step + 1) / 5)², then /10 at `lr_drops` and again at 2·`lr_drops`."""
        return self.lr * min(((step + 1) / 5) ** 2, 1.0) * 0.1 ** min(step // self.lr_drops, 2)

    def inner_rate(self, epoch: int) -> float:
        """The surrogates' SGD learning rate at `epoch`: linear warm-up over the first 5 epochs."""
        return self.inner_lr * min(1.0, (epoch + 1) / 5)

    @property
    def augmentation(self) -> str:
        return "flip-crop" if self.augment else "none"


class Run:
    """What one crafting shares: the training set with the bases' rows known, the target and its labels."""

    def __init__(self, attack: MetaPoison, train: Dataset, indices: torch.Tensor, bases: torch.Tensor,
                 target: torch.Tensor, adversarial: torch.Tensor):
        self.attack, self.train, self.bases, self.target, self.adversarial = attack, train, bases, target, adversarial
        self.slot = torch.full((len(train),), -1, dtype=torch.long)  # training row -> poison row
        self.slot[indices] = torch.arange(len(indices))
        self.device = bases.device

    def batches(self, g: torch.Generator) -> torch.Tensor:
        """An epoch's batches (rows of training indices), the last partial batch dropped, as the official code."""
        n = len(self.train) // self.attack.batch_size * self.attack.batch_size
        return torch.randperm(len(self.train), generator=g)[:n].view(-1, self.attack.batch_size)

    def bearing(self, batches: torch.Tensor) -> list[int]:
        """The positions of the batches that hold poisons."""
        return torch.nonzero((self.slot[batches] >= 0).any(1)).squeeze(1).tolist()

    def images(self, batch: torch.Tensor, delta: torch.Tensor | None, g: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's images (augmented), its poisons' perturbed images in their place when `delta` is given."""
        x, y = self.train.x[batch].to(self.device), self.train.y[batch].to(self.device)
        rows = self.slot[batch]
        if delta is not None and bool((rows >= 0).any()):
            has = torch.nonzero(rows >= 0).squeeze(1)
            poisons = (self.bases[rows[has]] + delta[rows[has]]).clamp(0, 1)
            x = x.index_put((has.to(self.device),), poisons)
        return augment(x, self.attack.augmentation, g), y

    def unrolled_loss(self, model: Classifier, batches: torch.Tensor, k: int, delta: torch.Tensor, rate: float,
                      g: torch.Generator) -> torch.Tensor:
        """The target's loss after each of `unroll` differentiable SGD steps from the model's weights, averaged:
        step i on batch k + i (its poisons differentiated only in the first), the target forwarded with each batch
        (batch-norm in training mode, its running statistics the model's own and left untouched)."""
        attack = self.attack
        params = {name: p.detach().requires_grad_(True) for name, p in model.named_parameters()}
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        model.train()
        total = delta.new_zeros(())
        for i in range(attack.unroll + 1):
            x, y = self.images(batches[(k + i) % len(batches)], delta if i == 0 else delta.detach(), g)
            logits = functional_call(model, (params, buffers), (torch.cat([x, self.target]),))
            if i:
                total = total + target_loss(logits[len(x):], self.adversarial, attack.objective)
            if i < attack.unroll:
                grads = torch.autograd.grad(F.cross_entropy(logits[:len(x)], y), list(params.values()),
                                            create_graph=True)
                params = {name: p - rate * grad for (name, p), grad in zip(params.items(), grads, strict=True)}
        return total / attack.unroll

    def ensemble_loss(self, surrogates: list[Surrogate], delta: torch.Tensor, batches: int = 4) -> float:
        """The unrolled loss averaged over the surrogates and the first `batches` poison-bearing batches of one
        epoch order, with the same draws of augmentation for every `delta` compared."""
        order = self.batches(torch.Generator().manual_seed(0))
        values = []
        for member in surrogates:
            for k in self.bearing(order)[:batches]:
                values.append(float(self.unrolled_loss(member.model, order, k, delta.detach(), member.rate,
                                                       torch.Generator().manual_seed(k)).detach()))
        return sum(values) / max(len(values), 1)


class Surrogate:
    """One member of the staggered ensemble: a copy of the surrogate's architecture (NCHW weights:
    `for_second_order`), its SGD optimizer and how many epochs it has trained."""

    def __init__(self, attack: MetaPoison, template: Classifier, g: torch.Generator):
        self.attack, self.template, self.g = attack, template, g
        self.model, self.optimizer, self.epoch, self.rate = None, None, 0, attack.inner_rate(0)

    def reset(self) -> None:
        model = for_second_order(self.template)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=self.g)))
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        self.model = model.requires_grad_(True).train()
        self.optimizer = torch.optim.SGD(model.parameters(), lr=self.attack.inner_lr, momentum=self.attack.momentum)
        self.epoch = 0

    def reach(self, epoch: int, run: Run, fresh: bool) -> None:
        """Before a crafting step: re-initialised at epoch 0 (the wrap-around), trained on the clean data up to
        `epoch` at the first step (the staggered pretraining)."""
        if epoch == 0 or self.model is None:
            self.reset()
        while fresh and self.epoch < epoch:
            self.train_epoch(run, run.batches(self.g), None)

    def train_epoch(self, run: Run, batches: torch.Tensor, delta: torch.Tensor | None,
                    metagradient=None, chosen: frozenset[int] = frozenset()) -> None:
        """One epoch of SGD over `batches` on the clean data (or with the poisons: `delta`); each batch in
        `chosen` first calls `metagradient(model, batches, k, rate)`."""
        self.rate = self.attack.inner_rate(self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate
        for k, batch in enumerate(batches):
            if k in chosen:
                metagradient(self.model, batches, k, self.rate)
            self.model.train()
            x, y = run.images(batch, delta, self.g)
            self.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x), y).backward()
            self.optimizer.step()
        self.epoch += 1

    def epoch_with_metagradients(self, run: Run, delta: torch.Tensor) -> torch.Tensor:
        """A crafting step's work for this surrogate: its epoch of training, with the summed metagradients of the
        batches that hold poisons (all of them, or `meta_batches` of them drawn)."""
        live = delta.detach().requires_grad_(True)
        total = torch.zeros_like(live)
        batches = run.batches(self.g)
        bearing = run.bearing(batches)
        if self.attack.meta_batches and len(bearing) > self.attack.meta_batches:
            bearing = [bearing[int(i)] for i in torch.randperm(len(bearing), generator=self.g)
                       [:self.attack.meta_batches]]

        def metagradient(model: Classifier, order: torch.Tensor, k: int, rate: float) -> None:
            loss = run.unrolled_loss(model, order, k, live, rate, self.g)
            total.add_(torch.autograd.grad(loss, live)[0])

        self.train_epoch(run, batches, live.detach() if self.attack.trajectory == "poison" else None,
                         metagradient, frozenset(bearing))
        return total


def target_loss(logits: torch.Tensor, adversarial: torch.Tensor, objective: str) -> torch.Tensor:
    """Cross-entropy toward the adversarial class, or Carlini-Wagner's margin: the largest other logit minus the
    adversarial one, floored at -100 (the official `carlini`), averaged over the target images."""
    if objective == "xent":
        return F.cross_entropy(logits, adversarial)
    own = logits.gather(1, adversarial[:, None]).squeeze(1)
    others = logits.scatter(1, adversarial[:, None], float("-inf")).amax(1)
    return (others - own).clamp_min(-100).mean()
