"""The Celery application. Its settings are the kit's (celery_kit_config, installed into
every release venv and written by `fab client-env` for producers), read from the
environment the kit renders; an app of your own starts from them the same way."""
from celery import Celery

app = Celery("app", include=["app.tasks"])
app.config_from_object("celery_kit_config")
