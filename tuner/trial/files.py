"""Files the tuner writes for people (surfaces, reports, exports): whole or absent, never a 0-byte or half file."""

from __future__ import annotations

import os
from pathlib import Path


def write_whole(path: Path, data: str | bytes) -> Path:
    """``data`` written to a temporary name in ``path``'s folder, then renamed onto ``path`` (atomic); on any
    failure (a full disk) the temporary file is removed and ``path`` is left as it was. Raises ``OSError``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
