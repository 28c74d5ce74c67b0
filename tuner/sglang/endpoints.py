"""SGLang's HTTP endpoints the tuner calls, by the paths SGLang serves them at: the one place they are spelled."""

from __future__ import annotations

HEALTH = "/health"  # 200 once the server has passed its warm-up request (503 before)
SERVER_INFO = "/get_server_info"  # its ServerArgs and what it settled at startup
SERVER_INFO_OLD = "/server_info"  # the same, in SGLang builds before /get_server_info
FLUSH_CACHE = "/flush_cache"  # empties the radix (prefix) cache between benchmark levels
COMPLETIONS = "/v1/completions"  # OpenAI-compatible text completions
CHAT_COMPLETIONS = "/v1/chat/completions"  # OpenAI-compatible chat completions
GENERATE = "/generate"  # SGLang's native generation endpoint (takes input_ids)

# The benchmark client's endpoint setting (workload ``endpoint``) to the path it posts to.
BY_NAME = {"completions": COMPLETIONS, "chat": CHAT_COMPLETIONS, "generate": GENERATE}
