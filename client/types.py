"""The pi-native wire schema: context, messages, content blocks, usage and the event union.

This is the single schema shared by the client and the sidecar. Types are ``TypedDict``s so that an event
parsed from the wire is just the ``dict`` that ``orjson.loads`` returned: typed for mypy, free at run time
(streaming is the hot path, so events are never validated one by one). The sidecar validates *requests*
against these same types with pydantic, once per request.

Field names follow the protocol exactly (camelCase), see ``pi-native-protocol.md`` §3–§5.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

# ----- content blocks -------------------------------------------------------------------------------------------


class TextContent(TypedDict):
    type: Literal["text"]
    text: str
    textSignature: NotRequired[str]


class ThinkingContent(TypedDict):
    type: Literal["thinking"]
    thinking: str
    thinkingSignature: NotRequired[str]
    itemId: NotRequired[str]


class RedactedThinkingContent(TypedDict):
    type: Literal["redactedThinking"]
    data: str


class ImageContent(TypedDict):
    type: Literal["image"]
    data: str
    """Base64 bytes of the image, without a ``data:`` prefix."""
    mimeType: str
    detail: NotRequired[Literal["auto", "low", "high", "original"]]
    url: NotRequired[str]
    providerFile: NotRequired[dict[str, Any]]


class ToolCall(TypedDict):
    type: Literal["toolCall"]
    id: str
    name: str
    arguments: dict[str, Any]
    thoughtSignature: NotRequired[str]
    intent: NotRequired[str]
    rawBlock: NotRequired[str]
    customWireName: NotRequired[str]
    providerMetadata: NotRequired[dict[str, Any]]


class FallbackContent(TypedDict):
    """Anthropic server-side model fallback marker; kept in history, never sent upstream."""

    type: Literal["fallback"]
    # "from" is a Python keyword, so the functional form would be needed to declare it; it stays untyped here.


class AnthropicServerToolContent(TypedDict):
    type: Literal["anthropicServerTool"]
    block: dict[str, Any]


UserContent: TypeAlias = TextContent | ImageContent
AssistantContent: TypeAlias = (
    TextContent
    | ThinkingContent
    | RedactedThinkingContent
    | ToolCall
    | ImageContent
    | FallbackContent
    | AnthropicServerToolContent
)

# ----- usage ----------------------------------------------------------------------------------------------------


class Cost(TypedDict):
    """USD for each part of the usage; ``total`` is their sum."""

    input: float
    output: float
    cacheRead: float
    cacheWrite: float
    total: float


class Usage(TypedDict):
    input: int
    """Non-cached input tokens."""
    output: int
    cacheRead: int
    cacheWrite: int
    totalTokens: int
    """``input + output + cacheRead + cacheWrite``."""
    cost: Cost
    reasoningTokens: NotRequired[int]
    """Reasoning tokens; a subset of ``output``."""


StopReason: TypeAlias = Literal["stop", "length", "toolUse", "error", "aborted"]

# ----- messages -------------------------------------------------------------------------------------------------


class UserMessage(TypedDict):
    role: Literal["user"]
    content: str | list[UserContent]
    timestamp: int
    synthetic: NotRequired[bool]
    steering: NotRequired[bool]
    attribution: NotRequired[Literal["user", "agent"]]
    providerPayload: NotRequired[dict[str, Any]]


class DeveloperMessage(TypedDict):
    role: Literal["developer"]
    content: str | list[UserContent]
    timestamp: int
    attribution: NotRequired[Literal["user", "agent"]]
    providerPayload: NotRequired[dict[str, Any]]


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: list[AssistantContent]
    api: str
    provider: str
    model: str
    usage: Usage
    stopReason: StopReason
    timestamp: int
    responseId: NotRequired[str]
    errorMessage: NotRequired[str]
    errorStatus: NotRequired[int]
    duration: NotRequired[float]
    """Milliseconds from request to the terminal event."""
    ttft: NotRequired[float]
    """Milliseconds from request to the first content delta."""
    providerPayload: NotRequired[dict[str, Any]]


class ToolResultMessage(TypedDict):
    role: Literal["toolResult"]
    toolCallId: str
    toolName: str
    content: list[UserContent]
    isError: bool
    timestamp: int
    details: NotRequired[Any]


Message: TypeAlias = UserMessage | DeveloperMessage | AssistantMessage | ToolResultMessage


class Tool(TypedDict):
    name: str
    description: str
    parameters: dict[str, Any]
    """Plain JSON Schema, as pi-agent-core puts it on the wire."""
    strict: NotRequired[bool]


class Context(TypedDict):
    messages: list[Message]
    systemPrompt: NotRequired[list[str]]
    tools: NotRequired[list[Tool]]


# ----- events ---------------------------------------------------------------------------------------------------


class StartEvent(TypedDict):
    type: Literal["start"]
    partial: AssistantMessage


class TextStartEvent(TypedDict):
    type: Literal["text_start"]
    contentIndex: int
    partial: AssistantMessage


class TextDeltaEvent(TypedDict):
    type: Literal["text_delta"]
    contentIndex: int
    delta: str
    partial: AssistantMessage


class TextEndEvent(TypedDict):
    type: Literal["text_end"]
    contentIndex: int
    content: str
    partial: AssistantMessage


class ThinkingStartEvent(TypedDict):
    type: Literal["thinking_start"]
    contentIndex: int
    partial: AssistantMessage


class ThinkingDeltaEvent(TypedDict):
    type: Literal["thinking_delta"]
    contentIndex: int
    delta: str
    partial: AssistantMessage


class ThinkingEndEvent(TypedDict):
    type: Literal["thinking_end"]
    contentIndex: int
    content: str
    partial: AssistantMessage


class ImageEndEvent(TypedDict):
    type: Literal["image_end"]
    contentIndex: int
    content: ImageContent
    partial: AssistantMessage


class ToolCallStartEvent(TypedDict):
    type: Literal["toolcall_start"]
    contentIndex: int
    partial: AssistantMessage


class ToolCallDeltaEvent(TypedDict):
    type: Literal["toolcall_delta"]
    contentIndex: int
    delta: str
    """A raw fragment of the arguments' JSON text."""
    partial: AssistantMessage


class ToolCallEndEvent(TypedDict):
    type: Literal["toolcall_end"]
    contentIndex: int
    toolCall: ToolCall
    partial: AssistantMessage


class DoneEvent(TypedDict):
    type: Literal["done"]
    reason: Literal["stop", "length", "toolUse"]
    message: AssistantMessage


class ErrorEvent(TypedDict):
    type: Literal["error"]
    reason: Literal["aborted", "error"]
    error: AssistantMessage


AssistantMessageEvent: TypeAlias = (
    StartEvent
    | TextStartEvent
    | TextDeltaEvent
    | TextEndEvent
    | ThinkingStartEvent
    | ThinkingDeltaEvent
    | ThinkingEndEvent
    | ImageEndEvent
    | ToolCallStartEvent
    | ToolCallDeltaEvent
    | ToolCallEndEvent
    | DoneEvent
    | ErrorEvent
)

TerminalEvent: TypeAlias = DoneEvent | ErrorEvent

TERMINAL_EVENT_TYPES: frozenset[str] = frozenset({"done", "error"})


def zero_usage() -> Usage:
    """A fresh all-zero usage block."""
    return {
        "input": 0,
        "output": 0,
        "cacheRead": 0,
        "cacheWrite": 0,
        "totalTokens": 0,
        "cost": {"input": 0.0, "output": 0.0, "cacheRead": 0.0, "cacheWrite": 0.0, "total": 0.0},
    }
