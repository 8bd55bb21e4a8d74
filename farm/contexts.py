"""Client contexts: where the CLI finds a farm, and the token it talks to it with.

One file, kept 0600 like the admin token: `$FARM_CONFIG_DIR/contexts.json` (default
`$XDG_CONFIG_HOME/farm`, or `~/.config/farm`):

    {"current": "local",
     "contexts": {"local": {"url": "http://127.0.0.1:8080", "token_file": "/home/me/.farm/admin-token"},
                  "ci":    {"url": "https://farm.example.com", "token": "..."}}}

`farm up` writes a `local` context that names its URL and its admin token's file (a
reference: the token stays where farm keeps it), whatever `--port`/`--data-dir` were, and
makes it current; `farm login URL` keeps a remote farm's token; `farm context use` switches.

What a command uses, first found wins:
    URL:   FARM_URL, the current context's, http://127.0.0.1:8080
    token: FARM_TOKEN, the current context's (its token, or its token_file), the admin token
           `farm up` left in FARM_DATA_DIR (default ~/.farm)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Context:
    name: str
    url: str
    token: str | None = None
    token_file: str | None = None


@dataclass(frozen=True)
class Resolved:
    url: str
    token: str | None
    source: str  # where the token came from, in words (for a 401's hint)
    context: str | None


def config_dir() -> Path:
    if d := os.environ.get("FARM_CONFIG_DIR"):
        return Path(d)
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "farm"


class Contexts:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "contexts.json"

    def _load(self) -> dict:  # type: ignore[type-arg]
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {"current": None, "contexts": {}}
        return {"current": data.get("current"), "contexts": dict(data.get("contexts") or {})}

    def _save(self, data: dict) -> None:  # type: ignore[type-arg]
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)

    def all(self) -> list[Context]:
        return [Context(name, **{k: v for k, v in c.items() if k in ("url", "token", "token_file")})
                for name, c in sorted(self._load()["contexts"].items())]  # fmt: skip

    def current(self) -> Context | None:
        data = self._load()
        c = data["contexts"].get(data["current"] or "")
        return Context(data["current"], **{k: v for k, v in c.items() if k in ("url", "token", "token_file")}) if c else None

    def put(self, context: Context, *, make_current: bool = True) -> None:
        data = self._load()
        data["contexts"][context.name] = {k: v for k, v in asdict(context).items() if k != "name" and v is not None}
        if make_current:
            data["current"] = context.name
        self._save(data)

    def use(self, name: str) -> Context:
        data = self._load()
        if name not in data["contexts"]:
            known = ", ".join(sorted(data["contexts"])) or "none yet (farm up or farm login make them)"
            raise KeyError(f"no context {name!r}; contexts: {known}")
        data["current"] = name
        self._save(data)
        return self.current()  # type: ignore[return-value]


def _read(path: str) -> str | None:
    try:
        return Path(path).expanduser().read_text().strip() or None
    except OSError:
        return None


def resolve(contexts: Contexts | None = None) -> Resolved:
    """The URL and token a command uses (module docstring), and where the token came from."""
    current = (contexts or Contexts()).current()
    url = os.environ.get("FARM_URL") or (current.url if current else DEFAULT_URL)
    name = current.name if current else None
    if token := os.environ.get("FARM_TOKEN"):
        return Resolved(url, token, "FARM_TOKEN", name)
    if current is not None and current.token:
        return Resolved(url, current.token, f"context {current.name!r}", name)
    if current is not None and current.token_file:
        return Resolved(url, _read(current.token_file), f"context {current.name!r} ({current.token_file})", name)
    path = Path(os.environ.get("FARM_DATA_DIR", "~/.farm")).expanduser() / "admin-token"
    token = _read(str(path))
    return Resolved(url, token, str(path) if token else f"nowhere (no FARM_TOKEN, no context, no {path})", name)
