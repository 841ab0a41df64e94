"""What every stage gets: the validated inventory and the secrets. Nothing here changes while
a run goes on; what stages hand to later stages travels as their outputs (engine.py)."""
from __future__ import annotations

from .secrets import Secret, SecretStore


class Ctx:
    def __init__(self, inv):
        self.inv = inv
        # Built here, not lazily: stages ask for secrets from parallel threads, and two
        # stores generating the same secret at once would give hosts different values.
        self.secrets = SecretStore(inv.state_dir / "secrets.yaml")

    def secret(self, name: str, length: int = 40) -> Secret:
        return self.secrets.get(name, length)

    def previous(self, name: str) -> str | None:
        """A rotated secret's old value while its rotation is not finished (secrets.py)."""
        return self.secrets.previous(name)
