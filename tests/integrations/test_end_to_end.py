"""Every server with the integration a user adds, measured as a user would: 4 workers (Twisted and
Daphne: one process through the ``sesscache-ssl:`` endpoint string), a client reconnecting and offering
its newest session, TLS 1.2 and 1.3. With sesscache (SQLiteStore in a temp dir) >= 99 % resume;
the out-of-the-box rate is printed beside it (``pytest -s``). The servers really spread the
connections over several workers (each writes its pid)."""
from __future__ import annotations

import pytest

from tests.integrations.harness import SERVERS, assert_resumed, need_package, out_of_the_box_and_cached, report, served_pids


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SERVERS))
def test_resumes_across_workers(tmp_path, certs, name):
    package, _ = SERVERS[name]
    need_package(package)
    plain, cached, log = out_of_the_box_and_cached(name, tmp_path, certs.server_pem)
    report(name, plain, cached)
    assert_resumed(cached, log)
    if SERVERS[name][0] not in ("twisted", "daphne"):  # one process
        assert len(served_pids(tmp_path)) >= 2, "the connections should have reached several workers"
