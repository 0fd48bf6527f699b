"""Examples shown at the end of every command's ``--help``.

Kept in one table rather than in each docstring so that every command has one (a test walks the
whole command tree) and resource commands, generated per kind, get examples naming their kind.
"""

from __future__ import annotations

import click

EXAMPLES: dict[str, list[str]] = {
    "cluster up": ["gwadm cluster up                      # 3 nodes, 1 proxy, demo upstream in .gwadm/ (TLS)",
                   "gwadm cluster up --nodes 5 --proxies 2 --dir /tmp/gw --mtls",
                   "gwadm cluster up --insecure          # plain HTTP (tests)"],
    "cluster down": ["gwadm cluster down --dir /tmp/gw"],
    "cluster stop": ["gwadm cluster stop n2                 # SIGTERM one member", "gwadm cluster stop"],
    "cluster kill": ["gwadm cluster kill n1                 # SIGKILL, as in a crash"],
    "cluster start": ["gwadm cluster start n1", "gwadm cluster start          # every stopped member"],
    # one command object registered twice (`gwadm status` and `gwadm cluster status`)
    "cluster status": ["gwadm status", "gwadm status --watch", "gwadm cluster status --json"],
    "status": ["gwadm status", "gwadm status --watch", "gwadm status -e http://cp1:8000 --token-file admin.token --json"],
    "top": ["gwadm top", "gwadm top --interval 2"],
    "node run": ["gwadm node run --config /etc/gwadm/node.toml",
                 "gwadm node run --id n1 --raft-addr 10.0.0.1:7000 --admin-addr 10.0.0.1:8000 \\",
                 "    --data-dir /var/lib/gwadm --secret-file /etc/gwadm/secret \\",
                 "    --tls-cert /etc/gwadm/n1.pem --tls-key /etc/gwadm/n1.key --ca /etc/gwadm/ca.pem \\",
                 "    --peer n2,10.0.0.2:7000,https://10.0.0.2:8000 --peer n3,10.0.0.3:7000,https://10.0.0.3:8000"],
    "node add": ["gwadm node add n4                     # local cluster: picks ports, starts it",
                 "gwadm node add n4 --raft-addr 10.0.0.4:7000 --admin-addr 10.0.0.4:8000 -e http://cp1:8000"],
    "node remove": ["gwadm node remove n4"],
    "proxy run": ["gwadm proxy run --cp https://cp1:8000,https://cp2:8000,https://cp3:8000 \\",
                  "    --listen 0.0.0.0:8080 --status-listen 127.0.0.1:8081 --ca /etc/gwadm/ca.pem \\",
                  "    --state-dir /var/lib/gwadm-proxy --token-file /etc/gwadm/proxy.token",
                  "gwadm proxy run ... --workers auto      # one worker process per core, one CP stream",
                  "gwadm proxy run ... --sync pull --poll-interval 10   # HTTP-only egress: long-polls"],
    "relay run": ["gwadm relay run --cp http://cp1:8000,http://cp2:8000,http://cp3:8000 \\",
                  "    --listen 0.0.0.0:8101 --state-dir /var/lib/gwadm-relay --token-file /etc/gwadm/proxy.token",
                  "gwadm proxy run --cp http://relay.eu:8101 ...   # the region's proxies list the relay"],
    "token create": ["gwadm token create --role viewer --ttl 30d --subject ci",
                     "gwadm token create --role proxy --offline --secret-file /etc/gwadm/secret"],
    "token revoke": ["gwadm token revoke 3f2a9c...-1767225600   # a jti (its expiry is in it)",
                     "gwadm token revoke \"$(cat leaked.token)\""],
    "token rotate": ["gwadm token rotate                    # every older token stops working"],
    "token status": ["gwadm token status --json"],
    "cert init": ["gwadm cert init --dir /etc/gwadm        # the CA, once"],
    "cert issue": ["gwadm cert issue n1 --san 10.0.0.1 --san cp1.example.org",
                   "gwadm cert issue p1 --san 10.0.1.1 --client   # a proxy (mutual TLS)"],
    "cert renew": ["gwadm cert renew                      # those expiring within 30 days", "gwadm cert renew --all"],
    "cert list": ["gwadm cert list --json"],
    "cert bootstrap": ["gwadm cert bootstrap --ca-dir /gwadm/ca --cp-dir /gwadm/cp --dp-dir /gwadm/dp \\",
                       "    --node n1 --node n2 --node n3 --proxy-san proxy1 --proxy-san proxy2"],
    "register": ["gwadm register --upstream u1 --target 10.0.0.7:9001 --ttl 10 \\",
                 "    --health-url http://10.0.0.7:9001/health --token-file registrar.token",
                 "gwadm token create --role registrar --subject svc-a   # a token that may only register"],
    "upstream targets": ["gwadm upstream targets u1            # static and registered, with age, expiry, health",
                         "gwadm upstream targets u1 --json"],
    "demo-upstream": ["gwadm demo-upstream --listen 127.0.0.1:9001 --name a"],
}

_RESOURCE_EXAMPLES = {
    "list": ["gwadm {g} list", "gwadm {g} list --json"],
    "get": ["gwadm {g} get {id}"],
    "put": ["gwadm {g} put {id} -d '{body}'", "gwadm {g} put {id} -f {g}.json --if-match 12"],
    "patch": ["gwadm {g} patch {id} -d '{patch}'"],
    "delete": ["gwadm {g} delete {id}", "gwadm {g} delete {id} --if-match 12"],
}
_RESOURCE_BODIES = {
    "route": ("r1", '{"paths": ["/api"], "upstream": "u1"}', '{"strip_prefix": true}'),
    "upstream": ("u1", '{"targets": [{"host": "10.0.0.7", "port": 9001}]}', '{"retries": 2}'),
    "consumer": ("alice", '{"credentials": {"key-auth": [{"key": "alice-key-123"}]}}', '{"username": "alice"}'),
    "plugin": ("cors", '{"name": "cors", "config": {"origins": ["https://app.example"]}}', '{"enabled": false}'),
}


def examples_for(path: str) -> list[str]:
    if path in EXAMPLES:
        return EXAMPLES[path]
    group, _, verb = path.partition(" ")
    if group in _RESOURCE_BODIES and verb in _RESOURCE_EXAMPLES:
        rid, body, patch = _RESOURCE_BODIES[group]
        return [line.format(g=group, id=rid, body=body, patch=patch) for line in _RESOURCE_EXAMPLES[verb]]
    return []


def attach_examples(command: click.Command, path: str = "") -> None:
    """Give every leaf command without an example in its docstring an ``Examples:`` epilog."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            attach_examples(sub, f"{path} {name}".strip())
        return
    if "example" in (command.help or "").lower() or command.epilog:
        return
    lines = examples_for(path)
    if lines:
        command.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
