"""The private MariaDB server of the tests (tools/metadata_server.py): one per session, a database per use.

`python -m tests.support.mariadb serve` is `python -m tools.metadata_server serve` (`make metadata-server`).
"""
import itertools
import sys

import pytest

from tools.metadata_server import MetadataServer, ServerError, available, serve

_names = itertools.count(1)


def start_server() -> MetadataServer:
    """A started server, or the test fails saying what to install (.ci/run installs it; a test that would pass
    without the server it is about proves nothing, so it is not skipped)."""
    if not available():
        pytest.fail("MariaDB is not installed here: apt-get install mariadb-server (.ci/run does it before make "
                    "test)", pytrace=False)
    try:
        return MetadataServer().start()
    except ServerError as e:
        pytest.fail(f"The test MariaDB server did not start: {e}", pytrace=False)


def new_database(server: MetadataServer, prefix: str = "mlmd") -> str:
    """A fresh empty database on `server`; returns its metadata_url (password in it)."""
    return server.create_database(f"{prefix}_{next(_names)}")


if __name__ == "__main__":
    sys.exit(serve())
