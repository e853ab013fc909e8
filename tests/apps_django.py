"""A Django app for tests/test_wsgi.py, its settings configured here (no project):
`request.body`, `StreamingHttpResponse`, `FileResponse`."""

from __future__ import annotations

import hashlib

import django
from django.conf import settings
from django.http import FileResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="fastserve-tests-only",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={},
    DATA_UPLOAD_MAX_MEMORY_SIZE=None,  # the large-body test posts megabytes
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after setup()


def body(request):
    data = request.body
    return JsonResponse(
        {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "path": request.path}
    )


def stream(request):
    count = int(request.GET.get("n", "3"))
    return StreamingHttpResponse(f"part {index}\n" for index in range(count))


def file(request):
    return FileResponse(open(request.GET["path"], "rb"))


urlpatterns = [path("body", body), path("stream", stream), path("file", file)]

app = get_wsgi_application()
