"""When to prune and to which kept fraction: step → target per rule.

A schedule lists its pruning events (``update_steps``) and maps a step to
the target kept fraction given a rule's final kept fraction ``final``
(``kept_fraction(step, final)``); the value holds from one event to the
next. A pruning event at step ``t`` runs before train step ``t`` (after
``t`` steps), so ``OneShot(0)`` prunes before any retraining.

* ``one_shot`` — thesis §3.2.2: prune once to the target (95 % of fc6–fc8
  layer-wise), then retrain with the pruned weights held at zero.
* ``iterative`` — Han et al. 2015: ``num_cycles`` prune → retrain cycles of
  ``cycle_steps``; after cycle ``c`` (1-based) the kept fraction is
  ``final ** (c / num_cycles)``, a geometric descent from 1 to ``final``.
* ``cubic`` — Zhu & Gupta 2017 (AGP): sparsity
  ``s_t = s_f + (s_i - s_f) · (1 - (t - t0) / (n·Δt))³`` at
  ``t = t0, t0 + Δt, …, t0 + n·Δt``, with ``s = 1 - kept_fraction``.

``make(name, **kwargs)`` selects one by name, as the config does.
"""

import dataclasses
from typing import Protocol


class Schedule(Protocol):

  def update_steps(self) -> tuple[int, ...]:
    """Steps at which masks are recomputed, ascending."""

  def kept_fraction(self, step: int, final: float) -> float:
    """Target kept fraction at ``step`` for a rule whose final is ``final``."""


def _check(name: str, value: int, minimum: int):
  if not isinstance(value, int) or value < minimum:
    raise ValueError(f"prune schedule: {name} must be an integer >= "
                     f"{minimum}, got {value!r}")


def _last_event(schedule: Schedule, step: int) -> int | None:
  """Index of the last event at or before ``step``, None before the first."""
  index = None
  for i, event in enumerate(schedule.update_steps()):
    if event <= step:
      index = i
  return index


@dataclasses.dataclass(frozen=True)
class OneShot:
  """Prune once at ``step`` straight to the final kept fraction."""
  step: int = 0

  def __post_init__(self):
    _check("step", self.step, 0)

  def update_steps(self) -> tuple[int, ...]:
    return (self.step,)

  def kept_fraction(self, step: int, final: float) -> float:
    return 1.0 if step < self.step else final


@dataclasses.dataclass(frozen=True)
class Iterative:
  """Han et al.'s prune → retrain cycles with a geometric descent.

  Attributes:
    cycle_steps: retraining steps between two pruning events.
    num_cycles: number of pruning events; the last reaches the target.
    start_step: step of the first event.
  """
  cycle_steps: int
  num_cycles: int
  start_step: int = 0

  def __post_init__(self):
    _check("cycle_steps", self.cycle_steps, 1)
    _check("num_cycles", self.num_cycles, 1)
    _check("start_step", self.start_step, 0)

  def update_steps(self) -> tuple[int, ...]:
    return tuple(self.start_step + c * self.cycle_steps
                 for c in range(self.num_cycles))

  def kept_fraction(self, step: int, final: float) -> float:
    index = _last_event(self, step)
    if index is None:
      return 1.0
    if index + 1 == self.num_cycles:
      return final  # Exactly the target, free of pow rounding.
    return final ** ((index + 1) / self.num_cycles)


@dataclasses.dataclass(frozen=True)
class Cubic:
  """Zhu & Gupta's automated gradual pruning (AGP), cubic in time.

  Attributes:
    interval_steps: Δt, steps between pruning events.
    num_updates: n; events at t0 + jΔt for j = 0 … n, the last at target.
    start_step: t0.
    initial_kept: 1 - s_i, the kept fraction of the event at t0.
  """
  interval_steps: int
  num_updates: int
  start_step: int = 0
  initial_kept: float = 1.0

  def __post_init__(self):
    _check("interval_steps", self.interval_steps, 1)
    _check("num_updates", self.num_updates, 1)
    _check("start_step", self.start_step, 0)
    if not 0.0 <= self.initial_kept <= 1.0:
      raise ValueError("prune schedule: initial_kept must lie in [0, 1], got "
                       f"{self.initial_kept}")

  def update_steps(self) -> tuple[int, ...]:
    return tuple(self.start_step + j * self.interval_steps
                 for j in range(self.num_updates + 1))

  def kept_fraction(self, step: int, final: float) -> float:
    index = _last_event(self, step)
    if index is None:
      return 1.0
    if index == self.num_updates:
      return final
    initial_sparsity, final_sparsity = 1.0 - self.initial_kept, 1.0 - final
    progress = index / self.num_updates  # (t - t0) / (n·Δt) at the event.
    sparsity = final_sparsity + (initial_sparsity - final_sparsity) * (
        1.0 - progress) ** 3
    return 1.0 - sparsity


SCHEDULES = {"one_shot": OneShot, "iterative": Iterative, "cubic": Cubic}


def make(name: str, **kwargs) -> Schedule:
  """A schedule by name: ``make("cubic", interval_steps=100, num_updates=10)``.

  Raises:
    ValueError: an unknown name or argument, or a bad value.
  """
  if name not in SCHEDULES:
    raise ValueError(f"unknown prune schedule {name!r}; expected one of "
                     f"{tuple(SCHEDULES)}")
  cls = SCHEDULES[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(kwargs) - fields
  if unknown:
    raise ValueError(f"prune schedule {name!r}: unknown arguments "
                     f"{sorted(unknown)}; expected some of {sorted(fields)}")
  try:
    return cls(**kwargs)
  except TypeError as e:
    raise ValueError(f"prune schedule {name!r}: {e}") from e
