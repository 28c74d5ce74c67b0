"""What SGLang's server command imports only once it runs, beyond its module's own imports.

A prestarted interpreter (tuner/serve/prestart.py) imports these ahead of its trial too.
"""

from __future__ import annotations

# sglang/launch_server.py (0.5.17) imports server_args at its top; the HTTP server (FastAPI, the engine, the
# tokenizer manager) inside run_server, once the command line is parsed.
RUN_TIME_IMPORTS: dict[str, tuple[str, ...]] = {
    "sglang.launch_server": ("sglang.srt.entrypoints.http_server",),
}
