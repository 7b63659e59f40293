"""haeedge trust show|approve"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.ui import messages


@click.group("trust")
def command() -> None:
    """The repository's trust root: who the owner is and which writer hosts it approved.

    \b
    A repository made with 'init --recipient-file' on a backup host is
    unapproved until the owner signs it: the host made the keys, and anyone can
    encrypt a key slot to a public certificate. Until then the owner's
    commands refuse it; writers still back up.

    \b
    Examples:
      haeedge trust show
      haeedge --identity-file owner-secret.asc trust approve
    """


@command.command("show")
@json_option
@pass_app
def show(app: AppContext) -> None:
    """Print the trust root, the manifest sequence and the approved writer keys.

    \b
    Example:
      haeedge -r /srv/backup trust show --json
    """
    with app.open_repo(lock=None, load_index=False) as repo:
        doc = messages.trust_show(repo.config.repository_id, repo.trust)
        m = repo.trust.manifest
    if app.json:
        app.emit(doc)
        return
    app.out(f"repository {doc['repository_id'][:8]}: {doc['mode']}")
    if m is not None:
        app.out(f"trust root ({doc['root_kind']}): {doc['root_fingerprint']}")
        app.out(f"manifest sequence {doc['sequence']}")
        for f in doc["owner_keys"]:
            app.out(f"owner signing key  {f}")
        for f, h in doc["writers"].items():
            app.out(f"writer {h:<16}  {f}")
        for f, h in doc["removed"].items():
            app.out(f"removed {h:<15}  {f}")


@command.command("approve")
@click.option("--host", "hosts", multiple=True, help="Approve only this host's write-only keys (repeatable; "
                                                     "default: every registered writer).")
@json_option
@pass_app
def approve(app: AppContext, hosts: tuple[str, ...]) -> None:
    """Sign the repository's trust root with the owner's key.

    \b
    Run it with the owner's secret key (--identity-file OWNER-SECRET.asc).
    Replaces the owner signing key the creating host made (it may have kept
    it) and approves each writer host. Check the hosts it prints.

    \b
    Example:
      haeedge --identity-file owner-secret.asc -r /srv/backup trust approve
    """
    from haeedge.operations.keys import approve_repository

    with app.open_repo(lock="exclusive", command="trust approve", load_index=False, allow_unapproved=True) as repo:
        result = approve_repository(repo, hosts)
    if app.json:
        app.emit(messages.trust_approve(result))
        return
    app.out(f"approved with owner key {result.root_fingerprint} (manifest sequence {result.sequence})")
    for fpr, host in sorted(result.writers.items(), key=lambda kv: kv[1]):
        app.out(f"  writer for host {host}: {fpr}")
    app.out(f"new owner signing key {result.owner_signing_fingerprint}; "
            f"{len(result.replaced_slots)} certificate key slots replaced")
