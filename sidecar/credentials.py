"""Where provider keys come from, in order of precedence:

1. the config file's location for the provider (``env:NAME``, ``file:PATH``, ``keyring:SERVICE``);
2. the secrets directory: one file per provider named after it, as a mounted Kubernetes Secret gives them. Files are
   re-read when they change (mtime, size or inode: the kubelet swaps a ``..data`` symlink), so a rotated Secret
   needs no restart;
3. the provider's standard environment variables (``OPENAI_API_KEY``, ``GEMINI_API_KEY`` then ``GOOGLE_API_KEY`` …);
4. the OS keyring (service ``pi-sidecar``, user = provider id), when a backend exists.

Values are held in ``Credential`` objects whose ``repr`` hides them; they are never logged.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cloud import MISSING_HINTS, RESOLVERS
from .config import Settings
from .errors import ConfigError, MissingCredential
from .models import ProviderSpec

log = logging.getLogger("sidecar.credentials")

_KEYRING_CACHE_SECONDS = 60.0  # keyring backends are D-Bus round trips; never pay one per request


@dataclass(frozen=True, slots=True)
class Credential:
    value: str = field(repr=False)
    source: str
    """Where it came from, e.g. ``env:OPENAI_API_KEY`` or ``secrets-dir``: safe to show and to record."""

    def __repr__(self) -> str:
        return f"Credential(source={self.source!r}, value=***)"


@dataclass(slots=True)
class _FileEntry:
    stamp: tuple[int, int, int]
    value: str | None


class KeyringUnavailable(ConfigError):
    pass


class CredentialStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._files: dict[Path, _FileEntry] = {}
        self._keyring: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._keyring_broken: str | None = None
        self._listing: tuple[tuple[Path, int], list[str]] | None = None

    # ----- lookups ----------------------------------------------------------------------------------------------

    def resolve(self, provider: ProviderSpec) -> Credential | None:
        """The provider's (first) key, or ``None``. Cheap enough to call per request (a ``stat`` or two at most)."""
        found = self.resolve_all(provider)
        return found[0] if found else None

    def resolve_all(self, provider: ProviderSpec) -> list[Credential]:
        """Every key the provider has now, in order: several when the config names several locations or the secrets
        directory holds several files for it (a key pool, ``sidecar.key_pool``), else one, else none. Each has its
        own ``source``, which is what the ledger records."""
        locations = self._settings.credential_locations.get(provider.id)
        if locations is not None:
            found = (self._from_location(provider.id, location) for location in locations)
            return [credential for credential in found if credential is not None]
        if self._settings.secrets_dir is not None:
            pool = self._secrets_dir_pool(self._settings.secrets_dir, provider.id)
            if pool:
                return pool
        if provider.credential != "key":
            resolver = RESOLVERS.get(provider.credential)
            if resolver is None:
                raise ConfigError(
                    f"[providers.{provider.id}] credential = {provider.credential!r} is not a known kind "
                    f"(key, {', '.join(sorted(RESOLVERS))})"
                )
            cloud = resolver(self._settings, provider)
            return [Credential(*cloud)] if cloud else []
        for name in provider.env_keys:
            value = self._settings.environ.get(name, "").strip()
            if value:
                return [Credential(value, f"env:{name}")]
        stored = self._keyring_get(self._settings.keyring_service, provider.id, explicit=False)
        return [Credential(stored, "keyring")] if stored else []

    def require(self, provider: ProviderSpec) -> list[Credential]:
        """Like ``resolve_all``, but a provider that needs a key and has none is a ``MissingCredential`` error."""
        credentials = self.resolve_all(provider)
        if not credentials and provider.needs_credential:
            raise MissingCredential(missing_credential_message(provider, self.why_missing(provider)))
        return credentials

    def why_missing(self, provider: ProviderSpec) -> str | None:
        """Why the config file's locations for ``provider`` give no key (``env:NAME is not set``), or ``None`` when
        the config names none. Worth saying first: configured locations win, so no other place is looked at."""
        locations = self._settings.credential_locations.get(provider.id)
        if not locations:
            return None
        reasons = [reason for location in locations if (reason := self._why_empty(provider, location))]
        return "; ".join(reasons) or None

    def _why_empty(self, provider: ProviderSpec, location: str) -> str | None:
        scheme, _, rest = location.partition(":")
        if scheme == "env":
            return f"env:{rest} is not set" if not self._settings.environ.get(rest, "").strip() else None
        if scheme == "file":
            return f"file:{rest} is missing or empty" if not self._read_file(Path(rest).expanduser()) else None
        return f"the OS keyring (service {rest or self._settings.keyring_service}) has no {provider.id} entry"

    def check_locations(self) -> None:
        """Fail at startup, with the provider named, if a configured ``keyring:`` location cannot work."""
        for pid, locations in self._settings.credential_locations.items():
            for location in locations:
                if location.startswith("keyring:"):
                    self._keyring_get(location.removeprefix("keyring:") or self._settings.keyring_service, pid, True)

    def _from_location(self, provider: str, location: str) -> Credential | None:
        scheme, _, rest = location.partition(":")
        if scheme == "env":
            value = self._settings.environ.get(rest, "").strip()
        elif scheme == "file":
            value = self._read_file(Path(rest).expanduser()) or ""
        else:
            value = self._keyring_get(rest or self._settings.keyring_service, provider, explicit=True) or ""
        return Credential(value, f"config:{location}") if value else None

    def _secrets_dir_pool(self, directory: Path, provider: str) -> list[Credential]:
        """The file named ``provider`` (source ``secrets-dir``) and those named ``provider.<name>`` (source
        ``secrets-dir:<file name>``), in name order: a Kubernetes Secret with keys ``anthropic``, ``anthropic.b`` …"""
        found: list[Credential] = []
        for name in self._pool_names(directory, provider):
            value = self._read_file(directory / name)
            if value:
                found.append(Credential(value, "secrets-dir" if name == provider else f"secrets-dir:{name}"))
        return found

    def _pool_names(self, directory: Path, provider: str) -> list[str]:
        # The listing is re-read only when the directory changes (a file added or removed, or the kubelet swapping
        # its ..data link): one stat per request, as for a single file.
        try:
            stamp = os.stat(directory).st_mtime_ns
        except OSError:
            return []
        cached = self._listing
        if cached is None or cached[0] != (directory, stamp):
            try:
                names = sorted(entry.name for entry in os.scandir(directory) if not entry.name.startswith("."))
            except OSError:
                names = []
            cached = self._listing = ((directory, stamp), names)
        prefix = provider + "."
        return [name for name in cached[1] if name == provider or name.startswith(prefix)]

    def _read_file(self, path: Path) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            self._files.pop(path, None)
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        entry = self._files.get(path)
        if entry is None or entry.stamp != stamp:
            try:
                value = path.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("cannot read credential file %s: %s", path, type(exc).__name__)
                value = None
            entry = _FileEntry(stamp, value)
            self._files[path] = entry
        return entry.value

    # ----- keyring ----------------------------------------------------------------------------------------------

    def _keyring_get(self, service: str, provider: str, explicit: bool) -> str | None:
        if self._keyring_broken is not None:
            if explicit:
                raise KeyringUnavailable(keyring_unavailable_message(provider, self._keyring_broken))
            return None
        now = time.monotonic()
        cached = self._keyring.get((service, provider))
        if cached is not None and now - cached[0] < _KEYRING_CACHE_SECONDS:
            return cached[1]
        try:
            import keyring
            from keyring.errors import KeyringError

            try:
                value = keyring.get_password(service, provider)
            except KeyringError as exc:
                raise RuntimeError(str(exc)) from None
        except Exception as exc:  # no backend, broken D-Bus, import error: all mean "no keyring here"
            self._keyring_broken = type(exc).__name__
            log.info("no usable OS keyring (%s); keyring credentials are disabled", type(exc).__name__)
            if explicit:
                raise KeyringUnavailable(keyring_unavailable_message(provider, self._keyring_broken)) from None
            return None
        self._keyring[(service, provider)] = (now, value)
        return value


