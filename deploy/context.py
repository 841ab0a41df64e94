"""What every stage gets: the validated inventory, the secrets, the flags."""
from __future__ import annotations

from dataclasses import dataclass, field

from .secrets import Secret, SecretStore


@dataclass
class Ctx:
    inv: object                      # inventory.Inventory
    dry_run: bool = False
    release: dict = field(default_factory=dict)    # host -> release id it should run

    def __post_init__(self) -> None:
        # Built here, not lazily: stages ask for secrets from parallel threads, and two
        # stores generating the same secret at once would give hosts different values.
        self.secrets = SecretStore(self.inv.state_dir / "secrets.yaml")

    def secret(self, name: str, length: int = 40) -> Secret:
        return self.secrets.get(name, length)
