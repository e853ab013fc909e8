"""Everything that speaks on a connection: `http/` now, `websockets/` beside it."""
