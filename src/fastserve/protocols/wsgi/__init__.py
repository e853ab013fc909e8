"""WSGI (PEP 3333): the rules of the interface, which both HTTP modes use, and the
adapter that lets the HTTP protocols call a WSGI app as they call an ASGI one.

- `environ.py`: the environ of a request: the head's variables (the protocols build
  them as they parse: the C mode in `_parser.pyx` by the same table and rules), the
  rest from the scope; `wsgi.errors`.
- `input.py`: `wsgi.input`, the request body received in full before the app runs.
- `response.py`: what `start_response` checks (status, headers), the body's chunks,
  `wsgi.file_wrapper`.
- `threads.py`: the app's threads (--threads) and the way back to the event loop.
- `runner.py`: `WSGIApp`, the ASGI app standing for the WSGI one: the body read on
  the event loop, the app called on one of its threads, its response handed back to
  the loop one message at a time (a whole body: once, after the call).
"""
