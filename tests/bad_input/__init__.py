"""Bad input, one place: what real users get wrong, and what a hostile server or file could do. Each test asserts the
error type and a message fragment (or the partial result that is kept). Modules:

- ``test_arguments``: layers and heads as numpy or torch integers (accepted) or as bools, floats, 2-D arrays, single
  values (refused); memory budgets that are NaN, infinite, not positive or not numbers; seeds that are negative or
  not integers; a device this machine lacks.
- ``test_cli_and_models``: ``--out`` and ``--save`` checked before the model loads; one line and exit 2 for every
  failure; Ctrl-C exits 130 with the partial result said to be partial; an unwritable cache; a model path that is
  not a folder; truncated weights (named).
- ``test_datasets``: a dataset tokenised by another model's tokenizer (and the explicit override), a model's name
  where a loaded model is expected, a list where a dataset is.
- ``test_dissociation``: the recall-versus-reasoning workbench: a family whose answers split into several tokens, no
  items left after filtering, bad custom families, a granularity the model lacks, unknown components in a
  user-given set, items of another tokenizer, bad ablation, bootstrap, correction and control settings, a
  selectivity baseline of 0: each before any ablated pass.
- ``test_files``: every loader against empty, truncated, binary, foreign, other-kind, newer- or older-format files
  and missing or extra keys; interrupted saves that must leave the old file intact; HTML reports whose strings try
  to end their script element.
- ``test_interrupts``: an interrupted sweep keeps what finished; the next sweep in the same script stops; a sweep in
  a later notebook cell starts normally.
- ``test_remote_trust``: plain http:// to another machine, credentials in a URL, an API key in the wrong place, a
  server that echoes the key.
"""
