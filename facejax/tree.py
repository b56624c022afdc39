"""Parameter names and per-parameter regex rules (STYLE.md, Configs).

Per-parameter behaviour — learning-rate and decay multipliers, pruning —
is written as an ordered list of ``(regex, value)`` rules over
slash-joined parameter names such as ``"fc6/kernel"``. Each name takes the
value of the first rule whose regex matches it in full; a name that no rule
matches is an error, so a typo cannot silently leave a layer untrained.
"""

import re
from typing import Any, Iterable, Sequence

from absl import logging
import jax

from facejax import config_lib


def path_name(path) -> str:
  """Slash-joined name of a pytree key path: ``fc6/kernel``."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def named_leaves(tree) -> list[tuple[str, Any]]:
  """``[(name, leaf), ...]`` in the tree's flattening order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(path_name(path), leaf) for path, leaf in flat]


def map_with_names(fn, tree):
  """``jax.tree.map`` whose function also receives the leaf's name."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: fn(path_name(path), leaf), tree)


def resolve_rules(names: Iterable[str], rules: Sequence[tuple[str, Any]],
                  what: str) -> dict[str, Any]:
  """Gives every name the value of its first fully matching rule.

  Args:
    names: slash-joined parameter names.
    rules: ordered ``(regex, value)`` pairs; the first full match wins.
    what: what the rules set, for the log and the error (``"lr_mult"``).

  Returns:
    ``{name: value}``.

  Raises:
    ValueError: a rule is malformed or a name matches no rule.
  """
  compiled = []
  for i, rule in enumerate(rules):
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise config_lib.ConfigError(
          f"{what} rule #{i} must be (regex, value), got {rule!r}")
    try:
      compiled.append((re.compile(rule[0]), rule[0], rule[1]))
    except re.error as e:
      raise config_lib.ConfigError(
          f"{what} rule #{i}: bad regex {rule[0]!r}: {e}") from e
  values = {}
  for name in names:
    for pattern, text, value in compiled:
      if pattern.fullmatch(name):
        logging.info("%s: %s matched %r -> %s", what, name, text, value)
        values[name] = value
        break
    else:
      raise config_lib.ConfigError(
          f"{what}: parameter {name!r} matches no rule in "
          f"{[r[0] for r in rules]}; add a rule for it (e.g. ('.*', ...)).")
  return values


def rule_tree(tree, rules: Sequence[tuple[str, Any]], what: str):
  """A tree shaped like ``tree`` holding each leaf's rule value."""
  values = resolve_rules([n for n, _ in named_leaves(tree)], rules, what)
  return map_with_names(lambda name, _: values[name], tree)
