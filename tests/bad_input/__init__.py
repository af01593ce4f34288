"""Bad input, one place: what real users get wrong, and what a hostile server or file could do. Each test asserts the
error type and a message fragment (or the partial result that is kept). Modules:

- ``test_remote_trust``: plain http:// to another machine, credentials in a URL, an API key in the wrong place, a
  server that echoes the key.
"""
