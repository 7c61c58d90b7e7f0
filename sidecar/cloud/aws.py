"""The AWS credential chain for Bedrock (``[providers.bedrock] credential = "aws"``), read from ``Settings`` only.

``resolve`` finds the credential as the AWS SDKs do (botocore's order), first match wins:

1. ``AWS_BEARER_TOKEN_BEDROCK``: a Bedrock API key, sent as ``Authorization: Bearer``;
2. ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``);
3. web identity (IRSA on EKS, any OIDC federation): ``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``
   (+ ``AWS_ROLE_SESSION_NAME``), exchanged for temporary keys with STS ``AssumeRoleWithWebIdentity`` at call time;
4. the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE``, else ``~/.aws/credentials``), then the config file
   (``AWS_CONFIG_FILE``, else ``~/.aws/config``), profile ``AWS_PROFILE`` or ``default``: static keys, or a
   ``role_arn`` + ``web_identity_token_file`` pair.

The region goes with the credential: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, else the profile's ``region``.

The value handed to the adapter is a JSON object (``type`` = ``keys`` | ``bearer`` | ``web-identity``); it is held
in a ``Credential`` whose ``repr`` hides it. A value from a configured location (``env:``/``file:``/secrets
directory) may instead be such an object, the JSON ``credential_process`` prints (``AccessKeyId`` …), or a bare
Bedrock API key; ``parse`` reads all of them.

Web identity: the token file is re-read on every exchange (the kubelet rotates it) and the temporary keys are cached
until five minutes before they expire. The STS endpoint is regional (``https://sts.{region}.amazonaws.com``), or
``AWS_ENDPOINT_URL_STS`` as in the AWS SDKs.
"""

from __future__ import annotations

import configparser
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import anyio
import httpx2
import orjson

from sidecar.config import Settings
from sidecar.errors import MissingCredential, UpstreamProtocolError, UpstreamStatusError, map_transport_errors, redact
from sidecar.models import ProviderSpec

log = logging.getLogger("sidecar.cloud.aws")

MISSING_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), "
    "or AWS_BEARER_TOKEN_BEDROCK (a Bedrock API key), or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (IRSA), "
    "or put a profile in ~/.aws/credentials (AWS_PROFILE names it, AWS_SHARED_CREDENTIALS_FILE moves the file)"
)
"""What to do when ``resolve`` finds nothing: the AWS ways to give a credential."""

STS_REFRESH_MARGIN = 300.0
"""Seconds before expiry at which cached STS keys are replaced."""
_STS_TIMEOUT = httpx2.Timeout(10.0)
_STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
_DEFAULT_SESSION_NAME = "pi-sidecar"


# ----- the chain --------------------------------------------------------------------------------------------------


def resolve(settings: Settings, provider: ProviderSpec) -> tuple[str, str] | None:
    """The ``(value, source)`` of the first AWS credential found in ``settings``; ``None`` when there is none."""
    env = settings.environ
    profile = _env(env, "AWS_PROFILE") or _env(env, "AWS_DEFAULT_PROFILE") or "default"
    config_path, config_shown = _file(env, "AWS_CONFIG_FILE", "config")
    config = _profile_section(config_path, "default" if profile == "default" else f"profile {profile}")
    region = _env(env, "AWS_REGION") or _env(env, "AWS_DEFAULT_REGION") or config.get("region") or None

    if token := _env(env, "AWS_BEARER_TOKEN_BEDROCK"):
        return _dump(type="bearer", token=token, region=region), "env:AWS_BEARER_TOKEN_BEDROCK"
    key_id, secret = _env(env, "AWS_ACCESS_KEY_ID"), _env(env, "AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        keys = _dump(
            type="keys",
            accessKeyId=key_id,
            secretAccessKey=secret,
            sessionToken=_env(env, "AWS_SESSION_TOKEN") or None,
            region=region,
        )
        return keys, "env:AWS_ACCESS_KEY_ID"
    token_file, role = _env(env, "AWS_WEB_IDENTITY_TOKEN_FILE"), _env(env, "AWS_ROLE_ARN")
    if token_file and role:
        session = _env(env, "AWS_ROLE_SESSION_NAME") or _DEFAULT_SESSION_NAME
        return _web_identity(env, role, token_file, session, region), "web-identity"

    credentials_path, credentials_shown = _file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials")
    for section, shown in ((_profile_section(credentials_path, profile), credentials_shown), (config, config_shown)):
        key_id, secret = section.get("aws_access_key_id", ""), section.get("aws_secret_access_key", "")
        if key_id and secret:
            session_token = section.get("aws_session_token") or None
            keys = _dump(
                type="keys", accessKeyId=key_id, secretAccessKey=secret, sessionToken=session_token, region=region
            )
            return keys, f"file:{shown}[{profile}]"
    role, token_file = config.get("role_arn", ""), config.get("web_identity_token_file", "")
    if role and token_file:
        session = config.get("role_session_name") or _DEFAULT_SESSION_NAME
        return _web_identity(env, role, token_file, session, region), f"web-identity:{config_shown}[{profile}]"
    return None


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _dump(**fields: Any) -> str:
    return orjson.dumps({k: v for k, v in fields.items() if v is not None}).decode()


