"""The Celery application. Tasks are included through the app's config (`include`), and
every setting comes from the environment the kit renders on the hosts (see config.py)."""
from celery import Celery

from . import config

app = Celery("app", include=["app.tasks"])
app.config_from_object(config.from_env())
