"""Request parsing alone, per parser and input: `pytest bench/ --benchmark-only`.

Inputs and the parser adapters are in bench/conftest.py. Results are grouped by input,
so each table compares httptools, h11 and fastserve's C parser on the same bytes.
"""

from __future__ import annotations


def _normalise(parsed):
    return [
        (p[0], bytes(p[1]), [(bytes(n), bytes(v)) for n, v in p[2]], bytes(p[3])) for p in parsed
    ]


def test_parse(benchmark, case, parse):
    name, data, expected = case
    # Same answer from every parser before anything is timed: the timed work is real.
    assert _normalise(parse(data)) == _normalise(expected)

    benchmark.group = name
    benchmark.extra_info["bytes"] = len(data)
    benchmark.extra_info["requests"] = len(expected)
    result = benchmark(parse, data)
    assert len(result) == len(expected)
