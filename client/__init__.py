"""Python client for the pi-sidecar auth gateway (the pi-native protocol, ``POST /v1/pi/stream``).

Depends on httpx, orjson and the shared event schema only (``client.types``); never on the server.

    import client

    async for event in (s := client.stream("anthropic/claude-sonnet-4-5", context, {"maxTokens": 1024})):
        if event["type"] == "text_delta":
            print(event["delta"], end="")
    message = await s.result()          # always resolves once the request went out (see client.errors)

    message = await client.complete(model, context)     # just the final AssistantMessage
    message = client.complete_sync(model, context)      # for agents without an event loop

The gateway URL and token come from the arguments, else ``SIDECAR_URL`` / ``SIDECAR_TOKEN``.
"""

from ._api import complete, complete_sync, stream, stream_sync
from ._stream import AsyncEventStream, EventStream
from .errors import (
    ClientError,
    ConfigurationError,
    GatewayConnectionError,
    GatewayError,
    IncompleteStreamError,
    StreamAbortedError,
    StreamError,
    StreamTimeoutError,
)
from .types import (
    AssistantContent,
    AssistantMessage,
    AssistantMessageEvent,
    Context,
    Cost,
    DeveloperMessage,
    DoneEvent,
    ErrorEvent,
    ImageContent,
    ImageEndEvent,
    Message,
    StartEvent,
    StopReason,
    TerminalEvent,
    TextContent,
    TextDeltaEvent,
    TextEndEvent,
    TextStartEvent,
    ThinkingContent,
    ThinkingDeltaEvent,
    ThinkingEndEvent,
    ThinkingStartEvent,
    Tool,
    ToolCall,
    ToolCallDeltaEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
    ToolResultMessage,
    Usage,
    UserContent,
    UserMessage,
)

__all__ = [
    "AssistantContent",
    "AssistantMessage",
    "AssistantMessageEvent",
    "AsyncEventStream",
    "ClientError",
    "ConfigurationError",
    "Context",
    "Cost",
    "DeveloperMessage",
    "DoneEvent",
    "ErrorEvent",
    "EventStream",
    "GatewayConnectionError",
    "GatewayError",
    "ImageContent",
    "ImageEndEvent",
    "IncompleteStreamError",
    "Message",
    "StartEvent",
    "StopReason",
    "StreamAbortedError",
    "StreamError",
    "StreamTimeoutError",
    "TerminalEvent",
    "TextContent",
    "TextDeltaEvent",
    "TextEndEvent",
    "TextStartEvent",
    "ThinkingContent",
    "ThinkingDeltaEvent",
    "ThinkingEndEvent",
    "ThinkingStartEvent",
    "Tool",
    "ToolCall",
    "ToolCallDeltaEvent",
    "ToolCallEndEvent",
    "ToolCallStartEvent",
    "ToolResultMessage",
    "Usage",
    "UserContent",
    "UserMessage",
    "complete",
    "complete_sync",
    "stream",
    "stream_sync",
]
