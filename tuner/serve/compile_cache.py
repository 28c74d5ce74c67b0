"""One folder of compiled kernels per machine, shared by every trial's server.

SGLang builds kernels on first use: triton's (TRITON_CACHE_DIR), flashinfer's JIT (FLASHINFER_WORKSPACE_BASE),
torch inductor's under --enable-torch-compile (TORCHINDUCTOR_CACHE_DIR) and its own tvm-ffi JIT kernels (rope,
rmsnorm, KV store; TVM_FFI_CACHE_DIR), the names /work/shared/gpu/env.sh sets on the H200. Left to their defaults
they land under a per-user folder, or under /tmp, or inside a container that is removed with the trial, and a fresh
machine or container pays ~80 s of builds (215 s for a first flashinfer launch on the H200, docs/h200-chat.md)
again and again. Pointing all four at one folder makes only the first trial on a machine pay for them; each
trial records how many files its server added to them (``kernel_files``), so a cold build shows where it happened.

A variable the user's launcher.env (or the tuner's own environment) already sets is left as it is. deploy-best.sh
never names this folder: a deployment starts cold, as it would on another machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# variable -> its subfolder under the shared folder
CACHE_VARS = {
    "TRITON_CACHE_DIR": "triton",
    "FLASHINFER_WORKSPACE_BASE": "flashinfer",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TVM_FFI_CACHE_DIR": "tvm-ffi",
}


@dataclass(frozen=True)
class CompileCache:
    root: Path

    @classmethod
    def at(cls, folder: str | Path) -> CompileCache:
        return cls(Path(folder).expanduser().resolve())

    def env(
        self, user_env: Mapping[str, str] | None = None, *, inherited: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The cache variables to add to a server's environment: those neither ``user_env`` (launcher.env) nor
        ``inherited`` (the tuner's own environment, for a process) sets already."""
        inherited = os.environ if inherited is None else inherited
        return {
            var: str(self.root / sub)
            for var, sub in CACHE_VARS.items()
            if var not in (user_env or {}) and var not in inherited
        }

    def prepare(self, env: Mapping[str, str]) -> None:
        """Makes the folders ``env`` (from env()) names; one that cannot be made is left to the server."""
        for path in env.values():
            try:
                Path(path).mkdir(parents=True, exist_ok=True)
            except OSError:
                pass

    def folders(
        self, user_env: Mapping[str, str] | None = None, *, inherited: Mapping[str, str] | None = None
    ) -> list[Path]:
        """Every cache folder a server started with ``env()``'s variables uses: the one ``user_env`` or
        ``inherited`` names for a variable, else ours."""
        named = {**(os.environ if inherited is None else inherited), **(user_env or {})}
        return [Path(named.get(var) or self.root / sub) for var, sub in CACHE_VARS.items()]


def kernel_files(folders: list[Path]) -> frozenset[str]:
    """The files in ``folders`` now. What a trial's server adds between its launch and its stop is what it built:
    a folder's holding files at launch says nothing of whether they are the kernels this config needs (a GPU kit's
    own builds, another model's, another attention backend's). os.walk, whose directory entries say which are files,
    not Path.rglob with a stat of each: a long study's caches hold tens of thousands, walked twice a trial."""
    # A folder missing, or removed or unreadable while we look, gives what could be read (os.walk's default).
    return frozenset(
        os.path.join(root, name) for folder in folders for root, _, names in os.walk(folder) for name in names
    )
