"""``sidecar`` command line: serve, token, credentials, models."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import __version__
from .auth import read_or_create_token, workload_token
from .cloud import secret_values
from .config import LOG_FORMATS, Settings, load_settings
from .credentials import CredentialStore, keyring_delete, keyring_set
from .errors import ConfigError, SidecarError
from .ledger import store_for
from .logs import configure_logging
from .realtime.tokens import store_for as token_store_for
from .registry import ModelRegistry

if TYPE_CHECKING:
    import uvicorn

    from .metrics import Metrics


def _known_secrets(settings: Settings, store: CredentialStore) -> list[str]:
    found: list[str] = []
    for provider in settings.catalog.providers.values():
        for credential in store.resolve_all(provider):  # every key of a pool
            found += secret_values(provider.credential, credential.value)  # a cloud JSON's keys one by one
    if settings.token:
        found.append(settings.token)
    found.extend(workload_token(settings, w) for w in settings.workloads)
    for url in (settings.ledger_url, settings.realtime.token_store_url, settings.policy.redis_url):
        if url:
            found.append(url)
            password = urlsplit(url).password
            if password:
                found.append(password)
    return found


async def _check_stores(settings: Settings) -> None:
    """Open the ledger and the realtime token store once before serving, so an unreachable database or Redis is one
    clear line, not a lifespan traceback."""
    for store in (store_for(settings), token_store_for(settings.realtime.token_store_url, settings.token_store_file)):
        await store.open()
        await store.close()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app, create_public_app
    from .http_server import server_config
    from .metrics_routes import MetricsApp

    settings = load_settings(
        args.config, host=args.host, port=args.port, workers=args.workers, log_format=args.log_format
    )
    store = CredentialStore(settings)
    configure_logging(settings, _known_secrets(settings, store))
    worker = args.listen_fd is not None
    if not worker:
        asyncio.run(_check_stores(settings))
        if settings.workers > 1:
            from .auth import BearerAuth
            from .workers import supervise

            BearerAuth.from_settings(settings)  # creates the token file once, before the workers read it
            return supervise(settings, args.argv)
    sockets = _listening_sockets(settings, args)
    app = create_app(settings)
    servable = sum(1 for _ in ModelRegistry(settings, store).servable())
    token_hint = "SIDECAR_TOKEN" if settings.token else str(settings.token_path)
    log = logging.getLogger("sidecar")
    log.info(
        "pi-sidecar %s on http://%s:%d — %d models servable; workload bearer from %s",
        __version__,
        settings.host,
        settings.port,
        servable,
        token_hint,
    )
    config = server_config(app, settings, host=settings.host, port=settings.port, access_log=args.access_log)
    private = (uvicorn.Server(config), sockets.pop("private"))
    if not sockets:
        private[0].run(sockets=[private[1]])
        return 0
    # The private app's lifespan opens the ledger and token store that the others share; they have none of their own.
    others: list[tuple[uvicorn.Server, socket.socket]] = []
    for name, sock in sockets.items():
        host, port = sock.getsockname()[:2]
        other = create_public_app(app) if name == "public" else MetricsApp(_metrics_of(app))
        config = server_config(other, settings, host=host, port=port, access_log=args.access_log, lifespan="off")
        others.append((uvicorn.Server(config), sock))
        log.info("%s listener on http://%s:%d", "public realtime" if name == "public" else "metrics", host, port)
    asyncio.run(_serve_together(private, others))
    return 0


def _metrics_of(app: object) -> Metrics:
    from .metrics import Metrics

    metrics = getattr(app, "metrics", None)
    assert isinstance(metrics, Metrics), "a metrics listener is bound only when metrics are enabled"
    return metrics


def _listening_sockets(settings: Settings, args: argparse.Namespace) -> dict[str, socket.socket]:
    """The listeners by name (``private``, and ``public`` / ``metrics`` when configured): a worker's inherited
    descriptors, else bound here before the app starts, so that a port in use is one line naming it and saying what
    to do (``workers.listen``), not uvicorn's errno after "Application startup complete"."""
    from .workers import bind, listeners

    wanted = listeners(settings)
    if args.listen_fd is None:
        return {listener.name: sock for listener, sock in bind(wanted).items()}
    inherited = {"--listen-fd": args.listen_fd, "--public-fd": args.public_fd, "--metrics-fd": args.metrics_fd}
    return {listener.name: socket.socket(fileno=inherited[listener.flag]) for listener in wanted}


