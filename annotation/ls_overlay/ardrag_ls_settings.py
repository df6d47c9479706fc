"""Django settings of the Label Studio that ardrag runs: Label Studio's own, and three changes that its
environment variables cannot make.

``annotation.server`` starts Label Studio with ``DJANGO_SETTINGS_MODULE=ardrag_ls_settings`` and this
folder on ``PYTHONPATH``; the settings it extends are ``ARDRAG_LS_BASE_SETTINGS`` (default Label Studio's
``label_studio.core.settings.label_studio``; the Docker image names them ``core.settings.label_studio``).

- ``/data/local-files/`` serves a file only when it is a regular file inside
  ``LOCAL_FILES_DOCUMENT_ROOT``, reached without a symlink; anything else gets an empty 404. Label
  Studio's own view follows symlinks (one in the media folder could serve any file the server can
  read), and answers ``d=../..`` with a 500 that names absolute paths.
- A 500 answer says "internal server error" and its id, not the exception's text (which can hold
  absolute paths, whatever ``DEBUG`` says); the server log keeps the whole error under that id.
- Each log record is written once: Label Studio's ``django`` logger (request lines) has the console
  handler and also passes its records on to the root logger's console handler.
"""

import os
import posixpath
import stat
import sys
from importlib import import_module

_BASE = os.environ.get("ARDRAG_LS_BASE_SETTINGS", "label_studio.core.settings.label_studio")
# Label Studio's settings read django.conf.settings while they load (to set up Sentry): they are the
# settings module meanwhile, as when Label Studio runs alone; then this module is, with its changes
os.environ["DJANGO_SETTINGS_MODULE"] = _BASE
try:
    _base = import_module(_BASE)
finally:
    os.environ["DJANGO_SETTINGS_MODULE"] = __name__
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

for _logger in LOGGING["loggers"].values():  # noqa: F821 (from the base settings)
    if _logger.get("handlers"):
        _logger["propagate"] = False

MIDDLEWARE = ["ardrag_ls_settings.LocalFilesGuard", *MIDDLEWARE]  # noqa: F821
_LS_EXCEPTION_HANDLER = REST_FRAMEWORK["EXCEPTION_HANDLER"]  # noqa: F821
REST_FRAMEWORK = {**REST_FRAMEWORK, "EXCEPTION_HANDLER": "ardrag_ls_settings.exception_handler"}  # noqa: F821
if "rest_framework.settings" in sys.modules:  # read while Label Studio's settings loaded: read them again
    sys.modules["rest_framework.settings"].api_settings.reload()


def regular_file_inside(root: str, requested: str) -> bool:
    """Whether ``requested`` (the ``d`` parameter, read as Label Studio reads it) names a regular file
    inside ``root`` with no symlink on the way."""
    try:
        base = os.path.realpath(root)
        path = os.path.normpath(os.path.join(base, posixpath.normpath(requested).lstrip("/")))
        if os.path.commonpath([base, path]) != base or path == base:
            return False  # outside the root, or the root itself
        if os.path.realpath(path) != path:
            return False  # a symlink somewhere below the root
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):  # unreadable, or a name with a NUL byte
        return False


class LocalFilesGuard:
    """Middleware: an empty 404 for a local-files request that is not a regular file inside the root."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        requested = request.GET.get("d")
        if match is None or match.url_name != "localfiles_data" or not requested:
            return None  # not a file request: Label Studio answers it (403 without ``d``)
        if regular_file_inside(LOCAL_FILES_DOCUMENT_ROOT, requested):  # noqa: F821
            return None
        from django.http import HttpResponseNotFound

        return HttpResponseNotFound()


def exception_handler(exc, context):
    """Label Studio's REST exception handler, without the exception's text in a 500 answer."""
    from django.utils.module_loading import import_string

    response = import_string(_LS_EXCEPTION_HANDLER)(exc, context)
    if response is not None and response.status_code >= 500 and isinstance(response.data, dict):
        error_id = response.data.get("id")
        response.data["detail"] = f"internal server error {error_id}: the server log has the details"
        response.data["exc_info"] = None
    return response
