"""Schemathesis hooks for test_api_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

`POST /import` takes NDJSON, which schemathesis has no serializer for; its
schema is a string, sent as is (so the fuzzer sends arbitrary text as an
export stream).
"""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
