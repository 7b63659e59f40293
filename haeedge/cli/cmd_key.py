"""haeedge key list|add|remove|passwd|signers"""

from __future__ import annotations

import os
import sys

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.errors import UsageError
from haeedge.ui import messages
from haeedge.ui.format import table, warn


def read_new_password(app: AppContext, new_password_file: str | None, purpose: str) -> bytes:
    """The new password: first line of --new-password-file, or asked twice on the terminal."""
    if new_password_file:
        try:
            with open(os.path.expanduser(new_password_file), "rb") as f:
                pw = f.read().split(b"\n", 1)[0].rstrip(b"\r")
        except OSError as e:
            raise UsageError(f"cannot read --new-password-file {new_password_file}: {e.strerror}") from None
        if not pw:
            raise UsageError(f"--new-password-file {new_password_file} is empty")
        return pw
    if not sys.stdin.isatty():
        raise UsageError("no new password given and no terminal to ask on", hint="use --new-password-file FILE")
    import getpass

    pw = getpass.getpass(f"enter {purpose}: ").encode()
    if getpass.getpass(f"enter {purpose} again: ").encode() != pw:
        raise UsageError("passwords do not match")
    if not pw:
        raise UsageError("empty passwords are not allowed")
    return pw


@click.group("key")
def command() -> None:
    """Manage the keys that open the repository.

    \b
    Kinds of keys:
      passphrase   an owner password: reads and writes everything
      certificate  an owner OpenPGP key (open with --identity-file SECRET.asc)
      writer       a write-only backup host: can back up, cannot restore

    \b
    Examples:
      haeedge key list
      haeedge key add --new-password-file ~/.pw2 --label laptop
      haeedge key add --recipient-file owner.asc
      haeedge key add --writer --host web1 --new-password-file web1.pw
      haeedge key remove 1a2b3c4d
    """


@command.command("list")
@json_option
@pass_app
def list_(app: AppContext) -> None:
    """List key slots: id, kind, role, host, label, creation time, and the one in use.

    \b
    Example:
      haeedge key list --json
    """
    from haeedge.operations.keys import list_keys

    with app.open_repo(lock=None, load_index=False) as repo:
        infos, problems = list_keys(repo)
    for oid, why in problems:
        warn(f"keys/{oid[:12]}: {why}")
    if app.json:
        app.emit(messages.key_list(infos, problems))
        return
    rows = [["*" if i.in_use else "", i.id[:12], i.kind, i.role, i.host or "-", i.label or "-",
             (i.created or "?").replace("T", " ").rstrip("Z"), (i.signing_fingerprint or "-")[-16:]]
            for i in infos]
    app.out(table(["", "ID", "Kind", "Role", "Host", "Label", "Created (UTC)", "Signing key"], rows))
    app.out(f"{len(infos)} keys (* = the key in use)")


@command.command("add")
@click.option("--new-password-file", metavar="FILE", help="Read the new key's password from FILE (else prompt).")
@click.option("--recipient-file", metavar="CERT",
              help="Add an owner key that opens with the secret key of this OpenPGP certificate "
                   "(gpg --export --armor KEYID) instead of a password.")
@click.option("--writer", is_flag=True,
              help="Add a write-only key for a backup host: it backs up, it cannot restore or read other hosts.")
