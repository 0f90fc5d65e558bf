"""Rolling the champion out as an InferenceService, and back when it does not serve.

:func:`roll_out` takes an InferenceService manifest (``inferenceservice.py``) and a
``kubernetes`` ApiClient:

1. reads the InferenceService of that name; none: creates it. One there (the previous
   champion): keeps its spec, labels and annotations, and patches in the new spec, recording the
   previous spec in the ``rlhf/previous-spec`` annotation (``kubectl`` shows what it replaced).
2. waits for it to be ``Ready`` for the new spec: the ``Ready`` condition true once KServe has
   seen this generation (``status.observedGeneration``; until then the old spec's ``Ready``
   still shows). Only a terminal failure ends the wait early (:func:`terminal_failure`: KServe's
   ``modelStatus`` says the model failed to load or the spec is invalid, or ``Ready=False``
   with Knative's ``RevisionFailed``); any other ``Ready=False`` (a new revision's pods not yet
   available) or ``Unknown`` is progress, waited on until ``timeout_seconds``, whose error then
   names the last ``Ready=False`` reason.
3. sends one smoke request: an HTTP POST of a completion to the service's cluster address
   (``status.address.url``; :class:`SmokeRequest` may name another URL), which must answer 200
   with a completion.
4. on a failure in 2 or 3, patches the previous spec, labels and annotations back (and waits,
   within another ``timeout_seconds``, for it to be ready again), then raises
   :class:`DeployFailed` with the reason. A first deployment has nothing to roll back to: it is
   left for ``kubectl describe``.
5. on SIGTERM (the run cancelled) from the first call until the smoke request has answered:
   patches the previous spec back, or deletes the InferenceService this roll-out created, without
   waiting (the pod has its grace period only), logs what it did and exits with status 143
   (``termination.py``, shared with the TrainJob task).

Every call maps onto one RBAC verb on ``inferenceservices``: get, create, patch, watch, delete.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlhf.pipeline import termination
from rlhf.pipeline.inferenceservice import RESOURCE
from rlhf.pipeline.kube_api import (
    REQUEST_TIMEOUT,
    CustomObject,
    api_message,
    condition,
    transient,
)

PREVIOUS_SPEC = "rlhf/previous-spec"  # annotation: the spec this one replaced (JSON)
COMPLETIONS_PATH = "/openai/v1/completions"  # the Hugging Face runtime's OpenAI endpoint
SMOKE_BODY_CHARS = 300  # of a failed smoke response, in the error
# KServe's status.modelStatus.transitionStatus when the target model failed to load (the storage
# initializer or the server container ended in an error or a crash loop) or the predictor spec
# failed validation; lastFailureInfo says why. Neither heals without a new spec.
TERMINAL_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")
# Ready=False reasons that are final for this spec: Knative's for a revision that failed (an
# image that cannot be pulled, a container that exits), and KServe's model failure reasons.
# Any other (MinimumReplicasUnavailable, RevisionMissing, ...) shows while a new revision comes
# up and is waited on.
TERMINAL_REASONS = (
    "RevisionFailed", "ModelLoadFailed", "RuntimeUnhealthy", "RuntimeDisabled",
    "NoSupportingRuntime", "RuntimeNotRecognized", "InvalidPredictorSpec",
)  # fmt: skip


class DeployError(RuntimeError):
    """The InferenceService could not be created or changed (the API refused it)."""


class DeployFailed(DeployError):
    """It did not become ready, or did not answer the smoke request (rolled back if it could)."""


class DeployTimeout(DeployFailed):
    """It was not ready within the timeout."""


@dataclass(frozen=True)
class SmokeRequest:
    """One completion asked of the served model once it is ready."""

    prompt: str
    max_tokens: int = 16
    path: str = COMPLETIONS_PATH
    url: str = ""  # a base URL instead of the service's address (a test's stub server)
    timeout_seconds: float = 120.0  # the first request may wait for a cold start


@dataclass(frozen=True)
class Rollout:
    """What a successful roll-out did."""

    name: str
    namespace: str
    created: bool  # False: an existing InferenceService was updated
    url: str  # where the smoke request went ("" without one)
    ready_seconds: float
    smoke_seconds: float
    completion: str  # the smoke request's answer


def roll_out(
    manifest: Mapping[str, Any],
    api_client: Any,
    timeout_seconds: float,
    smoke: SmokeRequest | None,
    log: Callable[[str], None] = print,
    poll_seconds: float = 5.0,
) -> Rollout:
    """Create or update the InferenceService, wait until it is ready, send ``smoke``; on a
    failure roll back to the previous spec and raise :class:`DeployFailed` (its message says
    why); on SIGTERM roll back (or delete what it created) and exit with status 143.
    ``api_client`` is a ``kubernetes.client.ApiClient``."""
    service = _Service(manifest, api_client, log, poll_seconds)
    previous: dict[str, Any] | None = None
    read = False  # until the first read answered, nothing was changed
    with termination.sigterm_raises():
        try:
            previous = service.get()
            read = True
            return _roll_out(service, previous, timeout_seconds, smoke)
        except termination.Terminated:
            termination.ignore_sigterm()  # one cleanup, not two
            if read:
                service.cancel(previous)
            else:
                log(f"{service.what}: {termination.CANCELLED}; nothing was changed")
            raise SystemExit(termination.SIGTERM_EXIT) from None


def _roll_out(
    service: _Service,
    previous: dict[str, Any] | None,
    timeout_seconds: float,
    smoke: SmokeRequest | None,
) -> Rollout:
    started = time.monotonic()
    if previous is None:
        service.create()
    else:
        service.update(previous)
    try:
        ready = service.wait_ready(started + timeout_seconds, timeout_seconds)
        ready_seconds = time.monotonic() - started
        url, completion, smoke_started = "", "", time.monotonic()
        if smoke is not None:
            url = smoke.url or _address(ready)
            completion = smoke_request(url, service.name, smoke)
            service.log(f"{service.what}: smoke request answered: {completion!r}")
    except DeployFailed as e:
        if previous is None:
            raise type(e)(
                f"{e}; there was no previous InferenceService to roll back to: it is left for "
                f"`kubectl describe inferenceservice {service.name}`"
            ) from None
        try:
            service.roll_back(previous, timeout_seconds)
        except DeployError as rollback:  # the reason it failed comes first, then this
            raise type(e)(f"{e}; the rollback failed too: {rollback}") from None
        raise type(e)(f"{e}; rolled back to {_previous(previous)}") from None
    return Rollout(service.name, service.namespace, previous is None, url, ready_seconds,
                   time.monotonic() - smoke_started, completion)  # fmt: skip


def terminal_failure(service: Mapping[str, Any]) -> str | None:
    """Why the InferenceService's current spec will not become ready (``reason: message``),
    when its status says so for good; None while it may still get there."""
    status = service.get("status") or {}
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in TERMINAL_TRANSITIONS:
        info = model.get("lastFailureInfo") or {}
        why = ": ".join(str(info[k]) for k in ("reason", "message") if info.get(k))
        return f"{model['transitionStatus']}" + (f": {why}" if why else "")
    failed = condition(service, "Ready", "False")
    if failed and failed.get("reason") in TERMINAL_REASONS:
        return f"{failed.get('reason')}: {failed.get('message')}"
    return None


def smoke_request(base_url: str, model: str, smoke: SmokeRequest) -> str:
    """POST one completion request to ``base_url`` + ``smoke.path``; the completion's text, or
    :class:`DeployFailed` saying what came back instead."""
    url = base_url.rstrip("/") + smoke.path
    body = {"model": model, "prompt": smoke.prompt, "max_tokens": smoke.max_tokens}
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=smoke.timeout_seconds) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:SMOKE_BODY_CHARS]
        raise DeployFailed(f"smoke request to {url}: HTTP {e.code} {e.reason}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DeployFailed(f"smoke request to {url}: no answer: {e}") from None
    try:
        choices = json.loads(text)["choices"]
        completion = choices[0]["text"]
        if not isinstance(completion, str):
            raise TypeError("text is not a string")
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise DeployFailed(
            f"smoke request to {url}: not a completion ({type(e).__name__}: {e}): "
            f"{text[:SMOKE_BODY_CHARS]}"
        ) from None
    return completion


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: changed fields, null
    for removed ones; lists and scalars are replaced whole."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


def _address(service: Mapping[str, Any]) -> str:
    """The URL the task reaches the service at: the cluster-local address (no ingress or DNS
    outside the cluster needed), else the public URL."""
    status = service.get("status") or {}
    url = (status.get("address") or {}).get("url") or status.get("url")
    if not url:
        name = service["metadata"]["name"]
        raise DeployFailed(f"InferenceService {name}: ready but its status has no URL")
    return url


def _previous(previous: Mapping[str, Any]) -> str:
    return (
        f"the previous spec (generation {previous['metadata'].get('generation')}, "
        f"storageUri {_storage_uri(previous.get('spec', {}))})"
    )


def _storage_uri(spec: Mapping[str, Any]) -> str:
    return ((spec.get("predictor") or {}).get("model") or {}).get("storageUri", "?")


class _Service(CustomObject):
    """One InferenceService through the Kubernetes API."""

    def __init__(
        self,
        manifest: Mapping[str, Any],
        api_client: Any,
        log: Callable[[str], None],
        poll_seconds: float,
    ) -> None:
        super().__init__(manifest, RESOURCE, "InferenceService", api_client, log, poll_seconds)

    def get(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.read()
        except ApiException as e:
            if transient(e):
                raise  # the wait tries again
            raise DeployError(f"{self.what}: cannot read it: {api_message(e)}") from None

    def create(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.create_namespaced_custom_object(
                *RESOURCE[:2], self.namespace, RESOURCE[2], dict(self.manifest),
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except ApiException as e:
            raise DeployError(f"{self.what}: the API refused it: {api_message(e)}") from None
        self.log(f"{self.what}: created (storageUri {_storage_uri(self.manifest['spec'])})")

    def update(self, previous: Mapping[str, Any]) -> None:
        meta = previous.get("metadata", {})
        annotations = {**(meta.get("annotations") or {}),
                       PREVIOUS_SPEC: json.dumps(previous.get("spec", {}), sort_keys=True)}  # fmt: skip
        labels = {**(meta.get("labels") or {}), **self.manifest["metadata"].get("labels", {})}
        self._patch(self.manifest["spec"], labels, annotations, "the API refused the update")
        self.log(
            f"{self.what}: updated from storageUri {_storage_uri(previous.get('spec', {}))} to "
            f"{_storage_uri(self.manifest['spec'])} (the previous spec is kept in the "
            f"{PREVIOUS_SPEC} annotation)"
        )

    def roll_back(self, previous: Mapping[str, Any], timeout_seconds: float) -> None:
        """Patch the previous spec, labels and annotations back; wait for it to be ready (a
        failure to get there is logged: the error raised is the roll-out's)."""
        meta = previous.get("metadata", {})
        try:
            self._patch(previous.get("spec", {}), meta.get("labels") or {},
                        meta.get("annotations") or {}, "the API refused the rollback")  # fmt: skip
        except DeployError as e:
            self.log(f"{self.what}: {e}; restore it by hand from the {PREVIOUS_SPEC} annotation")
            raise
        self.log(f"{self.what}: rolled back to the previous spec")
        try:
            self.wait_ready(time.monotonic() + timeout_seconds, timeout_seconds)
            self.log(f"{self.what}: the previous spec is ready again")
        except DeployError as e:
            self.log(f"{self.what}: after the rollback: {e}")

    def cancel(self, previous: Mapping[str, Any] | None) -> None:
        """The run was cancelled mid-roll-out: put the previous spec back (no wait: the pod
        has its grace period only), or delete the InferenceService this roll-out created.
        Logs what it did; a failure to do it is logged, not raised (the task ends anyway)."""
        try:
            current = self.get()
            if previous is None:
                if current is not None:
                    self._delete()
                outcome = "deleted the InferenceService it created (there was no previous one)"
            elif current is not None and current.get("spec") != previous.get("spec"):
                meta = previous.get("metadata", {})
                self._patch(previous.get("spec", {}), meta.get("labels") or {},
                            meta.get("annotations") or {}, "the API refused the rollback")  # fmt: skip
                outcome = f"rolled back to {_previous(previous)}"
            else:
                outcome = "the previous spec is in place"
        except Exception as e:  # noqa: BLE001 (reported; the task is ending)
            self.log(f"{self.what}: {termination.CANCELLED}; cleaning up failed: {e}; restore "
                     f"it by hand from the {PREVIOUS_SPEC} annotation")  # fmt: skip
            return
        self.log(f"{self.what}: {termination.CANCELLED}; {outcome}")

    def _delete(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                *RESOURCE[:2], self.namespace, RESOURCE[2], self.name,
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except ApiException as e:
            if e.status != 404:
                raise DeployError(f"{self.what}: cannot delete it: {api_message(e)}") from None

    def _patch(
        self, spec: Mapping[str, Any], labels: dict, annotations: dict, refused: str
    ) -> None:
        """Make the spec, labels and annotations exactly these: a JSON merge patch (RFC 7386,
        what the client sends) against the object as it is now, with null for every field to
        drop (a plain merge would keep fields the new spec leaves out)."""
        from kubernetes.client.exceptions import ApiException

        current = self.get() or {}
        meta = current.get("metadata") or {}
        body = {
            "metadata": {
                "labels": merge_patch(meta.get("labels") or {}, labels),
                "annotations": merge_patch(meta.get("annotations") or {}, annotations),
            },
            "spec": merge_patch(current.get("spec") or {}, dict(spec)),
        }
        try:
            self.custom.patch_namespaced_custom_object(
                *RESOURCE[:2], self.namespace, RESOURCE[2], self.name, body,
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except ApiException as e:
            raise DeployError(f"{self.what}: {refused}: {api_message(e)}") from None

    def wait_ready(self, deadline: float, timeout_seconds: float) -> dict[str, Any]:
        """The InferenceService once ``Ready`` for its current generation; a terminal failure
        raises at once, a ``Ready=False`` that is not is waited on (and named at the timeout)."""
        resource_version = None
        pending: dict[str, Any] | None = None
        while True:
            try:
                service = self.get()
            except DeployError:
                raise
            except Exception as e:  # noqa: BLE001
                if not transient(e):
                    raise
                self.log(f"{self.what}: the API did not answer ({e}); trying again")
                service = {}
            if service is None:
                raise DeployFailed(f"{self.what}: deleted while the deploy waited for it")
            if service:
                self.report(service)
                generation = service["metadata"].get("generation", 0)
                seen = (service.get("status") or {}).get("observedGeneration", 0)
                if seen >= generation:
                    if condition(service, "Ready"):
                        return service
                    failed = terminal_failure(service)
                    if failed:
                        raise DeployFailed(f"{self.what} is not ready: {failed}")
                    pending = condition(service, "Ready", "False") or pending
                resource_version = service["metadata"].get("resourceVersion")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = ""
                if pending:
                    last = f" (Ready=False {pending.get('reason')}: {pending.get('message')})"
                raise DeployTimeout(f"{self.what}: not ready after {timeout_seconds:g} s{last}")
            self.wait_for_change(min(self.poll, remaining), resource_version)
