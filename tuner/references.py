"""Reference trials: hand-tuned configs run right after SGLang's defaults, so every study compares tuned vs
defaults vs hand-tuned.

A reference's flags go over the space's fixed flags (what the machine needs to run at all: attention backend,
``--load-format dummy``, ...); they are validated against the installed SGLang's ``--help`` like the space.
docs/references.md says how the built-ins were translated.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.config import ReferenceConfig
from tuner.flags import ServerFlags


@dataclass(frozen=True)
class Reference:
    name: str
    flags: ServerFlags


# The seed's winning "Balanced-v2" (../shared/seed/README.md, deploy-sglang-balanced-v2.sh) in SGLang 0.5.17's
# flags. Dropped, with the reason in docs/references.md: --disable-flashinfer (gone; triton attention covers it),
# --num-continuous-decode-steps 2 (parsed, never read), --enable-torch-compile --torch-compile-max-bs 6 (0.5.17
# compiles only the batch sizes it captures in CUDA graphs, and this config captures none).
BUILTIN: dict[str, ServerFlags] = {
    "seed-balanced-v2": ServerFlags.of(
        {
            "schedule-policy": "lof",
            "triton-attention-num-kv-splits": 12,
            "mem-fraction-static": 0.87,
            "attention-backend": "triton",
            "cuda-graph-backend-decode": "disabled",  # --disable-cuda-graph, deprecated in 0.5.17
            "cuda-graph-backend-prefill": "disabled",
            "disable-custom-all-reduce": True,
        }
    ),
}


def resolve(configs: list[ReferenceConfig]) -> list[Reference]:
    """Run-file references as flags; a name without flags is a built-in (checked when the run file loads)."""
    return [Reference(c.name, ServerFlags.of(c.flags) if c.flags else BUILTIN[c.name]) for c in configs]
