"""Raft settings of one node (``[raft]`` in node.toml, cluster/node.py) and their validation."""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.membership_records import Member


class RaftConfigError(ValueError):
    """A Raft setting is invalid; the message says which and what to do."""


class RaftBindError(RuntimeError):
    """The Raft port could not be bound (busy or not local)."""


@dataclass
class RaftSettings:
    self_addr: str
    partners: list[str]
    password: str
    data_dir: str
    fsync: bool = True
    min_timeout: float = 0.15
    max_timeout: float = 0.3
    append_entries_period: float = 0.04
    leader_fallback_timeout: float = 1.0
    connection_retry_time: float = 0.5
    max_bind_retries: int = 5
    compaction_min_entries: int = 5000
    compaction_min_time: float = 300.0
    # Bound on the wall-clock difference between any two members (cluster/raft_deadline.py): a
    # command's deadline is set this much before its handler's, so the leader never appends it
    # after the handler answered.
    max_clock_skew: float = 0.5
    # Peer links (cluster/raft_transport.py): a connect attempt is abandoned and retried after
    # connect_timeout; a link that heard nothing (not even a ping) for link_timeout is closed.
    connect_timeout: float = 0.5
    link_timeout: float = 1.5
    link_ping_interval: float = 0.25
    # Leader leases (cluster/raft_read.py), off by default. Clock assumption: over one lease, the
    # clocks of two members advance at rates that differ by at most lease_clock_drift seconds, so a
    # follower that heard from the leader does not vote (or pre-vote) for anyone else for min_timeout
    # of its own clock, which is still at least lease_duration of the leader's. Must be set on every
    # member: a follower's vote refusal is what makes the leader's lease safe.
    lease_reads: bool = False
    lease_duration: float | None = None  # seconds; None: (min_timeout - lease_clock_drift) * 0.75
    lease_clock_drift: float = 0.02
    group_commit: bool = True  # concurrent writes share one journal flush (cluster/raft_journal.py)
    pre_vote: bool = True  # ask for pre-votes before starting an election (cluster/raft_prevote.py)
    source_address: str | None = None  # bind outgoing peer connections to it (cluster/raft_transport.py)
    # Listen on this host (e.g. 0.0.0.0 in a container) with self_addr's port; self_addr stays the
    # address peers know this node by. None = listen on self_addr itself.
    bind_host: str | None = None
    # Membership metadata: this node's gwadm id and admin URL, and the peers' (matched to
    # ``partners`` by raft address); a bare address stands in for an unknown id.
    node_id: str = ""
    admin_url: str = ""
    peer_members: list[Member] = field(default_factory=list)

    def validate(self) -> None:
        """Turn pysyncobj's bare asserts into errors a user can act on."""
        if not self.password:
            raise RaftConfigError("a cluster secret is required: Raft traffic is encrypted with it")
        if self.append_entries_period <= 0:
            raise RaftConfigError("append_entries_period must be > 0")
        if self.min_timeout <= 3 * self.append_entries_period:
            raise RaftConfigError(
                f"raft min_timeout ({self.min_timeout}s) must be more than 3 x append_entries_period "
                f"({self.append_entries_period}s): followers would start elections between heartbeats"
            )
        if self.max_timeout <= self.min_timeout:
            raise RaftConfigError(
                f"raft max_timeout ({self.max_timeout}s) must be greater than min_timeout ({self.min_timeout}s)"
            )
        if self.connect_timeout <= 0:
            raise RaftConfigError("connect_timeout must be > 0 seconds")
        if self.link_timeout < 2 * self.link_ping_interval or self.link_ping_interval <= 0:
            raise RaftConfigError(
                f"link_timeout ({self.link_timeout}s) must be at least twice link_ping_interval "
                f"({self.link_ping_interval}s): a healthy idle link would be closed between two pings"
            )
        if self.max_clock_skew < 0:
            raise RaftConfigError("max_clock_skew must be >= 0 seconds")
        if self.lease_reads:
            bound = self.min_timeout - self.lease_clock_drift
            if self.lease_clock_drift < 0 or bound <= 0:
                raise RaftConfigError(
                    f"lease_clock_drift ({self.lease_clock_drift}s) must be >= 0 and below min_timeout "
                    f"({self.min_timeout}s)"
                )
            if not 0 < self.effective_lease_duration < bound:
                raise RaftConfigError(
                    f"lease_duration ({self.lease_duration}s) must be > 0 and less than min_timeout minus "
                    f"lease_clock_drift ({bound:.3f}s): a lease must end before any member may vote for "
                    "another leader"
                )
        if self.leader_fallback_timeout <= self.append_entries_period:
            raise RaftConfigError("leader_fallback_timeout must be greater than append_entries_period")
        for addr in [self.self_addr, *self.partners]:
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise RaftConfigError(f"raft address {addr!r} must look like host:port")
        if self.self_addr in self.partners:
            raise RaftConfigError(f"raft address {self.self_addr} is listed as its own peer")

    @property
    def effective_lease_duration(self) -> float:
        """The lease in seconds (meaningful with ``lease_reads``)."""
        if self.lease_duration is not None:
            return self.lease_duration
        return (self.min_timeout - self.lease_clock_drift) * 0.75
