"""Processes around the Server: the pre-fork master (`multiprocess`), the code
reloader (`reload`), and what a worker process runs (`worker`), which the Gunicorn
worker classes import without the master."""
