"""`serve --threads`: how many requests of one worker run their blocking work at once.

auto is 2 for the embedded default (SQLite store, local CA: every redemption is CPU work in the worker, and
more threads only hand the GIL around; docs/performance.md) and anyio's 40 as soon as OpenBao or step-ca is
involved (a thread then mostly waits for an answer). The limit is anyio's default thread limiter, which
Starlette's sync routes take their thread from; checked here inside the app's own event loop.
"""

from __future__ import annotations

import anyio.from_thread
import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from frontdoor_gateway.app import CPU_BOUND_THREADS, NETWORK_THREADS, create_app, threads_for
from frontdoor_gateway.auth import Authenticator
from frontdoor_pki.config import ConfigError, build_service, load_config

VAULT = {"url": "http://127.0.0.1:1", "token": "x"}


def _config(tmp_path, data=None):
    path = None
    if data is not None:
        import yaml

        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(str(path) if path else None, state_dir=str(tmp_path), env={})


def test_auto_is_two_for_the_embedded_default(tmp_path):
    assert CPU_BOUND_THREADS == 2
    assert threads_for(_config(tmp_path), None) == CPU_BOUND_THREADS
    assert threads_for(_config(tmp_path), "auto") == CPU_BOUND_THREADS
    assert threads_for(_config(tmp_path), " AUTO ") == CPU_BOUND_THREADS


def test_auto_is_anyios_default_when_a_store_or_signer_is_remote(tmp_path):
    vault_store = _config(tmp_path, {"backend": "vault", "vault": VAULT})
    assert threads_for(vault_store, "auto") == NETWORK_THREADS == 40
    one_remote_signer = _config(tmp_path, {
        "vault": VAULT,
        "frontdoors": [{"id": "default"}, {"id": "ops", "signer": "vault"}],
    })
    assert threads_for(one_remote_signer, "auto") == NETWORK_THREADS


def test_a_number_is_taken_as_given(tmp_path):
    assert threads_for(_config(tmp_path), "7") == 7
    assert threads_for(_config(tmp_path, {"backend": "vault", "vault": VAULT}), "1") == 1


@pytest.mark.parametrize("value", ["0", "-1", "1001", "two", "2.5", "9" * 40])
def test_anything_else_is_a_config_error(tmp_path, value):
    with pytest.raises(ConfigError, match="--threads"):
        threads_for(_config(tmp_path), value)


@pytest.mark.parametrize("threads", [1, 3])
def test_the_app_sets_anyios_default_limiter_in_its_own_loop(tmp_path, threads):
    service = build_service(_config(tmp_path))
    app = create_app(service, Authenticator.from_config("fdk_x" * 8, []), metrics=False, threads=threads)

    @app.get("/limiter")
    def limiter():  # a sync route: runs in a thread the limiter handed out
        return {"total": anyio.from_thread.run_sync(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)}

    with TestClient(app) as client:
        assert client.get("/limiter").json() == {"total": threads}