async def _serve_together(
    private: tuple[uvicorn.Server, socket.socket], others: list[tuple[uvicorn.Server, socket.socket]]
) -> None:
    """Run the private listener and the others in one loop; when any stops (a signal reaches only the last server's
    handler), the rest are told to stop too."""
    private_task = asyncio.create_task(private[0].serve([private[1]]))
    # uvicorn exposes only a `started` flag, no event: poll it. The private lifespan opens the ledger and token store.
    while not private[0].started and not private_task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    tasks = {private_task, *(asyncio.create_task(server.serve([sock])) for server, sock in others)}
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server, _ in (private, *others):
        server.should_exit = True
    await asyncio.gather(*tasks)


def cmd_token(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings.token and not args.regenerate:
        print(settings.token)
        return 0
    print(read_or_create_token(settings.token_path, regenerate=args.regenerate))
    return 0


def cmd_credentials(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    store = CredentialStore(settings)
    if args.action == "list":
        for provider in settings.catalog.providers.values():
            credentials = store.resolve_all(provider)
            if credentials:
                where = ", ".join(c.source for c in credentials)  # a key pool: every member
            elif not provider.needs_credential:
                where = "not needed"
            else:
                why = store.why_missing(provider)
                where = f"missing ({why})" if why else "missing"
            print(f"{provider.id:<12} {where}")
        return 0
    if args.action == "check":
        # Exit 1 when a credential is there but does not work (invalid, unreachable); a missing one is a provider
        # not in use, not a failure.
        from .credential_check import FAILED, CredentialStatus, check_credentials
        from .upstream import Upstream

        configure_logging(settings, _known_secrets(settings, store))

        async def check() -> list[CredentialStatus]:
            async with Upstream(proxy=settings.upstream_proxy) as client:
                return await check_credentials(settings, store, client)

        statuses = asyncio.run(check())
        for s in statuses:
            latency = f"{s.latency_ms:.0f} ms" if s.latency_ms is not None else "-"
            print(f"{s.provider:<12} {s.status:<12} {s.location or '-':<28} {latency:>8}  {s.reason}")
        return 1 if any(s.status in FAILED for s in statuses) else 0
    if not args.provider:
        print(f"sidecar credentials {args.action}: name a provider", file=sys.stderr)
        return 2
    if args.provider not in settings.catalog.providers:
        known = ", ".join(sorted(settings.catalog.providers))
        print(f"unknown provider {args.provider!r}; known: {known}", file=sys.stderr)
        return 2
    try:
        if args.action == "set":
            value = getpass.getpass(f"{args.provider} API key: ") if sys.stdin.isatty() else sys.stdin.readline()
            value = value.strip()
            if not value:
                print("no key given; nothing stored", file=sys.stderr)
                return 2
            keyring_set(settings.keyring_service, args.provider, value)
            print(f"stored the {args.provider} key in the OS keyring (service {settings.keyring_service})")
        else:
            keyring_delete(settings.keyring_service, args.provider)
            print(f"removed the {args.provider} key from the OS keyring")
    except Exception as exc:
        print(
            f"keyring error ({type(exc).__name__}). With no OS keyring here, use a secrets directory, an env var or "
            "a file: credential location instead.",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    registry = ModelRegistry(settings, CredentialStore(settings))
    for spec in registry.servable():
        price = f"${spec.pricing.input:g}/${spec.pricing.output:g} per 1M in/out" if spec.pricing else "unpriced"
        print(f"{spec.full_id:<40} {spec.api:<20} {price}")
    return 0


def _port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number: use 1-65535")
    return port


_SERVE_DESCRIPTION = """\
Run the gateway: an HTTP server (default http://127.0.0.1:4000) that holds the
provider credentials and serves /v1/pi/stream, the OpenAI-, Anthropic- and AI
SDK-compatible routes and the realtime relay to callers that present the
workload bearer. Callers never see a provider key.

Needs: the workload bearer (SIDECAR_TOKEN, else the token file, created on
first use: see `sidecar token`) and a credential for each provider to call
(its standard env var such as OPENAI_API_KEY, the secrets directory, the OS
keyring or a [providers.<id>] credential location: see `sidecar credentials`).
With none, only the echo/echo model is served.

Configuration, first found wins: these options, the TOML file (--config, else
$SIDECAR_CONFIG), the environment (SIDECAR_*, HTTPS_PROXY …), the defaults. A
setting or section the file does not know is an error naming the closest
known one; the README's Configuration section lists them all."""

_SERVE_EPILOG = """\
examples:
  SIDECAR_TOKEN=... sidecar serve
  sidecar serve --config sidecar.toml --workers 4 --log-format json"""

_TOKEN_DESCRIPTION = """\
Print the workload bearer: the token callers send as `Authorization: Bearer …`
(or as their SDK's API key). With SIDECAR_TOKEN set, that value; otherwise the
token file, created on first use with 32 random bytes (base64url, mode 0600):
[server] token_file, else `token` in the sidecar's home ($SIDECAR_HOME, else
$XDG_CONFIG_HOME/pi-sidecar, else ~/.config/pi-sidecar)."""

_CREDENTIALS_DESCRIPTION = """\
Provider credentials, which only the sidecar holds and no command prints:
  list             where each provider's credential comes from (never the value)
  set PROVIDER     store an API key in the OS keyring (prompted for, or read
                   from stdin)
  remove PROVIDER  delete a provider's key from the OS keyring
  check            probe every provider's credential now; exit 1 if one is
                   invalid or unreachable

A provider's credential is looked up in this order, first found wins: the
config file's [providers.<id>] credential (env:NAME, file:PATH,
keyring:SERVICE), the secrets directory ([credentials] secrets_dir, else
$SIDECAR_SECRETS_DIR; a file named after the provider), the provider's
standard env vars (OPENAI_API_KEY …), the OS keyring (service [credentials]
keyring_service, default pi-sidecar)."""

_MODELS_DESCRIPTION = """\
List the models `sidecar serve` would serve now, one per line: id, wire API and
price in USD per 1M input/output tokens (or "unpriced"). Listed: every model of
the built-in catalog and the config's [models] rows whose provider has a
credential or needs none. Any other model id of a known provider is served
too, priced as the README's "Models and cost" section describes."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="Credential-holding auth gateway for LLM agents",
        epilog="`sidecar COMMAND --help` describes each command and its options.",
    )
    parser.add_argument("--version", action="version", version=f"pi-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, help="TOML config file (default: $SIDECAR_CONFIG)")
        return p

    def command(name: str, summary: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return with_config(
            sub.add_parser(
                name,
                help=summary,
                description=description,
                epilog=epilog,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )

    serve = command("serve", "run the gateway", _SERVE_DESCRIPTION, _SERVE_EPILOG)
    serve.add_argument("--host", help="bind address (default: [server] host, else 127.0.0.1)")
    serve.add_argument("--port", type=_port_number, help="port, 1-65535 (default: [server] port, else 4000)")
    serve.add_argument("--access-log", action="store_true", help="log one line per HTTP request")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text: one line per record; json: one JSON object per line (default: [server] log_format, else "
        "$SIDECAR_LOG_FORMAT, else text)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="processes serving the port, about one per core (default: [server] workers, else 1); they share the "
        "ledger, budgets and realtime client secrets",
    )
    # A worker's inherited listening sockets (set by the supervisor, sidecar/workers.py).
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--public-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--metrics-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    token = command("token", "print the workload bearer (created on first use)", _TOKEN_DESCRIPTION)
    token.add_argument(
        "--regenerate",
        action="store_true",
        help="replace the token file with a new token and print it; a running sidecar accepts the old one until "
        "it restarts",
    )
    token.set_defaults(func=cmd_token)

    creds = with_config(
        sub.add_parser(
            "credentials",
            help="manage provider keys in the OS keyring",
            description=_CREDENTIALS_DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    creds.add_argument(
        "action",
        choices=["set", "list", "remove", "check"],
        help="check: probe every provider's credential now; exit 1 if one is invalid or unreachable",
    )
    creds.add_argument("provider", nargs="?")
    creds.set_defaults(func=cmd_credentials)

    models = command("models", "list the models servable now", _MODELS_DESCRIPTION)
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a worker is started with (sidecar/workers.py)
    try:
        return int(args.func(args))
    except (ConfigError, SidecarError) as exc:
        print(f"sidecar: {exc.message}", file=sys.stderr)
        return 2
