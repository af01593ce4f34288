"""Bad input, one place: what real users get wrong, and what a hostile server or file could do. Each test asserts the
error type and a message fragment (or the partial result that is kept). Modules:

- ``test_datasets``: a dataset tokenised by another model's tokenizer (and the explicit override), a model's name
  where a loaded model is expected, a list where a dataset is.
- ``test_files``: every loader against empty, truncated, binary, foreign, other-kind, newer- or older-format files
  and missing or extra keys; interrupted saves that must leave the old file intact; HTML reports whose strings try
  to end their script element.
- ``test_remote_trust``: plain http:// to another machine, credentials in a URL, an API key in the wrong place, a
  server that echoes the key.
"""
