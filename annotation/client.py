"""Talking to Label Studio: one SDK client, every request retried with backoff, then a clear failure.

Push and pull keep nothing in memory that a failure could lose: the state that matters lives in Label
Studio (its tasks carry the sample key and version) and in the curation store (reviews written last),
so after :class:`LabelStudioUnavailable` a rerun picks up where the last one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from annotation.settings import AnnotationSettings, credentials
from ardrag.errors import ArdragError

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERFACES = ("verify", "annotate")


class LabelStudioUnavailable(ArdragError):
    """Label Studio did not answer (down, slow or failing) after every retry."""


class LabelStudioRefused(ArdragError):
    """Label Studio answered with an error that retrying will not fix (a 4xx)."""


def _retryable(err: Exception) -> bool:
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    if isinstance(err, httpx.TransportError):  # refused, reset, timed out
        return True
    return isinstance(err, ApiError) and (
        err.status_code is None or err.status_code >= 500 or err.status_code == 429
    )


class Client:
    """The SDK client of the server in ``settings``, with :meth:`call` for retried requests."""

    def __init__(self, settings: AnnotationSettings, sdk: Any = None):
        self.settings = settings
        if sdk is None:
            import httpx
            from label_studio_sdk import LabelStudio

            connect = min(settings.connect_timeout_s, settings.timeout_s)
            sdk = LabelStudio(
                base_url=settings.url,
                api_key=credentials(settings).token,
                # the SDK's own retries (2, after 1 and 2 s, on a refused connection) are off: they hid
                # 3 s inside each of our tries; `call` does all the retrying, with the waits it states
                max_retries=0,
                httpx_client=httpx.Client(
                    timeout=httpx.Timeout(settings.timeout_s, connect=connect), follow_redirects=True
                ),
            )
        self.sdk = sdk
        self._users: dict[int, str] = {}

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, tried ``settings.attempts`` times with the waits
        ``settings.retry_waits_s`` between tries (1, 2, 4, 8 s by default). Each try connects within
        ``connect_timeout_s``, so a server that is down is reported within ``settings.give_up_after_s``."""
        from label_studio_sdk.core.api_error import ApiError

        attempts, waits = self.settings.attempts, self.settings.retry_waits_s
        start = time.monotonic()
        for attempt in range(1, attempts + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not _retryable(err):
                    if isinstance(err, ApiError):
                        raise LabelStudioRefused(
                            f"Label Studio at {self.settings.url} refused to {what}: HTTP {err.status_code} "
                            f"{str(err.body)[:500]}"
                        ) from None
                    raise
                if attempt == attempts:
                    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                    raise LabelStudioUnavailable(
                        f"Label Studio at {self.settings.url} did not {what} after {tries} in "
                        f"{time.monotonic() - start:.1f} s ({type(err).__name__}: {str(err)[:200]}); "
                        "nothing done so far is lost, rerun the same command when the server is back"
                    ) from None
                wait = waits[attempt - 1]
                log.warning(
                    "Label Studio did not %s (%s); attempt %d of %d, retrying in %.1f s",
                    what,
                    type(err).__name__,
                    attempt,
                    attempts,
                    wait,
                )
                time.sleep(wait)
        raise AssertionError("unreachable")

    # -- projects -----------------------------------------------------------------------------
    def find_project(self, title: str) -> Any | None:
        projects = self.call("list projects", lambda: list(self.sdk.projects.list(title=title)))
        matches = [p for p in projects if p.title == title]
        return min(matches, key=lambda p: p.id) if matches else None

    def ensure_project(self, title: str, interface: str, media_dir: str) -> Any:
        """The project called ``title`` with the ``interface`` labeling config, created when missing, with
        a local-files storage over ``media_dir`` (Label Studio serves a file only under such a storage)."""
        project = self.find_project(title)
        if project is None:
            project = self.call(
                "create a project",
                self.sdk.projects.create,
                title=title,
                label_config=labeling_config(interface),
                description=f"ardrag {interface} tasks; created by `ardrag annotate push`",
            )
            log.info("created Label Studio project %r (id %s)", title, project.id)
        storages = self.call(
            "list storages", lambda: list(self.sdk.import_storage.local.list(project=project.id))
        )
        if not any(s.path == media_dir for s in storages):
            self.call(
                "create a local-files storage",
                self.sdk.import_storage.local.create,
                project=project.id,
                path=media_dir,
                title="ardrag media",
                use_blob_urls=False,
            )
        return project

    def tasks(self, project_id: int, with_annotations: bool = False) -> list[Any]:
        fields = "all" if with_annotations else "task_only"
        return self.call(
            "list tasks", lambda: list(self.sdk.tasks.list(project=project_id, fields=fields, page_size=100))
        )

    def annotator(self, user_id: int | None) -> str:
        """The e-mail of a user (cached), the id when the server does not say."""
        if user_id is None:
            return "unknown"
        if user_id not in self._users:
            user = self.call("look up a user", self.sdk.users.get, id=user_id)
            self._users[user_id] = getattr(user, "email", None) or str(user_id)
        return self._users[user_id]


def labeling_config(interface: str) -> str:
    """The XML of a labeling interface shipped in ``annotation/interfaces/``."""
    if interface not in INTERFACES:
        raise ValueError(f"labeling interface {interface!r} is unknown; expected one of {INTERFACES}")
    # beside this module: resources.files("annotation") can resolve to the tests' folder of the same name
    # (a namespace package) when a test module is run on its own
    return (Path(__file__).resolve().parent / "interfaces" / f"{interface}.xml").read_text(encoding="utf-8")
