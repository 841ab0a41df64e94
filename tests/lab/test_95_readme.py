"""Every shell and Python snippet in the README runs, verbatim, against the deployed lab.

Fences: ```sh runs in bash from the project directory, the venv first on PATH (as after
`. .venv/bin/activate`), each block in its own shell with `set -e`; ```sh host runs on a
worker host over SSH (what the README says to do on a host); ```python runs with the
producer settings `fab client-env` writes (.state/client/celery.env) loaded. ```text and
others are output, not commands.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import PROJECT, client_env

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)


def snippets() -> list[tuple[str, str, str]]:
    text = (PROJECT / "README.md").read_text()
    return [(lang, extra.strip(), body) for lang, extra, body in FENCE.findall(text)
            if lang in ("sh", "python")]


def ids():
    return [f"{i}-{lang}{'-' + extra if extra else ''}-{body.strip().splitlines()[0][:40]}"
            for i, (lang, extra, body) in enumerate(snippets())]


def test_the_readme_has_snippets_to_run():
    kinds = {(lang, extra) for lang, extra, _ in snippets()}
    assert ("sh", "") in kinds and ("python", "") in kinds and ("sh", "host") in kinds


@pytest.mark.parametrize("lang,extra,body", snippets(), ids=ids())
def test_snippet(lang, extra, body, first_deploy, lab):
    env = {**os.environ, "PATH": f"{PROJECT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    if lang == "sh" and extra == "host":
        from conftest import lab_host
        host = lab_host(lab, lab.host(2).address)
        res = host.run("set -e\n" + body)
        out, rc = res.stdout + res.stderr, res.rc
    elif lang == "sh":
        proc = subprocess.run(["bash", "-c", "set -e\n" + body], cwd=PROJECT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        out, rc = proc.stdout, proc.returncode
    else:
        env.update(client_env())
        proc = subprocess.run([sys.executable, "-c", body], cwd=PROJECT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        out, rc = proc.stdout, proc.returncode
    sys.stdout.write(out)
    assert rc == 0, out[-3000:]
