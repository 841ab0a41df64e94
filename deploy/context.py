"""What every stage gets: the validated inventory, the secrets, the flags."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .secrets import Secret, SecretStore


@dataclass
class Ctx:
    inv: object                      # inventory.Inventory
    dry_run: bool = False
    release: dict = field(default_factory=dict)    # host -> release id it should run
    switched: dict = field(default_factory=dict)   # host -> `current` moved this deploy

    @cached_property
    def secrets(self) -> SecretStore:
        return SecretStore(self.inv.state_dir / "secrets.yaml")

    def secret(self, name: str, length: int = 40) -> Secret:
        return self.secrets.get(name, length)
