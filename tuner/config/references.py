"""Reference trials: hand-tuned configs run right after SGLang's defaults, so every study compares tuned vs
defaults vs hand-tuned.

A reference's flags go over the space's fixed flags (what the machine needs to run at all: attention backend,
``--load-format dummy``, ...); they are validated against the installed SGLang's ``--help`` like the space.
docs/references.md says how the built-ins were translated.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, model_validator

from tuner.config.schema import Scalar, Strict
from tuner.sglang.flags import TUNER_FLAGS, ServerFlags


class ReferenceConfig(Strict):
    """A hand-tuned config run beside SGLang's defaults: flags over the space's fixed ones, or a built-in name."""

    name: str = ""
    flags: dict[str, Scalar] = Field(default_factory=dict)  # SGLang flag names without dashes; empty: a built-in

    @model_validator(mode="after")
    def _flag_names(self) -> ReferenceConfig:
        if self.flags and self.name in BUILTIN:  # else these flags would run under the built-in's name
            raise ValueError(
                f"name: {self.name!r} is a built-in reference with flags of its own: give yours another name, "
                f"or drop flags to run the built-in"
            )
        for name in self.flags:
            if name.startswith("-"):
                raise ValueError(f"flags.{name}: a flag name without dashes, e.g. {name.lstrip('-')}")
            if name in TUNER_FLAGS:
                raise ValueError(
                    f"flags.{name}: --{name} is set by the tuner itself for every trial "
                    f"(model.path, launcher.host, launcher.port): remove it from the reference"
                )
        return self


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
