"""Runs the fuzz harnesses (scripts/fuzz is the entry point; see README "Fuzzing").

    fuzz_runner.py --replay [HARNESS...]
        every corpus file through every harness's `check`, no mutation and no atheris
        (plain CPython, also under AddressSanitizer); exit 1 on the first failure
    fuzz_runner.py --seconds N [HARNESS...]
        each harness under atheris (libFuzzer) for N seconds, in its own process (http
        and wsgi, run together, split N: SHARED_SECONDS); prints each one's
        executions; a crash goes to tests/fuzz/crashes/
    fuzz_runner.py --crash FILE HARNESS
        one input (a crash file) through one harness's `check`, with the traceback

HARNESS: llhttp, http, http2, wsgi, websocket (all when none is named).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

FUZZ_DIR = Path(__file__).resolve().parent
TESTS_DIR = FUZZ_DIR.parent
CORPUS_DIR = FUZZ_DIR / "corpus"
CRASH_DIR = FUZZ_DIR / "crashes"
HARNESSES = {
    "llhttp": "fuzz_llhttp",
    "http": "fuzz_http",
    "http2": "fuzz_http2",
    "wsgi": "fuzz_wsgi",
    "websocket": "fuzz_websocket",
}
# Harnesses that split one harness's seconds when they run together: the http harness
# and its WSGI variant fuzz the same protocols in the time the http one had alone.
SHARED_SECONDS = [("http", "wsgi")]
# Python code whose branches guide the fuzzer (the C extensions are not instrumented:
# llhttp and nghttp2 are reached through the Python around them).
INSTRUMENTED = ["fastserve", "h11", "h2", "hpack", "hyperframe", "websockets", "wsproto"]
# libFuzzer: the longest input it makes (the seeds are shorter; the harnesses' limits
# are small so that every limit is within reach), and the seconds one input may take.
MAX_LEN = 8192
INPUT_TIMEOUT = 20
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def _import_path() -> None:
    for path in (str(TESTS_DIR), str(FUZZ_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)


def corpus_files() -> list[Path]:
    return sorted(path for path in CORPUS_DIR.glob("*/*") if path.is_file())


def replay(names: list[str]) -> int:
    _import_path()
    import importlib

    files = corpus_files()
    for name in names:
        harness = importlib.import_module(HARNESSES[name])
        started = time.monotonic()
        for path in files:
            try:
                harness.check(path.read_bytes())
            except BaseException:
                print("scripts/fuzz: %s fails on %s:" % (name, path.relative_to(TESTS_DIR.parent)))
                raise
        print(
            "%-10s %4d corpus files replayed in %.1f s"
            % (name, len(files), time.monotonic() - started)
        )
    return 0


def fuzz_one(name: str) -> None:
    """In the child process: run one harness under atheris (libFuzzer's argv)."""
    _import_path()
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        import importlib

        harness = importlib.import_module(HARNESSES[name])
    atheris.Setup(sys.argv, harness.check)
    atheris.Fuzz()


def seconds_of(name: str, names: list[str], seconds: int) -> int:
    """How long `name` fuzzes when `names` run for `seconds` each: harnesses of a
    SHARED_SECONDS group that run together split them (the first get the remainder)."""
    for group in SHARED_SECONDS:
        if name in group:
            running = [other for other in group if other in names]
            share, remainder = divmod(seconds, len(running))
            return max(1, share + (running.index(name) < remainder))
    return seconds


def fuzz(names: list[str], seconds: int, seed: Optional[int]) -> int:
    CRASH_DIR.mkdir(exist_ok=True)
    failed = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="fastserve-fuzz-%s-" % name) as work:
            log = Path(work) / "libfuzzer.log"
            command = [
                sys.executable,
                __file__,
                "--child",
                name,
                # new inputs go to the scratch directory, the committed corpus is read only
                work,
                str(CORPUS_DIR / name),
                "-max_total_time=%d" % seconds_of(name, names, seconds),
                "-max_len=%d" % MAX_LEN,
                "-timeout=%d" % INPUT_TIMEOUT,
                "-artifact_prefix=%s/%s-" % (CRASH_DIR, name),
                "-print_final_stats=1",
            ]
            if seed is not None:
                command.append("-seed=%d" % seed)
            with log.open("w") as out:
                code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
            text = log.read_text(errors="replace")
        done = _DONE.search(text)
        runs = "%s executions in %s s" % done.groups() if done else "no run count"
        if code == 0:
            print("%-10s ok    %s" % (name, runs))
            continue
        failed.append(name)
        print("%-10s FAIL  %s (exit %d); libFuzzer's output ends:" % (name, runs, code))
        print("\n".join(text.splitlines()[-40:]))
    if failed:
        print(
            "scripts/fuzz: %s found a failing input, in %s/; replay one with "
            "'scripts/fuzz --crash FILE HARNESS'" % (", ".join(failed), CRASH_DIR)
        )
        return 1
    return 0


def crash(path: str, name: str) -> int:
    _import_path()
    import importlib

    importlib.import_module(HARNESSES[name]).check(Path(path).read_bytes())
    print("%s: %s passes" % (name, path))
    return 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        name = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        fuzz_one(name)
        return 0
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--replay", action="store_true", help="replay the corpus, no mutation")
    mode.add_argument(
        "--seconds", type=int, help="fuzz each harness this long (http and wsgi split it)"
    )
    mode.add_argument("--crash", metavar="FILE", help="run one input through one harness")
    parser.add_argument(
        "--seed",
        type=int,
        help="libFuzzer's random seed, for a run that tries the same inputs each time "
        "(CI); default: a new one per run",
    )
    parser.add_argument(
        "harness", nargs="*", help="one of %s (default: all)" % ", ".join(HARNESSES)
    )
    args = parser.parse_args()
    names = args.harness or list(HARNESSES)
    unknown = [name for name in names if name not in HARNESSES]
    if unknown:
        parser.error("no harness %s (there are %s)" % (", ".join(unknown), ", ".join(HARNESSES)))
    if args.crash:
        if len(names) != 1:
            parser.error("--crash FILE takes one harness")
        return crash(args.crash, names[0])
    if args.replay:
        return replay(names)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return fuzz(names, args.seconds, args.seed)


if __name__ == "__main__":
    sys.exit(main())