def _web_identity(env: Mapping[str, str], role: str, token_file: str, session: str, region: str | None) -> str:
    endpoint = _env(env, "AWS_ENDPOINT_URL_STS") or (
        f"https://sts.{region}.amazonaws.com" if region else "https://sts.amazonaws.com"
    )
    return _dump(
        type="web-identity",
        roleArn=role,
        tokenFile=token_file,
        sessionName=session,
        stsEndpoint=endpoint.rstrip("/"),
        region=region,
    )


def _file(env: Mapping[str, str], variable: str, name: str) -> tuple[Path | None, str]:
    """The path of an AWS file (its variable, else ``~/.aws/<name>`` under ``HOME``) and how a source shows it."""
    if configured := _env(env, variable):
        return Path(configured).expanduser(), configured
    home = _env(env, "HOME")
    return (Path(home) / ".aws" / name if home else None), f"~/.aws/{name}"


# Parsed AWS files by path, re-read when they change (mtime, size, inode): the chain runs on every request.
_FILES: dict[Path, tuple[tuple[int, int, int], dict[str, dict[str, str]]]] = {}


def _profile_section(path: Path | None, section: str) -> Mapping[str, str]:
    if path is None:
        return {}
    try:
        st = os.stat(path)
    except OSError:
        _FILES.pop(path, None)
        return {}
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _FILES.get(path)
    if cached is None or cached[0] != stamp:
        # Raw: a secret key may hold "%", which the interpolating parser would take for a reference.
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
            sections = {name: {k: v.strip() for k, v in parser.items(name)} for name in parser.sections()}
        except (OSError, UnicodeDecodeError, configparser.Error) as exc:
            # The exception's text may quote a line of the file (a key): only its type is logged.
            log.warning("cannot read the AWS file %s (%s); it is ignored", path, type(exc).__name__)
            sections = {}
        cached = (stamp, sections)
        _FILES[path] = cached
    return cached[1].get(section, {})


# ----- the value, as the adapter reads it -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keys:
    """AWS keys to sign with; ``repr`` shows the key id only."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    """Epoch seconds (temporary keys from STS)."""


@dataclass(frozen=True, slots=True)
class AwsCredential:
    """A parsed credential value: exactly one of ``keys``, ``bearer`` or ``web_identity``."""

    keys: Keys | None = None
    bearer: str | None = field(default=None, repr=False)
    web_identity: Mapping[str, str] | None = None
    """``roleArn``, ``tokenFile``, ``sessionName``, ``stsEndpoint``."""
    region: str | None = None

    def secrets(self) -> tuple[str, ...]:
        """The values no error text may carry: the secret key, the session token, the bearer."""
        found = [self.bearer] if self.bearer else []
        if self.keys is not None:
            found += [self.keys.secret_access_key, self.keys.session_token or ""]
        return tuple(s for s in found if s)


def parse(value: str) -> AwsCredential:
    """Read a credential value: the chain's JSON, ``credential_process`` JSON, or a bare Bedrock API key."""
    text = value.strip()
    if not text.startswith("{"):
        return AwsCredential(bearer=text)
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise MissingCredential(
            "the AWS credential is neither a JSON object nor a Bedrock API key; " + MISSING_HINT
        ) from None
    region = _text(data.get("region")) or None
    kind = data.get("type")
    if kind == "bearer" and _text(data.get("token")):
        return AwsCredential(bearer=_text(data["token"]), region=region)
    if kind == "web-identity":
        fields = {k: _text(data.get(k)) for k in ("roleArn", "tokenFile", "sessionName", "stsEndpoint")}
        if fields["roleArn"] and fields["tokenFile"] and fields["stsEndpoint"]:
            return AwsCredential(web_identity=fields, region=region)
    key_id = _text(data.get("accessKeyId") or data.get("AccessKeyId"))
    secret = _text(data.get("secretAccessKey") or data.get("SecretAccessKey"))
    if key_id and secret:
        token = _text(data.get("sessionToken") or data.get("SessionToken")) or None
        return AwsCredential(keys=Keys(key_id, secret, token), region=region)
    raise MissingCredential("the AWS credential JSON holds no usable keys; " + MISSING_HINT)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def secret_values(value: str) -> list[str]:
    """The secrets inside a credential value, for the log redaction (the JSON as a whole never appears in a log)."""
    try:
        return [value, *parse(value).secrets()]
    except MissingCredential:
        return [value]


