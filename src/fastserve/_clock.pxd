# cython: language_level=3
"""The clock of request timing in the C mode: `time.monotonic()`'s own.

A request's `started` is subtracted from `time.monotonic()` elsewhere (logging.py's
duration, the metrics), and deadlines become `loop.call_later` delays, so the C
mode reads the clock CPython's `time.monotonic()` reads, on every platform
(CLOCK_MONOTONIC on Linux, mach_absolute_time on macOS, QueryPerformanceCounter on
Windows), through CPython's C API: no Python call. `cimport` it (inline, compiled
into the module that uses it); the HTTP/2 and WSGI paths are to time requests with
it too."""

cdef extern from *:
    """
    #if PY_VERSION_HEX >= 0x030D0000
    static inline double fastserve_monotonic(void) {
        PyTime_t t;
        (void)PyTime_MonotonicRaw(&t);  /* cannot fail once the interpreter runs */
        return PyTime_AsSecondsDouble(t);
    }
    #else
    static inline double fastserve_monotonic(void) {
        return _PyTime_AsSecondsDouble(_PyTime_GetMonotonicClock());
    }
    #endif
    """
    double fastserve_monotonic() noexcept nogil


cdef inline double monotonic() noexcept nogil:
    """time.monotonic(), without a Python call."""
    return fastserve_monotonic()
