"""backend_options values are checked when the config file is read (issue 12, defect 8).

``timeout: thirty`` was "internal error: ValueError", ``timeout: -5`` was
accepted (every call then timed out), and an empty ``key_file`` failed without
saying where. Every value now fails, through the real CLI, with exit 2 and one
line ``FILE:LINE:COLUMN: key: problem``.
"""

from __future__ import annotations

import re

import pytest

from haeedge.backends.options import FSSPEC_OPTIONS, S3_OPTIONS, SFTP_OPTIONS
from haeedge.errors import UsageError
from tests.support.ops import write_config

SFTP = "sftp://backup@fog1.example.net/srv/haeedge"
S3 = "s3://bucket/haeedge"

BAD = [
    # (location, the option's YAML, words in the problem)
    (SFTP, "timeout: thirty", "expected a number"),
    (SFTP, "timeout: -5", "above 0"),
    (SFTP, "timeout: 0", "above 0"),
    (SFTP, "timeout: .nan", "above 0"),
    (SFTP, "key_file:", "expected a string"),
    (SFTP, "key_file: ''", "must not be empty"),
    (SFTP, "keyfile: /etc/haeedge/id", "unknown option for an sftp:// location"),
    (SFTP, "port: 70000", "at most 65535"),
    (SFTP, "port: ssh", "expected an integer"),
    (SFTP, "max_channels: 0", "at least 1"),
    (SFTP, "use_agent: perhaps", "expected true or false"),
    (SFTP, "known_hosts: [a, b]", "expected a string"),
    (S3, "retries: -1", "at least 0"),
    (S3, "verify_etag: 1", "expected true or false"),
    (S3, "storage_options: key", "expected a mapping"),
    (S3, "timeout: 30", "unknown option for an s3:// location"),
    ("/srv/backup", "timeout: 30", "unknown option for a local directory (it takes none)"),
]


@pytest.mark.parametrize("location,option,words", BAD, ids=[f"{b[0][:4]}-{b[1]}" for b in BAD])
def test_bad_backend_option_is_one_line_with_its_location(cli, tmp_path, location, option, words):
    cfg = write_config(tmp_path / "cfg.yaml", f"""profiles:
  p:
    repository: "{location}"
    backend_options:
      "{location}":
        {option}
""")
    r = cli("-c", cfg, "snapshots")
    assert r.code == 2, r.describe()
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "internal error" not in r.stderr, r.describe()
    key = option.split(":")[0]
    assert re.match(rf"^haeedge: error: {re.escape(str(cfg))}:6:\d+: "
                    rf"profiles\.p\.backend_options\.{re.escape(location)}\.{key}: ", lines[0]), lines[0]
    assert words in lines[0], lines[0]


def test_good_options_are_read_with_their_types(cli, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", f"""profiles:
  p:
    repository: ["{SFTP}", "{S3}"]
    backend_options:
      "{SFTP}": {{timeout: 7.5, port: 2222, key_file: /k, use_agent: false, max_channels: 2}}
      "{S3}": {{retries: 0, storage_options: {{anon: true, client_kwargs: {{region_name: x}}}}}}
""")
    from haeedge.cli.app import cli as root
    from haeedge.cli.profiles import command_specs
    from haeedge.config_file import load_config

    opts = load_config(str(cfg), command_specs(root)).select("p").backend_options
    assert opts[SFTP] == {"timeout": 7.5, "port": 2222, "key_file": "/k", "use_agent": False, "max_channels": 2}
    assert opts[S3] == {"retries": 0, "storage_options": {"anon": True, "client_kwargs": {"region_name": "x"}}}


SAMPLE = {"text": "x", "file": "/nonexistent/key", "bool": True, "port": 22, "seconds": 5.0, "count": 2,
          "retries": 1, "mapping": {}}


def test_the_table_names_exactly_what_the_backends_read():
    """Every documented option is accepted by its backend; a name the table lacks is refused by it."""
    from haeedge.backends.fsspec_backend import FsspecBackend
    from haeedge.backends.s3 import S3Backend
    from haeedge.backends.sftp import SFTPBackend

    for name, kind in SFTP_OPTIONS.items():
        SFTPBackend.from_url(SFTP, {name: SAMPLE[kind]})
    valid = {"storage_class_data": "DEEP_ARCHIVE", "restore_tier": "Bulk"}  # text values from a fixed set
    for name, kind in S3_OPTIONS.items():
        S3Backend.from_url(S3, {name: valid.get(name, SAMPLE[kind])})
    for name, kind in FSSPEC_OPTIONS.items():
        FsspecBackend.from_url("memory://haeedge-options", {name: SAMPLE[kind]})
    for name in set(S3_OPTIONS) - set(FSSPEC_OPTIONS):  # S3's own options: refused elsewhere
        with pytest.raises(UsageError, match="s3:// locations only"):
            FsspecBackend.from_url("memory://haeedge-options", {name: valid.get(name, SAMPLE[S3_OPTIONS[name]])})
    with pytest.raises(UsageError, match="unknown"):
        SFTPBackend.from_url(SFTP, {"not_in_the_table": 1})
    with pytest.raises(UsageError, match="unknown"):
        S3Backend.from_url(S3, {"not_in_the_table": 1})
    with pytest.raises(UsageError, match="unknown"):
        FsspecBackend.from_url("memory://haeedge-options", {"not_in_the_table": 1})
