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
