"""haeedge verify"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, fail_with, json_option, one_setting, pass_app
from haeedge.errors import ExitCode
from haeedge.operations.check import Checker
from haeedge.repo.cache import object_cache_of
from haeedge.ui import messages
from haeedge.ui.format import human_size


@one_setting("read_data", "read_data_subset")  # how much data to read: all, or a part
@click.command("verify")
@click.option("--read-data", is_flag=True, help="Also read, decrypt and re-hash every blob.")
@click.option("--read-data-subset", metavar="N/M|P%",
              help="Read only part of the data: the N-th of M parts, or P% (--read-data reads all).")
@json_option
@pass_app
def command(app: AppContext, read_data, read_data_subset) -> None:
    """Check the repository's structure and, with --read-data, all of its data.

    Exits 4 when any problem is found; every problem names the object and the
    snapshots and files it affects.

    \b
    Examples:
      haeedge verify
      haeedge verify --read-data-subset 3/10
    """
    progress = app.progress()
    # The checker loads the index itself, so that a damaged index object is reported, not fatal.
    backend = app.backend()
    cache = object_cache_of(backend)
    if cache is not None:
        # Verify checks what storage holds: key slots, index and snapshot objects are read from it, not
        # from the local cache (what it reads is still kept there). File lists may come from the cache
        # when every pack is read whole anyway (--read-data): a damaged stored copy is found then.
        cache.reads = False
        cache.tree_reads = bool(read_data) and not read_data_subset
    with app.open_repo(lock="shared", command="verify", load_index=False, backend=backend) as repo:
        report = Checker(repo, progress).run(read_data=read_data, subset=read_data_subset)
    if app.json:
        app.emit(messages.verify(report))
    else:
        for f in report.findings:
            if f.severity == "warning" and not app.verbose:
                continue
            line = f"{f.severity}: {f.object}: {f.message}"
            if f.snapshots:
                line += f" (snapshots: {', '.join(s[:8] for s in f.snapshots)})"
            click.echo(line, err=f.severity == "error")
            for p in f.files[:20]:
                click.echo(f"    affects {p}", err=True)
        warnings = sum(1 for f in report.findings if f.severity == "warning")
        hidden = f" (and {report.hidden} forgotten ones kept hidden as chain support)" if report.hidden else ""
        app.out(f"checked {report.snapshots} snapshots{hidden}, {report.packs} packs"
                + (f", read {report.packs_read} packs ({human_size(report.bytes_read)}, "
                   f"{report.blobs_checked} blobs)" if report.packs_read else ""))
        for r in report.replicas:
            problems = [f"{len(r[k])} {label}" for k, label in (("missing", "missing"), ("size_mismatch", "wrong size"),
                                                                 ("damaged", "damaged")) if r[k]]
            if r["error"]:
                problems.append(f"could not be checked: {r['error']}")
            app.out(f"replica {r['location']}: {r['objects']} objects, " + (", ".join(problems) or "ok"))
        if report.ok:
            app.out("no errors found" + (f" ({warnings} warnings; 'haeedge -v verify' shows them)" if warnings else ""))
        else:
            click.echo(f"haeedge: {len(report.errors)} errors found", err=True)
    if not report.ok:
        fail_with(ExitCode.INTEGRITY)