@click.option("--host", help="With --writer: the one host name this key may sign snapshots for (required).")
@click.option("--label", default="", help="A note shown by 'key list'.")
@json_option
@pass_app
def add(app: AppContext, new_password_file, recipient_file, writer, host, label) -> None:
    """Add a key: another password, an OpenPGP certificate, or a write-only host key.

    \b
    Examples:
      haeedge key add --new-password-file ~/.pw2 --label laptop
      haeedge key add --recipient-file owner.asc
      haeedge key add --writer --host web1 --new-password-file web1.pw
    """
    from haeedge.operations import keys as keymgmt

    if writer and recipient_file:
        raise UsageError("--writer keys open with a password; --recipient-file adds an owner key",
                         hint="add the owner certificate first, then the writer: writers encrypt to it")
    if writer and not host:
        raise UsageError("--writer needs --host NAME: the host whose snapshots the key may sign")
    if host and not writer:
        raise UsageError("--host goes with --writer")
    cert = keymgmt.read_certificate(recipient_file) if recipient_file else None
    with app.open_repo(lock=None, load_index=False) as repo:
        keymgmt.require_owner(repo)
        if cert is not None:
            slot_id = keymgmt.add_certificate(repo, cert, label=label)
            kind = "certificate"
        else:
            pw = read_new_password(app, new_password_file, "password of the new key")
            if writer:
                slot_id = keymgmt.add_writer(repo, pw, host, label=label)
                kind = "writer"
            else:
                slot_id = keymgmt.add_passphrase(repo, pw, label=label)
                kind = "passphrase"
    app.out(f"added {kind} key {slot_id[:12]}"
            + (f" (write-only, for host {host})" if writer else "")
            + (f" for certificate {cert.fingerprint_hex}" if cert is not None else ""))
    app.emit(messages.key_add(slot_id, kind, host, label, cert.fingerprint_hex if cert is not None else None))


@command.command("remove")
@click.argument("key_id")
@json_option
@pass_app
def remove(app: AppContext, key_id: str) -> None:
    """Remove a key slot (never the last one able to read, nor the one in use).

    \b
    Example:
      haeedge key remove 1a2b3c4d
    """
    from haeedge.operations.keys import remove_key

    with app.open_repo(lock=None, load_index=False) as repo:
        info = remove_key(repo, key_id)
    app.out(f"removed {info.kind} key {info.id[:12]}")
    app.emit(messages.key_remove(info))


@command.command("passwd")
@click.option("--new-password-file", metavar="FILE", help="Read the new password from FILE (else prompt).")
@json_option
@pass_app
def passwd(app: AppContext, new_password_file) -> None:
    """Change the password of the key in use (a new slot is added, then the old one removed).

    \b
    Example:
      haeedge key passwd --new-password-file ~/.new-pw
    """
    from haeedge.operations.keys import change_passphrase

    with app.open_repo(lock=None, load_index=False) as repo:
        pw = read_new_password(app, new_password_file, "new password")
        old, new = change_passphrase(repo, pw)
    app.out(f"password changed: key {old[:12]} replaced by {new[:12]}")
    app.emit(messages.key_passwd(old, new))


@command.command("signers")
@click.option("--export", "export_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the trusted signing certificates, armored, to FILE (for gpg --import / gpg --verify).")
@json_option
@pass_app
def signers(app: AppContext, export_file) -> None:
    """List the signing keys the owner trusts, and for which host.

    \b
    Example:
      haeedge key signers --export signers.asc && gpg --import signers.asc
    """
    from haeedge.crypto.openpgp import armor

    with app.open_repo(lock=None, load_index=False) as repo:
        registry = repo.registry()
    rows, out, certs = [], [], []
    for fpr, t in sorted(registry.signers.items(), key=lambda kv: (kv[1].role != "owner", kv[1].host, kv[0])):
        state = "removed" if t.removed is not None else "active"
        rows.append([fpr, t.role, t.host or "(any)", state])
        out.append(messages.key_signer(fpr, t.role, t.host or None, state, armor(t.cert.raw, "PUBLIC KEY BLOCK")))
        certs.append(armor(t.cert.raw, "PUBLIC KEY BLOCK"))
    for oid, why in registry.problems:
        warn(f"keys/{oid[:12]}: {why}")
    if export_file:
        with open(export_file, "w", encoding="ascii") as f:
            f.write("".join(certs))
    if app.json:
        app.emit(messages.key_signers(out, registry.problems))
        return
    app.out(table(["Fingerprint", "Role", "Host", "State"], rows))
    if export_file:
        app.out(f"wrote {len(certs)} certificates to {export_file}")
