"""Google application default credentials (ADC) for Vertex AI: the ``google`` credential kind and its access tokens.

``resolve`` (``RESOLVERS["google"]``) finds the credential as google-auth's ``google.auth.default()`` does, reading only
``Settings.environ`` and the files it names, never the network (it runs per request):

1. ``GOOGLE_APPLICATION_CREDENTIALS``: a service-account key or authorized-user JSON file (source
   ``env:GOOGLE_APPLICATION_CREDENTIALS``). Set but unreadable, it is an error, not a reason to try the next step;
2. gcloud's ADC file, ``application_default_credentials.json`` in ``$CLOUDSDK_CONFIG`` or ``$HOME/.config/gcloud``,
   which ``gcloud auth application-default login`` writes (source ``gcloud-adc``);
3. the metadata server of GCE, GKE (workload identity) and Cloud Run (source ``metadata-server``): at
   ``GCE_METADATA_HOST`` when set, else at ``metadata.google.internal`` when the machine says it is Google's (the DMI
   product name google-auth also checks, or Cloud Run's ``K_SERVICE``/``CLOUD_RUN_JOB``). ``NO_GCE_CHECK=true`` skips
   this step.

Its value is a small JSON object, ``{"adc": <the file's text>}`` or ``{"metadata": <host>}``, plus the defaults the
environment gives Vertex: ``project`` (``GOOGLE_CLOUD_PROJECT``, ``GCLOUD_PROJECT``) and ``location``
(``GOOGLE_CLOUD_LOCATION``). A credential from a configured location or the secrets directory is the bare ADC document
(or the word ``metadata``); ``credential_from_value`` reads every form.

``token_source(value)`` gives the ``TokenSource`` of a value: the credential's OAuth access token (scope
cloud-platform), fetched on first use, reused until five minutes before it expires, then refreshed by one caller while
the others wait for that same refresh. Service-account keys and authorized-user refresh tokens go through google-auth
(the ``vertex`` extra, imported when first needed); it is synchronous, so it runs in a worker thread and its HTTP calls
are bridged back to the sidecar's client. The metadata server is one GET, without google-auth.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio.from_thread
import anyio.to_thread
import httpx2
import orjson

from sidecar.config import Settings
from sidecar.errors import ConfigError, UpstreamError, redact
from sidecar.identifiers import escape_controls
from sidecar.models import ProviderSpec

log = logging.getLogger("sidecar.cloud.google")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
INSTALL_HINT = "pip install 'pi-sidecar[vertex]'"

ADC_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
PROJECT_ENVS = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")
"""google-auth's order; the first one set is the project default."""
LOCATION_ENVS = ("GOOGLE_CLOUD_LOCATION",)
METADATA_HOST_ENV = "GCE_METADATA_HOST"
DEFAULT_METADATA_HOST = "metadata.google.internal"
_SERVERLESS_ENVS = ("K_SERVICE", "CLOUD_RUN_JOB")
"""Cloud Run (services, jobs) and Cloud Functions (2nd gen) set these; their sandbox may hide the DMI file."""
_DMI_PRODUCT_NAME = Path("/sys/class/dmi/id/product_name")

REFRESH_MARGIN_SECONDS = 300.0
"""A token is refreshed this long before it expires (or at half its lifetime, if that is shorter)."""
_DEFAULT_LIFETIME_SECONDS = 3600.0
"""Google's token lifetime, assumed when a token endpoint does not say (``expires_in``)."""
_TOKEN_TIMEOUT = httpx2.Timeout(10.0)
_METADATA_TIMEOUT = httpx2.Timeout(3.0)
_MAX_SOURCES = 32
_MAX_DETAIL = 300
_SECRET_FIELDS = ("private_key", "private_key_id", "refresh_token", "client_secret")
"""Fields of an ADC document that must never appear in a message."""
_SENT_SECRET_FIELDS = frozenset({"assertion", "refresh_token", "client_secret"})
"""Form fields of a token request whose values are secrets (the signed JWT, the refresh token)."""


