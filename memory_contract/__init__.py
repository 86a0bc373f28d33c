"""The contract between the operator and the runtime, shipped in both images.

What one side writes and the other reads lives here once: the tenant name rule
and the names derived from it (`naming`), the runtime's environment variable
prefix (`env`), and the defaults and bounds of what a tenant may configure,
per vector backend (`limits`), and the Redis function library the operator
loads and the runtime calls (`redis_functions`). Pure and standard library only: the operator's
image has neither pydantic-settings nor qdrant-client, the runtime's no Kopf
(tests/unit/test_contract.py keeps both true).
"""
