"""Ray's token authentication on a cluster sn40l connects to: detect it, present the token,
or say in one line what to set.

A Ray head started with ``RAY_AUTH_MODE=token`` refuses every RPC without the cluster's token.
Connecting without it, ``ray.init`` retries for ~20 s and prints dozens of ``InvalidAuthToken``
lines. Instead, before ``ray.init``, one GCS client is made without a token (Ray answers an
unauthenticated one in milliseconds with ``AuthenticationError``); if the head wants a token
and one is available here (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ~/.ray/auth_token,
Ray's own sources), token mode is turned on; otherwise a :class:`ClusterError` names what to
set. An unreachable address is left to ``ray.init`` (and its own timeout) after
:data:`PROBE_S`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading

from ray._private.services import canonicalize_bootstrap_address
from ray._raylet import AuthenticationTokenLoader, Config, GcsClient
from ray.exceptions import AuthenticationError

from sn40l.errors import ClusterError

PROBE_S = 8.0


def _probe(address: str) -> str:
    """'token' when the GCS at ``address`` refused us for want of a token, 'open' when it
    answered, 'unknown' when it did not answer within PROBE_S (or could not be asked)."""
    result = ["unknown"]

    def ask() -> None:
        try:
            GcsClient(address=address, cluster_id=None)
            result[0] = "open"
        except AuthenticationError:
            result[0] = "token"
        except Exception:  # noqa: BLE001 - unreachable or odd: ray.init reports it
            pass

    # Ray's C++ client logs the refusal on fd 2; the user gets one line from us instead
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            worker = threading.Thread(target=ask, name="ray-auth-probe", daemon=True)
            worker.start()
            worker.join(PROBE_S)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return result[0]


def _canonical(address: str) -> str | None:
    try:
        return canonicalize_bootstrap_address(address)
    except Exception:  # noqa: BLE001 - a bad address is ray.init's to report
        return None


def _set_mode(mode: str | None) -> None:
    """Set (or unset) RAY_AUTH_MODE for this process and make Ray re-read it."""
    if mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")  # Ray's own way to re-read RAY_* variables


_REFUSED = ("the Ray cluster at {target} refused the token set here; set RAY_AUTH_TOKEN (or "
            "RAY_AUTH_TOKEN_PATH) to that cluster's token (`ray get-auth-token` on its head "
            "prints it)")
_MISSING = ("the Ray cluster at {target} uses token authentication and no token is set here; "
            "set RAY_AUTH_TOKEN to its token (or RAY_AUTH_TOKEN_PATH to a file holding it, or "
            "put it in ~/.ray/auth_token; `ray get-auth-token` on its head prints it)")


def prepare_auth(address: str) -> str:
    """Make this process present a token iff the Ray cluster at ``address`` wants one;
    returns the mode used ('token' or what RAY_AUTH_MODE was). Raises ClusterError in one
    line when the cluster wants a token and none is set here, or refuses the one set here."""
    target = _canonical(address)
    before = os.environ.get("RAY_AUTH_MODE")
    if target is None:
        return before or "disabled"
    if (before or "").lower() == "token":
        if _probe(target) == "token":
            raise ClusterError(_REFUSED.format(target=target))
        return "token"
    _set_mode("disabled")  # ask without a token
    state = _probe(target)
    _set_mode(before)
    if state != "token":
        return before or "disabled"
    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        raise ClusterError(_MISSING.format(target=target))
    _set_mode("token")
    if _probe(target) == "token":
        _set_mode(before)
        raise ClusterError(_REFUSED.format(target=target))
    return "token"
