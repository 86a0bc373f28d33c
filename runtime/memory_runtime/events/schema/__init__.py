"""The event JSON Schema (memory-event.json), shipped as package data."""
