"""The thesis's figures and tables from facejax's runs, one command.

``python -m facejax.report [--quick]`` (or ``launch/reproduce.sh``) runs
what is missing (``runs.py``), then writes into ``results/`` one CSV and
one PNG per figure and ``REPORT.md``, a line per item beside the thesis's
number. One module per figure family:

* ``curves.py`` — Table 3.2, Fig. 3.2–3.4 (training curves, metrics.jsonl);
* ``pruning.py`` — Fig. 3.5 (sensitivity sweep), Fig. 3.6 (FC weights);
* ``timing.py`` — Table 3.3, Fig. 3.7 (inference time per variant);
* ``data_quantity.py`` — Table 2.4, Fig. 3.8;
* ``images.py`` — Fig. 3.9 (image sizes), Fig. 3.10 (downsampled input);
* ``impostors.py`` — Fig. 3.11 / 3.12 (top probability of strangers);
* ``thesis.py`` the reference numbers, ``markdown.py`` REPORT.md,
  ``output.py`` atomic CSV/PNG writes.
"""
