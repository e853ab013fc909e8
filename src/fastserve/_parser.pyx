from fastserve cimport _llhttp

LLHTTP_VERSION = f"{_llhttp.LLHTTP_VERSION_MAJOR}.{_llhttp.LLHTTP_VERSION_MINOR}.{_llhttp.LLHTTP_VERSION_PATCH}"
