"""`fab rotate-secrets`: new passwords rolled out without stopping the cluster.

A rotation is a deploy with new values. Each named secret gets a new value in the secrets
file and keeps its old one as "previous"; the deploy then changes the logins on the hosts and
restarts, one host at a time, the services that use them (workers and beat with their ping
check, Flower), and `fab client-env` is written again for producers. Redis's ACL users accept
the old and the new password until `fab rotate-secrets --finish`, so a producer that still
holds the old one keeps reading results until it restarts with the new settings. RabbitMQ
keeps one password per user: established connections stay open, only NEW connections need
the new password. The Erlang cookie is not rotated here (every node must restart at once,
see README "Security model").
"""
from __future__ import annotations

from . import operate, runner
from .errors import DeployFailed
from .progress import Progress
from .secrets import PREVIOUS, SecretStore

NOT_ROTATED = {"erlang_cookie": "the Erlang cookie: every RabbitMQ node must restart at once with the "
                                "new one (a full cluster stop); see README \"Security model\"",
               "flower_htpasswd_salt_key": "not a password (the salt key of the htpasswd hashes)"}


def rotatable(store: SecretStore) -> list[str]:
    return [n for n in store.names() if n not in NOT_ROTATED]


def rotate(inv, names: list[str], opts: runner.Options = runner.Options()):
    store = SecretStore(inv.state_dir / "secrets.yaml")
    progress = Progress()
    chosen = names or rotatable(store)
    unknown = [n for n in chosen if n not in store.names()]
    if unknown:
        raise DeployFailed(f"no secret named {', '.join(unknown)}; rotatable: {', '.join(rotatable(store))}")
    refused = [f"{n}: {NOT_ROTATED[n]}" for n in chosen if n in NOT_ROTATED]
    if refused:
        raise DeployFailed("not rotated here:\n  " + "\n  ".join(refused))
    if opts.dry_run:
        progress.say("would rotate: " + ", ".join(chosen))
        return operate.deploy(inv, opts)
    for name in chosen:
        store.rotate(name)
    progress.say(f"new values for: {', '.join(chosen)} (old ones kept as *{PREVIOUS} until --finish)")
    engine = operate.deploy(inv, opts)
    if not engine.failed:
        path = operate.client_env(inv, opts=opts)
        progress.say(f"producers: new settings in {path}; restart them with it, then "
                     "`fab rotate-secrets --finish` (old Redis passwords stop working then)")
    return engine


def finish(inv, opts: runner.Options = runner.Options()):
    store = SecretStore(inv.state_dir / "secrets.yaml")
    done = store.finish_rotation()
    progress = Progress()
    if not done:
        progress.say("no rotation to finish")
        return None
    progress.say(f"retiring the old values of: {', '.join(done)}")
    return operate.deploy(inv, opts)
