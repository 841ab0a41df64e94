"""The task package shipped to every host. `celery -A app worker` finds `app.celery.app`."""
from .celery import app

__all__ = ["app"]