def keyring_unavailable_message(provider: str, reason: str) -> str:
    return (
        f"provider {provider}: a keyring: credential is configured but no OS keyring backend is usable here "
        f"({reason}). Install a backend (e.g. `pip install keyrings.alt`) or use env:NAME / file:PATH instead."
    )


def missing_credential_message(provider: ProviderSpec, why: str | None = None) -> str:
    """How to add a credential for ``provider``; ``why`` (``CredentialStore.why_missing``) first when the config file
    names a location: only that location is looked at, so the other ways would not help."""
    if why is not None:
        return (
            f"No credential available for provider {provider.id}: {why}. The config file's [providers.{provider.id}] "
            "credential names it, and a configured location wins over every other place: provide the value there, "
            "or change that line."
        )
    cloud = MISSING_HINTS.get(provider.credential)
    if cloud is not None:
        return (
            f"No {provider.credential} credential available for provider {provider.id}. To add one: {cloud}, or put "
            f"it in a file named `{provider.id}` in the secrets directory."
        )
    env_hint = " or ".join(provider.env_keys) if provider.env_keys else None
    ways = [f"set {env_hint}"] if env_hint else []
    ways += [
        f"put the key in a file named `{provider.id}` in the secrets directory",
        f"run `sidecar credentials set {provider.id}`",
        f'or set credential = "env:NAME" under [providers.{provider.id}] in the config file',
    ]
    return f"No credential available for provider {provider.id}. To add one: " + ", ".join(ways) + "."


def keyring_set(service: str, provider: str, value: str) -> None:
    import keyring

    keyring.set_password(service, provider, value)


def keyring_delete(service: str, provider: str) -> None:
    import keyring

    keyring.delete_password(service, provider)
