"""SGLang's own default for a launch flag: what a server started without the flag runs with.

``--help`` prints no defaults, so the values of the flags our spaces tune are written here from SGLang 0.5.17's
ServerArgs. A flag SGLang sizes at startup from the GPU and model (the memory fraction, the chunk size, the
running-request and CUDA-graph caps, the attention backend) has no fixed default and is absent: ``default_of``
says None for it, as for a flag not listed.
"""

from __future__ import annotations

from tuner.sglang.flags import FlagValue

DEFAULTS: dict[str, FlagValue] = {
    "schedule-policy": "fcfs",
    "num-continuous-decode-steps": 1,
    "torch-compile-max-bs": 32,
    "triton-attention-num-kv-splits": 8,
    "schedule-conservativeness": 1.0,
}


def default_of(name: str, choices: tuple[FlagValue, ...] = ()) -> FlagValue | None:
    """The flag's default; a switch (choices false and true) is off unless given."""
    if name in DEFAULTS:
        return DEFAULTS[name]
    if set(choices) == {False, True} and all(isinstance(c, bool) for c in choices):
        return False
    return None
