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
from .config import Settings, load_settings
from .credentials import CredentialStore, keyring_delete, keyring_set
from .errors import ConfigError, SidecarError
from .ledger import store_for
from .logs import configure_logging
from .realtime.tokens import store_for as token_store_for
from .registry import ModelRegistry

if TYPE_CHECKING:
    import uvicorn


def _known_secrets(settings: Settings, store: CredentialStore) -> list[str]:
    found: list[str] = []
    for provider in settings.catalog.providers.values():
        credential = store.resolve(provider)
        if credential is not None:
            found += secret_values(provider.credential, credential.value)  # a cloud JSON's keys one by one
    if settings.token:
        found.append(settings.token)
    found.extend(workload_token(settings, w) for w in settings.workloads)
    for url in (settings.ledger_url, settings.realtime.token_store_url):
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

    settings = load_settings(args.config, host=args.host, port=args.port, workers=args.workers)
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
    app = create_app(settings)
    servable = sum(1 for _ in ModelRegistry(settings, store).servable())
    token_hint = "SIDECAR_TOKEN" if settings.token else str(settings.token_path)
    logging.getLogger("sidecar").info(
        "pi-sidecar %s on http://%s:%d — %d models servable; workload bearer from %s",
        __version__,
        settings.host,
        settings.port,
        servable,
        token_hint,
    )
    config = server_config(app, settings, host=settings.host, port=settings.port, access_log=args.access_log)
    rt = settings.realtime
    if rt.public_host is None or rt.public_port is None:
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=args.listen_fd)] if worker else None)
        return 0
    # The private app's lifespan opens the ledger and token store that the public app shares.
    public = server_config(
        create_public_app(app),
        settings,
        host=rt.public_host,
        port=rt.public_port,
        access_log=args.access_log,
        lifespan="off",
    )
    logging.getLogger("sidecar").info("public realtime listener on http://%s:%d", rt.public_host, rt.public_port)
    inherited = (args.listen_fd, args.public_fd) if worker and args.public_fd is not None else None
    asyncio.run(_serve_both(uvicorn.Server(config), uvicorn.Server(public), inherited))
    return 0


async def _serve_both(
    private: uvicorn.Server, public: uvicorn.Server, inherited: tuple[int, int] | None = None
) -> None:
    """Run the private and the public listener in one loop; when either stops (a signal reaches only the last
    server's handler), the other is told to stop too. ``inherited``: a worker's two listening descriptors."""
    private_sockets, public_sockets = ([socket.socket(fileno=fd)] for fd in inherited) if inherited else (None, None)
    private_task = asyncio.create_task(private.serve(private_sockets))
    # uvicorn exposes only a `started` flag, no event: poll it. The private lifespan opens the ledger and token store.
    while not private.started and not private_task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    public_task = asyncio.create_task(public.serve(public_sockets))
    await asyncio.wait({private_task, public_task}, return_when=asyncio.FIRST_COMPLETED)
    private.should_exit = public.should_exit = True
    await asyncio.gather(private_task, public_task)


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
            credential = store.resolve(provider)
            if credential is not None:
                where = credential.source
            else:
                where = "not needed" if not provider.needs_credential else "missing"
            print(f"{provider.id:<12} {where}")
        return 0
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidecar", description="Credential-holding auth gateway for LLM agents")
    parser.add_argument("--version", action="version", version=f"pi-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, help="TOML config file (default: $SIDECAR_CONFIG)")
        return p

    serve = with_config(sub.add_parser("serve", help="run the gateway"))
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port_number, help="port, 1-65535 (default 4000)")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.add_argument(
        "--workers",
        type=int,
        help="processes serving the port, about one per core (default: [server] workers, else 1); they share the "
        "ledger, budgets and realtime client secrets",
    )
    # A worker's inherited listening sockets (set by the supervisor, sidecar/workers.py).
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--public-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    token = with_config(sub.add_parser("token", help="print the workload bearer (created on first use)"))
    token.add_argument("--regenerate", action="store_true", help="replace the token file with a new token")
    token.set_defaults(func=cmd_token)

    creds = with_config(sub.add_parser("credentials", help="manage provider keys in the OS keyring"))
    creds.add_argument("action", choices=["set", "list", "remove"])
    creds.add_argument("provider", nargs="?")
    creds.set_defaults(func=cmd_credentials)

    models = with_config(sub.add_parser("models", help="list the models servable now"))
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
