# Sourced by scripts/test, scripts/test-asan and scripts/test-python (not run by itself).
#
# run_passes PYTHON [pytest args...]: the tests in two passes, each given the arguments.
# First every test not marked `serial`, in parallel (pytest-xdist); then the serial ones
# (they bound a duration, a memory size or a load, which tests running beside them
# would skew) one after the other, with nothing else running. Fails if either pass
# failed; a pass that selects no test (pytest's exit code 5) fails only if both do.

# Worker processes of the parallel pass. The tests mostly wait (for server processes
# to start, for sockets), so more workers than cores pay off: on CI's 2-core machine the
# pass took 173 s with 2 workers, 118 s with 3, 98 s with 4 and 88 s with 6 (more load
# beside each test for little gain).
TEST_WORKERS=4
NO_TESTS_COLLECTED=5

run_passes() {
    local python="$1" parallel=0 serial=0 status
    shift
    "$python" -m pytest -n "$TEST_WORKERS" --serial skip "$@" || parallel=$?
    "$python" -m pytest --serial only "$@" || serial=$?
    if [ "$parallel" = "$NO_TESTS_COLLECTED" ] && [ "$serial" = "$NO_TESTS_COLLECTED" ]; then
        return "$NO_TESTS_COLLECTED"
    fi
    for status in "$parallel" "$serial"; do
        if [ "$status" != 0 ] && [ "$status" != "$NO_TESTS_COLLECTED" ]; then
            return "$status"
        fi
    done
}