class GoogleAuthError(UpstreamError):
    """The access token could not be had: ``status`` 401 (the credential was refused or is unusable) or 502 (the
    token endpoint or metadata server failed). Messages never hold a key, a token or a signed assertion."""


# ----- the resolver ------------------------------------------------------------------------------------------------

_files: dict[Path, tuple[tuple[int, int, int], str | None]] = {}
_warned: set[str] = set()


def resolve(settings: Settings, provider: ProviderSpec) -> tuple[str, str] | None:
    """The first credential of the chain in the module docstring, as ``(value, source)``; ``None`` if there is none."""
    env = settings.environ
    defaults = _defaults(env)
    named = env.get(ADC_ENV, "").strip()
    if named:
        text = _read_file(Path(named))
        if text is None:
            _warn_once(f"{ADC_ENV} names {named!r}, which cannot be read: provider {provider.id} has no credential")
            return None
        return _envelope({"adc": text}, defaults), f"env:{ADC_ENV}"
    gcloud = _gcloud_file(env)
    if gcloud is not None and (text := _read_file(gcloud)) is not None:
        return _envelope({"adc": text}, defaults), "gcloud-adc"
    host = _metadata_host(env)
    if host is not None:
        return _envelope({"metadata": host}, defaults), "metadata-server"
    return None


