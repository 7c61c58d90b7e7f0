"""Google credentials for Vertex AI (``sidecar.cloud.google``): the ``google`` resolver chain and the access tokens.

The network edge is faked by ``FakeGoogle``, a real HTTP server on 127.0.0.1 that plays Google's OAuth token endpoint
(a service-account key's ``token_uri`` points at it) and the GCE metadata server (``GCE_METADATA_HOST``). It checks
each JWT assertion's RS256 signature with the public half of a key generated here, so the tokens are really obtained
through google-auth's signing, not stubbed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sidecar.cloud import RESOLVERS, google
from sidecar.cloud.google import GoogleAuthError, TokenSource, credential_from_value
from sidecar.config import load_settings
from sidecar.credentials import CredentialStore
from sidecar.errors import ConfigError
from tests.canaries import leaks

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
CLIENT_EMAIL = "sidecar-test@canary-project.iam.gserviceaccount.com"


# ----- the fake Google edge ----------------------------------------------------------------------------------------


class FakeGoogle:
    """``POST /token`` (OAuth 2.0 token endpoint) and ``GET /computeMetadata/v1/...`` (metadata server)."""

    def __init__(self, public_key: rsa.RSAPublicKey | None = None) -> None:
        self.public_key = public_key
        self.replies: deque[tuple[int, Any]] = deque()
        """Scripted ``(status, JSON body)`` answers to the next token requests; then a fresh token each time."""
        self.failing: tuple[int, Any] | None = None
        """While set, the answer to every token request."""
        self.expires_in = 3600
        self.delay = 0.0
        self.forms: list[dict[str, str]] = []
        self.metadata_requests: list[tuple[str, dict[str, str]]] = []
        self.issued: list[str] = []
        self.bad_signatures = 0
        self.project_id = "metadata-project"
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def host(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def token_uri(self) -> str:
        return f"http://{self.host}/token"

    def __enter__(self) -> FakeGoogle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _token_reply(self, form: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            self.forms.append(form)
            if self.failing is not None:
                return self.failing
            if self.replies:
                return self.replies.popleft()
            if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer" and not self._signed(form):
                self.bad_signatures += 1
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            token = f"ya29.fake-{secrets.token_hex(12)}-{len(self.issued)}"
            self.issued.append(token)
            return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def _signed(self, form: dict[str, str]) -> bool:
        """The assertion is an RS256 JWT from our key, for our scope and audience."""
        if self.public_key is None:
            return True
        head, payload, signature = form.get("assertion", "..").split(".")
        try:
            self.public_key.verify(_b64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return False
        claims = json.loads(_b64(payload))
        # google-auth addresses every assertion to Google's endpoint, wherever token_uri sends it.
        audience = "https://oauth2.googleapis.com/token"
        return bool(claims["iss"] == CLIENT_EMAIL and claims["scope"] == SCOPE and claims["aud"] == audience)

    def _metadata_reply(self, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            self.metadata_requests.append((path, headers))
            if headers.get("metadata-flavor") != "Google":
                return 403, "Missing Metadata-Flavor:Google header."
            if self.replies:
                return self.replies.popleft()
            if urlsplit(path).path == "/computeMetadata/v1/project/project-id":
                return 200, self.project_id
            token = f"ya29.metadata-{secrets.token_hex(12)}-{len(self.issued)}"
            self.issued.append(token)
            return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                self._answer(*fake._token_reply(form))

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._answer(*fake._metadata_reply(self.path, headers))

            def _answer(self, status: int, body: Any) -> None:
                time.sleep(fake.delay)
                raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("content-type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def service_account_doc(key: rsa.RSAPrivateKey, token_uri: str, project: str = "sa-project") -> dict[str, str]:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }


def pem_body(doc: dict[str, str]) -> str:
    """The base64 middle of the private key: what a leak would show."""
    return "".join(doc["private_key"].splitlines()[1:-1])


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(key: rsa.RSAPrivateKey) -> Iterator[FakeGoogle]:
    with FakeGoogle(key.public_key()) as server:
        yield server


@pytest.fixture
async def client() -> Any:
    async with httpx2.AsyncClient(trust_env=False) as c:
        yield c


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sa_source(key: rsa.RSAPrivateKey, fake: FakeGoogle, clock: Clock | None = None) -> TokenSource:
    value = json.dumps(service_account_doc(key, fake.token_uri))
    return TokenSource(credential_from_value(value, "vertex"), clock or Clock())


# ----- access tokens -------------------------------------------------------------------------------------------------


async def test_first_call_fetches_a_token_with_a_signed_assertion_and_later_calls_reuse_it(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    clock = Clock()
    source = sa_source(key, fake, clock)
    first = await source.token(client, "vertex")
    assert first == fake.issued[0]
    assert len(fake.forms) == 1 and fake.bad_signatures == 0
    assert fake.forms[0]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    clock.now += 3600 - 301  # just outside the five-minute margin
    assert await source.token(client, "vertex") == first
    assert len(fake.forms) == 1
    assert source.project == "sa-project"  # the key's project_id, with no GOOGLE_CLOUD_PROJECT


async def test_a_token_within_five_minutes_of_expiry_is_refreshed(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    clock = Clock()
    source = sa_source(key, fake, clock)
    first = await source.token(client, "vertex")
    clock.now += 3600 - 299
    second = await source.token(client, "vertex")
    assert second != first and second == fake.issued[1]
    assert len(fake.forms) == 2
    assert await source.token(client, "vertex") == second  # the new one is cached again


async def test_a_short_lived_token_is_refreshed_at_half_its_life(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    fake.expires_in = 120  # shorter than the margin: reuse it for a minute, not never
    clock = Clock()
    source = sa_source(key, fake, clock)
    first = await source.token(client, "vertex")
    clock.now += 55
    assert await source.token(client, "vertex") == first
    clock.now += 10
    assert await source.token(client, "vertex") != first
    assert len(fake.forms) == 2


async def test_concurrent_callers_share_one_refresh(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    fake.delay = 0.3
    source = sa_source(key, fake)
    tokens = await asyncio.gather(*(source.token(client, "vertex") for _ in range(25)))
    assert set(tokens) == {fake.issued[0]}
    assert len(fake.forms) == 1


async def test_a_caller_that_leaves_does_not_cancel_the_refresh_the_others_wait_for(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    fake.delay = 0.3
    source = sa_source(key, fake)
    leaving = asyncio.ensure_future(source.token(client, "vertex"))
    staying = asyncio.ensure_future(source.token(client, "vertex"))
    await asyncio.sleep(0.1)
    leaving.cancel()
    assert await staying == fake.issued[0]
    assert len(fake.forms) == 1


async def test_a_token_vertex_rejected_is_refreshed_once_whoever_reports_it(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    source = sa_source(key, fake)
    old = await source.token(client, "vertex")
    source.invalidate(old)
    new = await source.token(client, "vertex")
    assert new != old
    source.invalidate(old)  # a late report about the old token must not throw the new one away
    assert await source.token(client, "vertex") == new
    assert len(fake.forms) == 2


async def test_an_authorized_user_file_uses_its_refresh_token_and_quota_project(
    fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    doc = {
        "type": "authorized_user",
        "client_id": "client-id.apps.googleusercontent.com",
        "client_secret": "d-canary-client-secret",
        "refresh_token": "1//canary-refresh-token",
        "quota_project_id": "billing-project",
        "token_uri": fake.token_uri,
    }
    source = TokenSource(credential_from_value(json.dumps(doc), "vertex"))
    assert await source.token(client, "vertex") == fake.issued[0]
    form = fake.forms[0]
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == doc["refresh_token"]
    assert form["client_secret"] == doc["client_secret"]
    assert source.quota_project == "billing-project" and source.project is None


# ----- failures: clear statuses and messages, never a secret ----------------------------------------------------------


async def test_a_refused_key_is_a_401_naming_the_reason_without_any_secret(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    doc = service_account_doc(key, fake.token_uri)
    source = TokenSource(credential_from_value(json.dumps(doc), "vertex"))
    # A hostile endpoint echoing what it was sent: the signed assertion, the key id and the key itself.
    fake.replies.append((400, {"error": "invalid_grant", "error_description": "placeholder"}))
    original = fake._token_reply

    def echoing(form: dict[str, str]) -> tuple[int, Any]:
        status, body = original(form)
        body["error_description"] = f"bad assertion {form['assertion']} for key {doc['private_key']}"
        return status, body

    fake._token_reply = echoing  # type: ignore[method-assign]
    with pytest.raises(GoogleAuthError) as caught:
        await source.token(client, "vertex")
    error = caught.value
    assert error.status == 401 and error.type == "authentication_error"
    assert error.message.startswith("vertex: Google refused the service_account credential (invalid_grant: bad")
    assertion = fake.forms[0]["assertion"]
    for secret in (assertion, pem_body(doc), doc["private_key_id"]):
        assert not leaks(error.message, secret)
        assert not leaks(caplog.text, secret)
        assert not leaks(repr(source.credential), secret)


async def test_a_failing_token_endpoint_is_a_502_after_google_auths_retries(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    fake.failing = (503, {"error": "internal_failure", "error_description": "try later"})
    source = sa_source(key, fake)
    with pytest.raises(GoogleAuthError) as caught:
        await source.token(client, "vertex")
    assert caught.value.status == 502 and caught.value.type == "upstream_error"
    assert "internal_failure: try later" in caught.value.message
    assert len(fake.forms) > 1  # google-auth retried (how often is its business: 3 attempts in 2.63, 4 in 2.20)
    fake.failing = None
    # The next call tries again (nothing broken is cached) and succeeds.
    assert await source.token(client, "vertex") == fake.issued[0]


async def test_an_unreachable_token_endpoint_is_a_502(key: rsa.RSAPrivateKey, client: httpx2.AsyncClient) -> None:
    with FakeGoogle() as gone:
        uri = gone.token_uri
    value = json.dumps(service_account_doc(key, uri))
    with pytest.raises(GoogleAuthError) as caught:
        await TokenSource(credential_from_value(value, "vertex")).token(client, "vertex")
    assert caught.value.status == 502
    assert caught.value.message == (
        "vertex: the Google token endpoint cannot be reached (ConnectError); check the network or [upstream] proxy"
    )


async def test_a_key_that_does_not_load_is_a_401_without_the_key(client: httpx2.AsyncClient) -> None:
    doc = {
        "type": "service_account",
        "private_key": "-----BEGIN PRIVATE KEY-----\nQ0FOQVJZLW5vdC1hLWtleS0wMTIzNDU2Nzg5\n-----END PRIVATE KEY-----\n",
        "client_email": CLIENT_EMAIL,
        "token_uri": "http://127.0.0.1:9/token",
    }
    with pytest.raises(GoogleAuthError) as caught:
        await TokenSource(credential_from_value(json.dumps(doc), "vertex")).token(client, "vertex")
    assert caught.value.status == 401
    assert caught.value.message.startswith("vertex: the Google service_account credential cannot be used: ")
    assert not leaks(caught.value.message, "Q0FOQVJZLW5vdC1hLWtleS0wMTIzNDU2Nzg5")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sk-not-json", "vertex: the Google credential is not a JSON document"),
        ('{"type": "external_account", "audience": "x"}', "vertex: Google credentials of type 'external_account'"),
        ('{"adc": "{\\"private_key\\": 1}"}', "vertex: Google credentials of type 'None'"),
    ],
)
def test_values_that_are_no_google_credential_are_refused_clearly(value: str, expected: str) -> None:
    with pytest.raises(GoogleAuthError) as caught:
        credential_from_value(value, "vertex")
    assert caught.value.status == 401 and caught.value.message.startswith(expected)
    assert "sk-not-json" not in caught.value.message


async def test_without_google_auth_the_error_names_the_extra(
    key: rsa.RSAPrivateKey, fake: FakeGoogle, client: httpx2.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "google.oauth2", None)  # `import google.oauth2` now raises ImportError
    with pytest.raises(ConfigError) as caught:
        await sa_source(key, fake).token(client, "vertex")
    assert caught.value.message == (
        "vertex: a Google service_account credential needs the google-auth library: pip install 'pi-sidecar[vertex]'"
    )
    assert fake.forms == []


# ----- the metadata server -------------------------------------------------------------------------------------------


async def test_the_metadata_server_gives_the_token_and_the_project(
    fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    value = json.dumps({"metadata": fake.host})
    clock = Clock()
    source = TokenSource(credential_from_value(value, "vertex"), clock)
    token = await source.token(client, "vertex")
    assert token == fake.issued[0]
    assert source.project == "metadata-project"
    paths = [path for path, _ in fake.metadata_requests]
    assert paths == [
        "/computeMetadata/v1/instance/service-accounts/default/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth"
        "%2Fcloud-platform",
        "/computeMetadata/v1/project/project-id",
    ]
    clock.now += 3000
    assert await source.token(client, "vertex") == token
    clock.now += 301
    assert await source.token(client, "vertex") != token
    assert len(fake.metadata_requests) == 3  # the project is asked once


async def test_an_environment_project_wins_over_the_metadata_servers(
    fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    value = json.dumps({"metadata": fake.host, "project": "env-project"})
    source = TokenSource(credential_from_value(value, "vertex"))
    await source.token(client, "vertex")
    assert source.project == "env-project"
    assert len(fake.metadata_requests) == 1


async def test_a_metadata_server_without_a_service_account_is_a_401(
    fake: FakeGoogle, client: httpx2.AsyncClient
) -> None:
    fake.replies.append((404, "Not Found"))
    source = TokenSource(credential_from_value(json.dumps({"metadata": fake.host}), "vertex"))
    with pytest.raises(GoogleAuthError) as caught:
        await source.token(client, "vertex")
    assert caught.value.status == 401
    assert caught.value.message == (
        "vertex: the metadata server gave no access token (HTTP 404: Not Found); is a service account attached to "
        "this workload?"
    )


async def test_an_unreachable_metadata_server_is_a_502(client: httpx2.AsyncClient) -> None:
    with FakeGoogle() as gone:
        host = gone.host
    source = TokenSource(credential_from_value(json.dumps({"metadata": host}), "vertex"))
    with pytest.raises(GoogleAuthError) as caught:
        await source.token(client, "vertex")
    assert caught.value.status == 502 and "cannot be reached (ConnectError)" in caught.value.message


# ----- the resolver chain --------------------------------------------------------------------------------------------


@pytest.fixture
def no_google_hardware(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """This machine's DMI product name, as the resolver reads it: a file the test writes (absent: not Google's)."""
    path = tmp_path / "product_name"
    monkeypatch.setattr(google, "_DMI_PRODUCT_NAME", path)
    google.on_google_hardware.cache_clear()
    yield path
    google.on_google_hardware.cache_clear()


def _resolve(environ: dict[str, str]) -> tuple[str, str] | None:
    settings = load_settings(None, environ)
    return RESOLVERS["google"](settings, settings.catalog.providers["vertex"])


def _write(path: Path, doc: dict[str, str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path.read_text(encoding="utf-8")


def test_google_application_credentials_comes_first_with_the_environments_defaults(
    key: rsa.RSAPrivateKey, tmp_path: Path, no_google_hardware: Path
) -> None:
    named = _write(tmp_path / "sa.json", service_account_doc(key, "http://127.0.0.1:9/token"))
    _write(tmp_path / "home" / ".config" / "gcloud" / "application_default_credentials.json", {"type": "other"})
    env = {
        "HOME": str(tmp_path / "home"),
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "sa.json"),
        "GOOGLE_CLOUD_PROJECT": "env-project",
        "GOOGLE_CLOUD_LOCATION": "europe-west4",
        "GCE_METADATA_HOST": "127.0.0.1:9",
    }
    found = _resolve(env)
    assert found is not None
    value, source = found
    assert source == "env:GOOGLE_APPLICATION_CREDENTIALS"
    assert json.loads(value) == {"adc": named.strip(), "project": "env-project", "location": "europe-west4"}
    credential = credential_from_value(value, "vertex")
    assert credential.info is not None and credential.info["client_email"] == CLIENT_EMAIL
    assert (credential.project, credential.location) == ("env-project", "europe-west4")


def test_an_unreadable_google_application_credentials_is_no_credential_and_a_warning(
    tmp_path: Path, no_google_hardware: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path / ".config" / "gcloud" / "application_default_credentials.json", {"type": "authorized_user"})
    env = {"HOME": str(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")}
    assert _resolve(env) is None  # not silently another identity (the gcloud file)
    assert f"GOOGLE_APPLICATION_CREDENTIALS names '{tmp_path / 'missing.json'}', which cannot be read" in caplog.text


def test_then_gclouds_adc_file_under_home_or_cloudsdk_config(tmp_path: Path, no_google_hardware: Path) -> None:
    doc = {"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}
    text = _write(tmp_path / ".config" / "gcloud" / "application_default_credentials.json", doc)
    assert _resolve({"HOME": str(tmp_path), "GCLOUD_PROJECT": "legacy-project"}) == (
        json.dumps({"adc": text, "project": "legacy-project"}, separators=(",", ":")),
        "gcloud-adc",
    )
    other = _write(tmp_path / "sdk" / "application_default_credentials.json", {**doc, "refresh_token": "r2"})
    found = _resolve({"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "sdk")})
    assert found is not None and json.loads(found[0]) == {"adc": other} and found[1] == "gcloud-adc"


def test_a_rotated_file_is_read_again(tmp_path: Path, no_google_hardware: Path) -> None:
    path = tmp_path / "sa.json"
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(path)}
    _write(path, {"type": "service_account", "private_key_id": "one"})
    first = _resolve(env)
    _write(path, {"type": "service_account", "private_key_id": "second"})
    second = _resolve(env)
    assert first is not None and second is not None
    assert '"one"' in json.loads(first[0])["adc"] and '"second"' in json.loads(second[0])["adc"]


def test_then_the_metadata_server_named_by_gce_metadata_host(tmp_path: Path, no_google_hardware: Path) -> None:
    assert _resolve({"HOME": str(tmp_path), "GCE_METADATA_HOST": "127.0.0.1:8089"}) == (
        '{"metadata":"127.0.0.1:8089"}',
        "metadata-server",
    )
    assert _resolve({"HOME": str(tmp_path), "GCE_METADATA_HOST": "127.0.0.1:8089", "NO_GCE_CHECK": "True"}) is None


@pytest.mark.parametrize(
    ("product", "env", "found"),
    [
        ("Google Compute Engine\n", {}, True),
        ("Standard PC (Q35 + ICH9, 2009)\n", {}, False),
        (None, {}, False),
        (None, {"K_SERVICE": "my-service"}, True),
        (None, {"CLOUD_RUN_JOB": "my-job"}, True),
    ],
)
def test_or_the_default_metadata_server_on_google_machines_without_a_network_probe(
    tmp_path: Path, no_google_hardware: Path, product: str | None, env: dict[str, str], found: bool
) -> None:
    if product is not None:
        no_google_hardware.write_text(product, encoding="utf-8")
    expected = ('{"metadata":"metadata.google.internal"}', "metadata-server") if found else None
    assert _resolve({"HOME": str(tmp_path), **env}) == expected


def test_the_credential_store_serves_vertex_through_the_google_chain(
    key: rsa.RSAPrivateKey, tmp_path: Path, no_google_hardware: Path
) -> None:
    settings = load_settings(None, {"HOME": str(tmp_path)})
    store = CredentialStore(settings)
    vertex = settings.catalog.providers["vertex"]
    assert vertex.credential == "google" and vertex.api == "google-vertex"
    assert store.resolve(vertex) is None
    _write(tmp_path / ".config" / "gcloud" / "application_default_credentials.json", {"type": "authorized_user"})
    credential = store.resolve(vertex)
    assert credential is not None and credential.source == "gcloud-adc"
    assert "authorized_user" not in repr(credential)


def test_token_sources_are_shared_per_credential_value() -> None:
    one = google.token_source('{"metadata": "127.0.0.1:1"}', "vertex")
    assert google.token_source('{"metadata": "127.0.0.1:1"}', "vertex") is one
    assert google.token_source('{"metadata": "127.0.0.1:2"}', "vertex") is not one
    assert google.token_source("metadata", "vertex").credential.metadata_host == "metadata.google.internal"
