"""WSGI (PEP 3333): the rules of the interface, in modules a C-mode environ builder
can reuse, and the adapter that lets the HTTP protocols call a WSGI app as they call
an ASGI one.

- `environ.py`: the environ of a request, from the parts of its scope;
  `wsgi.errors`.
- `input.py`: `wsgi.input`, the request body received in full before the app runs.
- `response.py`: what `start_response` checks (status, headers), the body's chunks,
  `wsgi.file_wrapper`.
- `runner.py`: `WSGIApp`, the ASGI app standing for the WSGI one: the body read on
  the event loop, the app called in a bounded thread pool (--threads), its response
  handed back to the loop one message at a time.
"""
