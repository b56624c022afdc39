"""Pruning schedules against hand-computed values."""

import pytest

from facejax.prune import pruner
from facejax.prune import schedules


def test_one_shot():
  schedule = schedules.OneShot(step=10)
  assert schedule.update_steps() == (10,)
  assert schedule.kept_fraction(9, 0.05) == 1.0
  assert schedule.kept_fraction(10, 0.05) == 0.05
  assert schedule.kept_fraction(70_000, 0.05) == 0.05
  assert schedules.OneShot().update_steps() == (0,)


def test_iterative_geometric():
  schedule = schedules.Iterative(cycle_steps=100, num_cycles=3, start_step=10)
  assert schedule.update_steps() == (10, 110, 210)
  # 0.125 ** (1/3) = 0.5, ** (2/3) = 0.25.
  expected = {0: 1.0, 9: 1.0, 10: 0.5, 109: 0.5, 110: 0.25, 209: 0.25,
              210: 0.125, 10_000: 0.125}
  for step, kept in expected.items():
    assert schedule.kept_fraction(step, 0.125) == pytest.approx(kept), step


def test_cubic_agp():
  schedule = schedules.Cubic(interval_steps=10, num_updates=4, start_step=100)
  assert schedule.update_steps() == (100, 110, 120, 130, 140)
  # s_t = 0.9 + (0 - 0.9)(1 - j/4)^3 at t = 100 + 10 j (final kept 0.1).
  expected = {99: 1.0, 100: 1.0, 109: 1.0,
              110: 1 - 0.9 * (1 - 0.421875),   # (3/4)^3 = 0.421875
              115: 1 - 0.9 * (1 - 0.421875),
              120: 1 - 0.9 * (1 - 0.125),      # (1/2)^3
              130: 1 - 0.9 * (1 - 0.015625),   # (1/4)^3
              140: 0.1, 5_000: 0.1}
  for step, kept in expected.items():
    assert schedule.kept_fraction(step, 0.1) == pytest.approx(kept), step
  assert expected[110] == pytest.approx(0.4796875)
  assert expected[120] == pytest.approx(0.2125)
  assert expected[130] == pytest.approx(0.1140625)


def test_cubic_initial_sparsity():
  schedule = schedules.Cubic(interval_steps=5, num_updates=2, start_step=0,
                             initial_kept=0.5)
  # s_i = 0.5, s_f = 0.9: s = 0.9 - 0.4 (1 - j/2)^3.
  assert schedule.kept_fraction(0, 0.1) == pytest.approx(0.5)
  assert schedule.kept_fraction(5, 0.1) == pytest.approx(1 - (0.9 - 0.05))
  assert schedule.kept_fraction(10, 0.1) == pytest.approx(0.1)


def test_cubic_is_monotone():
  schedule = schedules.Cubic(interval_steps=1, num_updates=50)
  values = [schedule.kept_fraction(t, 0.05) for t in range(60)]
  assert all(a >= b for a, b in zip(values, values[1:]))


def test_make_by_name():
  assert schedules.make("one_shot") == schedules.OneShot()
  assert schedules.make("iterative", cycle_steps=5, num_cycles=2) == (
      schedules.Iterative(5, 2))
  assert schedules.make("cubic", interval_steps=3, num_updates=7,
                        start_step=2) == schedules.Cubic(3, 7, 2)


@pytest.mark.parametrize("name, kwargs, message", [
    ("agp", {}, "unknown prune schedule"),
    ("one_shot", {"steps": 3}, "unknown arguments"),
    ("iterative", {"cycle_steps": 5}, "num_cycles"),
    ("cubic", {"interval_steps": 0, "num_updates": 3}, "interval_steps"),
    ("cubic", {"interval_steps": 1, "num_updates": 3, "initial_kept": 2.0},
     "initial_kept"),
])
def test_make_errors(name, kwargs, message):
  with pytest.raises(ValueError, match=message):
    schedules.make(name, **kwargs)


def test_pruner_should_update():
  prune = pruner.Pruner((), schedules.Iterative(cycle_steps=4, num_cycles=2))
  assert [s for s in range(12) if prune.should_update(s)] == [0, 4]
