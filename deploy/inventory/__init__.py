"""The inventory: which hosts play which roles, and how RabbitMQ, Redis, Celery and Flower are
set up on them. load_inventory() reads and checks the YAML file once and returns immutable
values; everything else in the kit works from those, never from the raw YAML."""
from .model import (ROLES, SSH, Apt, Celery, Firewall, Flower, Host, Inventory, InventoryError,
                    Project, RabbitMQ, Redis, Releases, TopSSH, WorkerScale)
from .validate import load_inventory

__all__ = ["load_inventory", "Inventory", "Host", "SSH", "TopSSH", "WorkerScale", "RabbitMQ",
           "Redis", "Celery", "Flower", "Releases", "Apt", "Firewall", "Project",
           "InventoryError", "ROLES"]
