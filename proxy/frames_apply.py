"""The pure half of applying config frames: preparing the next config and its runtime.

``SyncClient`` (proxy/sync.py) owns the stream and the swap; what is here touches no socket and no
shared state, so the preparation can run on an executor thread while the old config keeps serving.
Frames, chunk reassembly and snapshot decoding are ``gateway.protocol``'s; this module only turns
a verified ``ConfigState`` into a runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.delta import apply_delta
from gateway.errors import GatewayError
from gateway.protocol import DeltaFrame, JoinedSnapshot
from gateway.state import ConfigState

Prepared = tuple[ConfigState, Any, bytes | None]  # state, runtime, cache body (None: encode later)


def build_for(build: Callable[..., Any], state: ConfigState, config_hash: str) -> Any:
    """The one place where the proxy hands a whole config to the runtime builder: the state itself
    (``proxy.runtime.build_runtime`` compiles a ``ConfigState``; no snapshot dict in between)."""
    return build(state, revision=state.revision, hash=config_hash)


def prepare_delta(
    state: ConfigState,
    frame: DeltaFrame,
    current_runtime: Any,
    update: Callable[..., Any] | None,
    build: Callable[..., Any],
) -> Prepared:
    """Apply, verify the hash, build.

    With the runtime of ``state`` at hand (``current_runtime``) only the touched resources are
    recompiled; the cache body is encoded after the swap (``None`` here), off the path to serving
    the new config.
    """
    new = apply_delta(state, frame.delta)
    if new.hash() != frame.hash:
        raise GatewayError(f"config hash mismatch after delta {frame.base}->{frame.revision}")
    if update is not None and current_runtime is not None and current_runtime.revision == state.revision:
        touched = [(op[1], op[2]) for op in frame.ops]
        runtime = update(current_runtime, new, touched, revision=new.revision, hash=frame.hash)
    else:
        runtime = build_for(build, new, frame.hash)
    return new, runtime, None


def prepare_snapshot(joined: JoinedSnapshot, build: Callable[..., Any]) -> Prepared:
    """Decode, check revision and hash against the frames, build; the body is cached as received."""
    state = joined.state()
    return state, build_for(build, state, joined.hash), joined.data
