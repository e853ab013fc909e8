"""HTTP/1.1: the pure h11 protocol (`h11_impl`) and the rules both modes share.

The C protocol is `fastserve._parser` (the project's design card fixes that path);
it reads the same modules here, so a rule changes in one place.
"""
