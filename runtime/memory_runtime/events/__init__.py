"""Events: the outbox relay to Kafka and the event envelope + JSON Schema."""

from memory_runtime.events.envelope import EventError, build_event, event_schema

__all__ = ["EventError", "build_event", "event_schema"]
