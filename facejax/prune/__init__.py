"""Weight pruning of thesis §2.5.2 and §3.2.2: rules, masks, schedules.

Rules (``rules.py``, eq. 2.15–2.18) are pure NumPy functions
``(weights, gamma) -> keep_mask``: ``naive``, ``layer_wise``,
``neuron_wise``. A "row" of the thesis is one output neuron: a column of a
Flax (in, out) dense kernel, an output filter of an HWIO conv kernel. μ, σ
are statistics of the signed W, as the thesis text writes them.
``solve.solve(rule, weights, kept_fraction)`` finds one γ per layer with
``np.partition`` (no full sort) and keeps exactly
``round(kept_fraction · n)`` weights (boundary ties broken in row-major
order). Solving runs on the host in NumPy; nothing here runs under ``jit``.

Which parameters, by which rule, to which final kept fraction: ordered
``(regex, rule_name, kept_fraction)`` rules over slash-joined names,
``re.fullmatch``, first match wins, every match logged, unmatched is an
error. ``"none"`` (kept fraction 1.0) leaves a parameter dense; biases are
pruned only if a rule says so::

  RULES = (("fc[678]/kernel", "layer_wise", 0.05), (".*", "none", 1.0))

Masks live in the optimizer state: ``Pruner.wrap(tx)`` (``masking.wrap``)
gives an optax transformation whose state is ``MaskedState(inner_state,
masks, gammas, kept_targets)``; ``masks`` is a tree like the params with a
bool array per pruned leaf and ``None`` elsewhere (orbax saves and restores
both, tested); ``gammas``/``kept_targets`` are float32 scalars, so a
checkpoint records γ and the target per layer. ``update`` masks the
gradient and replaces a pruned weight's final update by ``-w``, so pruned
weights are exactly 0.0 after every step, with momentum and coupled weight
decay. ``update`` needs ``params``.

Trainer use (host loop; pruning events are rare and not jitted)::

  pruner = prune.Pruner(config.prune.rules, prune.schedules.make(
      config.prune.schedule, **config.prune.schedule_kwargs))
  tx = pruner.wrap(optim.caffe_sgd(params, ...))
  state = {"params": params, "opt_state": tx.init(params), "step": 0, ...}
  # Restore target: jax.eval_shape of the same init functions.
  for step in range(first_step, total_steps):
    if pruner.should_update(step):  # An event runs before train step `step`.
      params, opt_state, rows = pruner.apply_masks_now(
          state["params"], state["opt_state"], step)
      state = dict(state, params=params, opt_state=opt_state)
      logging.info("\n%s", prune.format_report(rows))
    state, metrics = train_step(state, batch)  # tx.update(g, opt, params)
  meta["pruning"] = prune.report(state["params"], state["opt_state"], rules)
  meta["masks_path"] = prune.masks_path(state)  # ("opt_state", "masks")

Schedules (``schedules.py``): ``one_shot`` (thesis §3.2.2), ``iterative``
(Han et al. 2015) and ``cubic`` (Zhu & Gupta's AGP), by name with
``schedules.make``.

Sensitivity (``sensitivity.py``, Fig. 3.5): ``sweep(params, layers, rules,
kept_fractions, evaluate_fn)`` prunes one layer at a time without
retraining; ``write_csv``, ``write_json`` and ``plot`` save the rows.
"""

from facejax.prune import rules
from facejax.prune import schedules
from facejax.prune import sensitivity
from facejax.prune import solve
from facejax.prune.masking import apply_masks
from facejax.prune.masking import find_state
from facejax.prune.masking import masks_path
from facejax.prune.masking import MaskedState
from facejax.prune.masking import wrap
from facejax.prune.pruner import format_report
from facejax.prune.pruner import Pruner
from facejax.prune.pruner import report
from facejax.prune.rules import layer_wise
from facejax.prune.rules import naive
from facejax.prune.rules import neuron_wise