# ----- web identity -----------------------------------------------------------------------------------------------

_STS_CACHE: dict[tuple[str, ...], Keys] = {}


def forget(web_identity: Mapping[str, str]) -> None:
    """Drop the cached STS keys of ``web_identity`` (AWS refused them: revoked, or a clock skew)."""
    _STS_CACHE.pop(_cache_key(web_identity), None)


def _cache_key(web_identity: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(web_identity.get(k, "") for k in ("roleArn", "tokenFile", "sessionName", "stsEndpoint"))


async def web_identity_keys(web_identity: Mapping[str, str], client: httpx2.AsyncClient, provider: str) -> Keys:
    """Temporary keys for the role, from the cache or from STS ``AssumeRoleWithWebIdentity`` (an unsigned call)."""
    key = _cache_key(web_identity)
    cached = _STS_CACHE.get(key)
    if cached is not None and (cached.expires_at or 0.0) - time.time() > STS_REFRESH_MARGIN:
        return cached
    token_file, role = web_identity["tokenFile"], web_identity["roleArn"]
    try:
        token = await anyio.to_thread.run_sync(_read_token, token_file)
    except (OSError, UnicodeDecodeError) as exc:
        raise MissingCredential(
            f"{provider}: the web identity token file {token_file} (AWS_WEB_IDENTITY_TOKEN_FILE) cannot be read "
            f"({type(exc).__name__}); on EKS, check the service account's IRSA annotation"
        ) from None
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": role,
        "RoleSessionName": web_identity.get("sessionName") or _DEFAULT_SESSION_NAME,
        "WebIdentityToken": token,  # in the form body, never the URL: URLs end up in proxy and access logs
    }
    with map_transport_errors(f"{provider} (AWS STS)"):
        response = await client.post(
            web_identity["stsEndpoint"] + "/", data=form, headers={"accept": "text/xml"}, timeout=_STS_TIMEOUT
        )
    if not response.is_success:
        code, message = _sts_error(response.text)
        text = f"AWS STS AssumeRoleWithWebIdentity for {role} failed ({code}): {message}"
        raise UpstreamStatusError(response.status_code, redact(text, (token,)), None, (token,))
    keys = _sts_keys(response.text, provider)
    _STS_CACHE[key] = keys
    return keys


def _read_token(path: str) -> str:
    return Path(path).expanduser().read_text(encoding="utf-8").strip()


def _sts_error(body: str) -> tuple[str, str]:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "error", body.strip()[:500] or "no body"
    code = root.findtext(f".//{_STS_NS}Code") or root.findtext(".//Code") or "error"
    message = root.findtext(f".//{_STS_NS}Message") or root.findtext(".//Message") or "no message"
    return code, message


def _sts_keys(body: str, provider: str) -> Keys:
    try:
        credentials = ElementTree.fromstring(body).find(f".//{_STS_NS}Credentials")
    except ElementTree.ParseError:
        credentials = None
    if credentials is None:
        raise UpstreamProtocolError(f"{provider}: AWS STS answered without credentials", 502)
    key_id = credentials.findtext(f"{_STS_NS}AccessKeyId") or ""
    secret = credentials.findtext(f"{_STS_NS}SecretAccessKey") or ""
    token = credentials.findtext(f"{_STS_NS}SessionToken") or None
    expiration = credentials.findtext(f"{_STS_NS}Expiration") or ""
    try:
        expires_at = datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp()
    except ValueError:
        expires_at = time.time() + 900.0  # STS's minimum session: re-asked for well before it can lapse
    if not key_id or not secret:
        raise UpstreamProtocolError(f"{provider}: AWS STS answered without credentials", 502)
    return Keys(key_id, secret, token, expires_at)
