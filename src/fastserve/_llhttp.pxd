# placeholder, replaced by the full declarations
cdef extern from "llhttp.h":
    int LLHTTP_VERSION_MAJOR
    int LLHTTP_VERSION_MINOR
    int LLHTTP_VERSION_PATCH
