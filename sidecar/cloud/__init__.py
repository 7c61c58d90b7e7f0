"""Credentials that are not one API key: a cloud's own credential chain (Google application default credentials for
Vertex, the AWS chain for Bedrock), one module per cloud, registered in ``RESOLVERS`` by the provider's
``credential`` kind (``[providers.<id>] credential = "google"`` in the catalog or config).

A resolver reads only what ``Settings`` holds (``settings.environ``, files it names), never ``os.environ``, and
returns ``(value, source)``: ``value`` is the opaque text its adapter turns into a token or a signature (a
service-account JSON document, a JSON object of AWS keys …), held in a ``Credential`` whose ``repr`` hides it;
``source`` names where it came from (``env:GOOGLE_APPLICATION_CREDENTIALS`` …) and is safe to log and record. A
provider with ``credential = "key"`` (the default) uses the API-key lookup of ``sidecar.credentials``.
"""

from __future__ import annotations

from collections.abc import Callable

from sidecar.config import Settings
from sidecar.models import ProviderSpec

Resolver = Callable[[Settings, ProviderSpec], "tuple[str, str] | None"]

RESOLVERS: dict[str, Resolver] = {}
SECRETS: dict[str, Callable[[str], list[str]]] = {}
"""Per kind: the secrets inside a credential value (keys in a JSON document), which the log redaction must know one
by one; a kind without an entry has only the value as a whole."""
MISSING_HINTS: dict[str, str] = {}
"""Per kind: how to provide the credential, for the "no credential" error."""


def secret_values(kind: str, value: str) -> list[str]:
    extract = SECRETS.get(kind)
    return extract(value) if extract is not None else [value]


# Each cloud's module is imported here, after RESOLVERS exists; none of them imports this package back.
from sidecar.cloud import google  # noqa: E402

RESOLVERS["google"] = google.resolve
SECRETS["google"] = google.secret_values
MISSING_HINTS["google"] = (
    "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run `gcloud auth application-default login`, "
    "or run on Google Cloud with a service account attached"
)

from sidecar.cloud import aws  # noqa: E402

RESOLVERS["aws"] = aws.resolve
SECRETS["aws"] = aws.secret_values
MISSING_HINTS["aws"] = aws.MISSING_HINT
