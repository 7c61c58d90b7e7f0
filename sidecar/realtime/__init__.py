"""Realtime (WebSocket) support: the normalized realtime protocol of the AI Gateway and its OpenAI translation."""
