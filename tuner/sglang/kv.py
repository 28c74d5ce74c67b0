"""KV capacity: the token pool and request slots SGLang sizes at startup, and whether they fit the workload.

A server squeezed onto a busy GPU, or given a low --mem-fraction-static or --max-total-tokens, still starts and
serves, but with a pool too small to hold the workload's concurrent requests it queues or retracts them: its
numbers then describe a different server than the one the flags promise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# managers/scheduler.py's startup line (0.5.5 to 0.5.17): "max_total_num_tokens=851140, chunked_prefill_size=4096,
# max_prefill_tokens=16384, max_running_requests=4096, context_len=40960, available_gpu_mem=5.06 GB"
_LOG_LINE = re.compile(r"max_total_num_tokens=(\d+),.*?max_running_requests=(\d+)")


@dataclass(frozen=True)
class KvCapacity:
    max_total_num_tokens: int | None = None
    max_running_requests: int | None = None

    @classmethod
    def of(cls, server_info: dict, log: str) -> KvCapacity:
        """From the server log's startup line, else /get_server_info (top level, then internal_states)."""
        found = _LOG_LINE.findall(log)
        if found:
            tokens, running = found[-1]
            return cls(int(tokens), int(running))
        states = server_info.get("internal_states") or [{}]
        first = states[0] if isinstance(states, list) and states and isinstance(states[0], dict) else {}

        def pick(key: str) -> int | None:
            for where in (server_info, first):
                value = where.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
            return None

        return cls(pick("max_total_num_tokens"), pick("max_running_requests"))

    def record(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def shortfall(self, needed_tokens: int) -> str | None:
        """Why this pool cannot hold the workload's concurrent requests, or None when it can (or is unknown)."""
        if self.max_total_num_tokens is None or needed_tokens <= 0 or self.max_total_num_tokens >= needed_tokens:
            return None
        return (
            f"max_total_num_tokens={self.max_total_num_tokens} < {needed_tokens} tokens the workload keeps in "
            f"flight (concurrency x (input + output))"
        )