def _defaults(env: Mapping[str, str]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for key, names in (("project", PROJECT_ENVS), ("location", LOCATION_ENVS)):
        value = next((env[n].strip() for n in names if env.get(n, "").strip()), None)
        if value:
            defaults[key] = value
    return defaults


def _envelope(payload: dict[str, str], defaults: dict[str, str]) -> str:
    return orjson.dumps({**payload, **defaults}).decode()


def _gcloud_file(env: Mapping[str, str]) -> Path | None:
    config_dir = env.get("CLOUDSDK_CONFIG", "").strip()
    if config_dir:
        return Path(config_dir) / "application_default_credentials.json"
    home = env.get("HOME", "").strip()
    return Path(home) / ".config" / "gcloud" / "application_default_credentials.json" if home else None


def _metadata_host(env: Mapping[str, str]) -> str | None:
    if env.get("NO_GCE_CHECK", "").strip().lower() in ("true", "1"):
        return None
    host = env.get(METADATA_HOST_ENV, "").strip()
    if host:
        return host
    if any(env.get(name) for name in _SERVERLESS_ENVS) or on_google_hardware():
        return DEFAULT_METADATA_HOST
    return None


@functools.cache
def on_google_hardware() -> bool:
    """GCE and GKE nodes report ``Google Compute Engine`` as their DMI product name (read once: it cannot change)."""
    try:
        return _DMI_PRODUCT_NAME.read_text(encoding="utf-8", errors="replace").strip().startswith("Google")
    except OSError:
        return False


def _read_file(path: Path) -> str | None:
    """The file's text, re-read only when it changes (a rotated key needs no restart); ``None`` if unreadable."""
    try:
        st = path.stat()
    except OSError:
        _files.pop(path, None)
        return None
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _files.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        text: str | None = path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read Google credential file %s: %s", escape_controls(str(path)), type(exc).__name__)
        text = None
    _files[path] = (stamp, text)
    return text


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", escape_controls(message))


# ----- values ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoogleCredential:
    """A parsed credential value."""

    info: Mapping[str, Any] | None
    """The ADC document (``type`` ``service_account`` or ``authorized_user``); ``None`` for the metadata server."""
    metadata_host: str | None
    project: str | None = None
    """The environment's default project (``GOOGLE_CLOUD_PROJECT``), when the resolver saw one."""
    location: str | None = None

    def __repr__(self) -> str:  # the document holds a private key or a refresh token
        kind = "metadata" if self.info is None else self.info.get("type")
        return f"GoogleCredential(kind={kind!r}, project={self.project!r}, location={self.location!r})"


def credential_from_value(value: str, provider: str) -> GoogleCredential:
    """Parse a credential value (any form in the module docstring); ``GoogleAuthError`` 401 if it is none of them."""
    text = value.strip()
    if text == "metadata":
        return GoogleCredential(None, DEFAULT_METADATA_HOST)
    doc = _json_object(text, provider)
    if "adc" not in doc and "metadata" not in doc:
        return GoogleCredential(_adc_document(doc, provider), None)
    project, location = _opt_str(doc.get("project")), _opt_str(doc.get("location"))
    host = doc.get("metadata")
    if isinstance(host, str) and host:
        return GoogleCredential(None, host, project, location)
    inner = doc.get("adc")
    info = _adc_document(_json_object(inner if isinstance(inner, str) else "", provider), provider)
    return GoogleCredential(info, None, project, location)


def _json_object(text: str, provider: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise GoogleAuthError(
            f"{provider}: the Google credential is not a JSON document: give a service-account key or an "
            "authorized-user file (GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`), or "
            "`metadata` for the metadata server",
            401,
        )
    return doc


def _adc_document(doc: dict[str, Any], provider: str) -> dict[str, Any]:
    kind = doc.get("type")
    if kind not in ("service_account", "authorized_user"):
        raise GoogleAuthError(
            f"{provider}: Google credentials of type {escape_controls(str(kind))[:64]!r} are not supported: use a "
            "service-account key, gcloud's application-default credentials (authorized_user) or the metadata server",
            401,
        )
    return doc


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# ----- access tokens -----------------------------------------------------------------------------------------------


class TokenSource:
    """One credential's access token. ``token()`` is cheap while the cached token has more than
    ``REFRESH_MARGIN_SECONDS`` to live; past that the first caller refreshes it in a task of its own (a caller that
    leaves does not cancel it) and every concurrent caller awaits that one refresh."""

    def __init__(self, credential: GoogleCredential, clock: Callable[[], float] = time.monotonic) -> None:
        self.credential = credential
        self._clock = clock
        info = credential.info or {}
        self.project: str | None = credential.project or _opt_str(info.get("project_id"))
        """The project Vertex URLs use by default: the environment's, else the key's, else the metadata server's."""
        self.quota_project: str | None = _opt_str(info.get("quota_project_id"))
        """Billed for an authorized user's calls (sent as ``x-goog-user-project``), as google-auth does."""
        self._token: str | None = None
        self._refresh_at = 0.0
        self._inflight: asyncio.Task[str] | None = None
        self._google: Any = None
        self._sent: set[str] = set()

    async def token(self, client: httpx2.AsyncClient, provider: str) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._inflight = asyncio.ensure_future(self._refresh(client, provider))
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (Vertex answered 401 to it), unless a refresh already replaced it."""
        if self._token == token:
            self._token, self._refresh_at = None, 0.0

    def secrets(self) -> tuple[str, ...]:
        """What a message must never show: the token, the document's keys, the assertions sent."""
        info = self.credential.info or {}
        found = [str(info[f]) for f in _SECRET_FIELDS if isinstance(info.get(f), str) and info[f]]
        return tuple(found + sorted(self._sent) + ([self._token] if self._token else []))

    async def _refresh(self, client: httpx2.AsyncClient, provider: str) -> str:
        if self.credential.metadata_host is not None:
            token, lifetime = await self._from_metadata(self.credential.metadata_host, provider)
        else:
            token, lifetime = await anyio.to_thread.run_sync(self._from_google_auth, client, provider)
        self._token = token
        self._refresh_at = self._clock() + max(lifetime - REFRESH_MARGIN_SECONDS, lifetime / 2)
        return token

    # ----- google-auth (service account, authorized user), in a worker thread -----------------------------------

    def _from_google_auth(self, client: httpx2.AsyncClient, provider: str) -> tuple[str, float]:
        if self._google is None:
            self._google = self._build_google(provider)
        from google.auth import exceptions  # installed: _build_google checked that

        self._sent.clear()  # the assertions of earlier refreshes are expired
        try:
            self._google.refresh(_Bridge(client, self._sent))
        except exceptions.RefreshError as exc:
            raise self._refused(exc, provider) from None
        except (exceptions.TransportError, httpx2.HTTPError) as exc:
            raise GoogleAuthError(
                f"{provider}: the Google token endpoint cannot be reached ({type(exc).__name__}); check the network "
                "or [upstream] proxy",
                502,
            ) from None
        token = self._google.token
        if not isinstance(token, str) or not token:
            raise GoogleAuthError(f"{provider}: the Google token endpoint answered without an access token", 502)
        expiry = self._google.expiry
        now = datetime.now(UTC).replace(tzinfo=None)  # google-auth's expiry is naive UTC
        lifetime = (expiry - now).total_seconds() if isinstance(expiry, datetime) else _DEFAULT_LIFETIME_SECONDS
        return token, lifetime

    def _build_google(self, provider: str) -> Any:
        info = self.credential.info or {}
        kind = info.get("type")
        try:
            from google.oauth2 import credentials as user_credentials
            from google.oauth2 import service_account
        except ImportError:
            raise ConfigError(
                f"{provider}: a Google {kind} credential needs the google-auth library: {INSTALL_HINT}"
            ) from None
        try:
            if kind == "service_account":
                return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=[CLOUD_PLATFORM_SCOPE]
                )
            missing = [f for f in ("refresh_token", "client_id", "client_secret") if not info.get(f)]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            # Built directly, not with from_authorized_user_info, which ignores the document's token_uri.
            return user_credentials.Credentials(  # type: ignore[no-untyped-call]
                None,
                refresh_token=info["refresh_token"],
                client_id=info["client_id"],
                client_secret=info["client_secret"],
                token_uri=info.get("token_uri") or GOOGLE_TOKEN_URI,
                quota_project_id=self.quota_project,
            )
        except ValueError as exc:  # google-auth's MalformedError too: fields missing, a key that does not load
            detail = escape_controls(redact(str(exc), self.secrets()))[:_MAX_DETAIL]
            raise GoogleAuthError(f"{provider}: the Google {kind} credential cannot be used: {detail}", 401) from None

    def _refused(self, exc: Exception, provider: str) -> GoogleAuthError:
        """A token endpoint's refusal, as ``error: error_description`` (never the body's other fields)."""
        data = exc.args[1] if len(exc.args) > 1 else (exc.args[0] if exc.args else "")
        if isinstance(data, Mapping):
            detail = ": ".join(str(data[k]) for k in ("error", "error_description") if data.get(k))
        else:
            detail = str(data)
        detail = escape_controls(redact(detail, self.secrets()))[:_MAX_DETAIL] or "no detail"
        kind = (self.credential.info or {}).get("type")
        if getattr(exc, "retryable", False):
            return GoogleAuthError(
                f"{provider}: the Google token endpoint failed ({detail}); the request can be retried", 502
            )
        return GoogleAuthError(
            f"{provider}: Google refused the {kind} credential ({detail}): check that the key is current and "
            "enabled, or run `gcloud auth application-default login` again",
            401,
        )

    # ----- the metadata server ----------------------------------------------------------------------------------

    async def _from_metadata(self, host: str, provider: str) -> tuple[str, float]:
        base = f"http://{host}/computeMetadata/v1"
        headers = {"metadata-flavor": "Google"}
        # Its own client: the metadata server is link-local, never reached through [upstream] proxy.
        async with httpx2.AsyncClient(trust_env=False, timeout=_METADATA_TIMEOUT) as client:
            try:
                response = await client.get(
                    f"{base}/instance/service-accounts/default/token",
                    params={"scopes": CLOUD_PLATFORM_SCOPE},
                    headers=headers,
                )
                if response.status_code == 200 and self.project is None:
                    project = await client.get(f"{base}/project/project-id", headers=headers)
                    if project.status_code == 200 and project.text.strip():
                        self.project = project.text.strip()
            except httpx2.HTTPError as exc:
                raise GoogleAuthError(
                    f"{provider}: the metadata server at {escape_controls(host)} cannot be reached "
                    f"({type(exc).__name__}); outside Google Cloud, set GOOGLE_APPLICATION_CREDENTIALS",
                    502,
                ) from None
        try:
            data = orjson.loads(response.content) if response.status_code == 200 else None
        except orjson.JSONDecodeError:
            data = None
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            excerpt = escape_controls(redact(response.text[:_MAX_DETAIL], self.secrets()))
            status = 401 if response.status_code in (401, 403, 404) else 502
            raise GoogleAuthError(
                f"{provider}: the metadata server gave no access token (HTTP {response.status_code}: {excerpt}); "
                "is a service account attached to this workload?",
                status,
            )
        lifetime = data.get("expires_in") if isinstance(data, dict) else None
        return token, float(lifetime) if isinstance(lifetime, int | float) else _DEFAULT_LIFETIME_SECONDS


def _retrieve(task: asyncio.Task[str]) -> None:
    # Mark the exception as seen: if every caller left, asyncio would otherwise log it as never retrieved.
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True, slots=True)
class _BridgeResponse:
    """google-auth's ``transport.Response`` interface."""

    status: int
    headers: Mapping[str, str]
    data: bytes


