"""Entry points of the kit. Thin on purpose: build the inventory, call deploy.*."""
from invoke import Collection

from deploy.lab.tasks import lab

ns = Collection(lab)