class _Bridge:
    """google-auth's ``transport.Request`` interface over the sidecar's ``httpx2.AsyncClient``: called in the worker
    thread, each request runs on the event loop, through the client's pool and ``[upstream] proxy``. It remembers the
    secret form fields it sends, so that no message can echo them."""

    def __init__(self, client: httpx2.AsyncClient, sent: set[str]) -> None:
        self._client = client
        self._sent = sent

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _BridgeResponse:
        if body:
            fields = parse_qsl(body.decode("utf-8", errors="replace"))
            self._sent.update(value for name, value in fields if name in _SENT_SECRET_FIELDS and value)
        limit = httpx2.Timeout(timeout) if timeout else _TOKEN_TIMEOUT
        return anyio.from_thread.run(self._send, url, method, body, dict(headers or {}), limit)

    async def _send(
        self, url: str, method: str, body: bytes | None, headers: dict[str, str], limit: httpx2.Timeout
    ) -> _BridgeResponse:
        response = await self._client.request(method, url, content=body, headers=headers, timeout=limit)
        return _BridgeResponse(response.status_code, response.headers, response.content)


# ----- the per-credential cache --------------------------------------------------------------------------------------

_sources: OrderedDict[str, TokenSource] = OrderedDict()


def token_source(value: str, provider: str) -> TokenSource:
    """The ``TokenSource`` of a credential value, shared by every call with the same value (keyed by its digest, so a
    rotated key gets a fresh source; the least recently used of more than ``_MAX_SOURCES`` are dropped)."""
    digest = hashlib.sha256(value.encode()).hexdigest()
    source = _sources.get(digest)
    if source is None:
        source = _sources[digest] = TokenSource(credential_from_value(value, provider))
        while len(_sources) > _MAX_SOURCES:
            _sources.popitem(last=False)
    else:
        _sources.move_to_end(digest)
    return source


_SECRET_FIELDS = ("private_key", "private_key_id", "refresh_token", "client_secret")


def secret_values(value: str) -> list[str]:
    """The secrets inside a Google credential value (a key file's private key, a user's refresh token …), for the
    log redaction; the value as a whole too."""
    found = [value]
    try:
        document = json.loads(value)
    except ValueError:
        return found
    if isinstance(document, dict) and isinstance(document.get("adc"), str):  # the resolver's envelope
        return [*found, *secret_values(document["adc"])[1:]]
    if isinstance(document, dict):
        found += [v for k in _SECRET_FIELDS if isinstance(v := document.get(k), str) and v]
    return found
