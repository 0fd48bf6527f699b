"""Router: hosts (exact, wildcard), paths (segment prefix, =exact), methods, headers, priority."""

from __future__ import annotations

import pytest

from proxy.router import Route, Router, _prefixes, normalize_host
from tests.proxy.conftest import route


def make(*routes: tuple[str, dict]) -> Router:
    return Router(Route.from_spec(rid, spec) for rid, spec in routes)


def rid(router: Router, path: str, host: str | None = None, method: str = "GET", headers: dict | None = None) -> str | None:
    m = router.match(method, host, path, headers or {})
    return m.route.id if m else None


def test_prefix_matches_on_segment_boundary() -> None:
    r = make(("api", route(paths=["/api"])))
    assert rid(r, "/api") == "api"
    assert rid(r, "/api/") == "api"
    assert rid(r, "/api/x/y") == "api"
    assert rid(r, "/apix") is None
    assert rid(r, "/") is None


def test_trailing_slash_prefix() -> None:
    r = make(("a", route(paths=["/api/"])))
    assert rid(r, "/api/x") == "a"
    assert rid(r, "/api/") == "a"
    assert rid(r, "/api") is None


def test_star_is_literal() -> None:
    r = make(("a", route(paths=["/api*"])))
    assert rid(r, "/api*") == "a"
    assert rid(r, "/api/x") is None
    assert rid(r, "/apix") is None


def test_longest_prefix_wins() -> None:
    r = make(("root", route(paths=["/"])), ("api", route(paths=["/api"])), ("v1", route(paths=["/api/v1"])))
    assert rid(r, "/api/v1/users") == "v1"
    assert rid(r, "/api/v2") == "api"
    assert rid(r, "/other") == "root"
    assert rid(r, "/") == "root"


def test_exact_beats_prefix_and_only_matches_exactly() -> None:
    r = make(("prefix", route(paths=["/login"], priority=100)), ("exact", route(paths=["=/login"])))
    assert rid(r, "/login") == "exact"
    assert rid(r, "/login/x") == "prefix"
    r2 = make(("exact", route(paths=["=/login"])))
    assert rid(r2, "/login/") is None


def test_priority_then_id_among_equal_paths() -> None:
    r = make(("b", route(paths=["/x"])), ("a", route(paths=["/x"])))
    assert rid(r, "/x") == "a"
    r = make(("b", route(paths=["/x"], priority=5)), ("a", route(paths=["/x"])))
    assert rid(r, "/x") == "b"


def test_priority_does_not_beat_a_longer_path() -> None:
    r = make(("short", route(paths=["/a"], priority=100)), ("long", route(paths=["/a/b"])))
    assert rid(r, "/a/b/c") == "long"


def test_methods_filter_and_fall_back_to_shorter_prefix() -> None:
    r = make(("post", route(paths=["/api/items"], methods=["POST"])), ("any", route(paths=["/api"])))
    assert rid(r, "/api/items", method="POST") == "post"
    assert rid(r, "/api/items", method="GET") == "any"


def test_headers_exact_match_case_insensitive_names() -> None:
    r = make(("v2", route(paths=["/"], headers={"x-version": "2"}, priority=1)), ("v1", route(paths=["/"])))
    assert rid(r, "/", headers={"x-version": "2"}) == "v2"
    assert rid(r, "/", headers={"x-version": "3"}) == "v1"
    assert rid(r, "/") == "v1"


def test_hosts_exact_wildcard_and_any() -> None:
    r = make(
        ("exact", route(hosts=["api.example.com"], paths=["/"])),
        ("wild", route(hosts=["*.example.com"], paths=["/"])),
        ("deep", route(hosts=["*.eu.example.com"])),
        ("any", route(paths=["/"])),
    )
    assert rid(r, "/", "api.example.com") == "exact"
    assert rid(r, "/", "API.Example.com:8080") == "exact"
    assert rid(r, "/", "www.example.com") == "wild"
    assert rid(r, "/", "a.b.example.com") == "wild"
    assert rid(r, "/x", "a.eu.example.com") == "deep"
    assert rid(r, "/", "example.com") == "any"
    assert rid(r, "/", "other.org") == "any"
    assert rid(r, "/", None) == "any"


def test_host_bucket_falls_through_when_its_paths_do_not_match() -> None:
    r = make(("h", route(hosts=["a.com"], paths=["/admin"])), ("any", route(paths=["/"])))
    assert rid(r, "/admin/x", "a.com") == "h"
    assert rid(r, "/public", "a.com") == "any"


def test_host_routes_beat_hostless_routes_with_longer_paths() -> None:
    r = make(("h", route(hosts=["a.com"], paths=["/"])), ("any", route(paths=["/admin"])))
    assert rid(r, "/admin", "a.com") == "h"
    assert rid(r, "/admin", "b.com") == "any"


def test_route_without_paths_matches_everything_with_lowest_specificity() -> None:
    r = make(("hostonly", route(hosts=["a.com"])), ("api", route(hosts=["a.com"], paths=["/api"])))
    assert rid(r, "/api/x", "a.com") == "api"
    assert rid(r, "/anything", "a.com") == "hostonly"


def test_matched_path_reported_for_strip_prefix() -> None:
    r = make(("a", route(paths=["/api", "=/exact"])))
    m = r.match("GET", None, "/api/x", {})
    assert m is not None and m.matched_path == "/api" and not m.exact
    m = r.match("GET", None, "/exact", {})
    assert m is not None and m.matched_path == "/exact" and m.exact


def test_prefix_candidates() -> None:
    assert list(_prefixes("/a/b")) == ["/a/b", "/a/", "/a", "/", ""]
    assert list(_prefixes("/a/b/")) == ["/a/b/", "/a/b", "/a/", "/a", "/", ""]
    assert list(_prefixes("/")) == ["/", ""]


def test_normalize_host() -> None:
    assert normalize_host("Example.COM.") == "example.com"
    assert normalize_host("example.com:80") == "example.com"
    assert normalize_host("[::1]:8080") == "[::1]"
    assert normalize_host("") == ""


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"paths": [], "hosts": []}, "at least one path or host"),
        ({"paths": ["api"]}, "must start with /"),
        ({"paths": ["/a"], "upstream": None}, "upstream"),
        ({"paths": ["/a"], "headers": {"x": 1}}, "headers"),
        ({"paths": "/a"}, "list of strings"),
    ],
)
def test_bad_specs_raise_value_error(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Route.from_spec("r1", route(**spec))


def test_ten_thousand_routes() -> None:
    routes = []
    for i in range(10_000):
        kind = i % 4
        if kind == 0:
            spec = route(paths=[f"/svc{i}"])
        elif kind == 1:
            spec = route(paths=[f"=/svc{i}/exact"])
        elif kind == 2:
            spec = route(hosts=[f"h{i}.example.com"], paths=[f"/svc{i}"], methods=["POST"])
        else:
            spec = route(hosts=[f"*.w{i}.example.com"], paths=[f"/svc{i}/deep"], headers={"x-t": str(i)})
        routes.append((f"r{i:05d}", spec))
    routes.append(("fallback", route(paths=["/"], priority=-1)))
    r = make(*routes)
    assert len(r) == 10_001
    for i in range(0, 10_000, 37):
        kind = i % 4
        name = f"r{i:05d}"
        if kind == 0:
            assert rid(r, f"/svc{i}/x/y") == name
            assert rid(r, f"/svc{i}x") == "fallback"
        elif kind == 1:
            assert rid(r, f"/svc{i}/exact") == name
            assert rid(r, f"/svc{i}/exact/more") == "fallback"
        elif kind == 2:
            assert rid(r, f"/svc{i}/a", f"h{i}.example.com", "POST") == name
            assert rid(r, f"/svc{i}/a", f"h{i}.example.com", "GET") == "fallback"
            assert rid(r, f"/svc{i}/a", "nope.example.com", "POST") == "fallback"
        else:
            assert rid(r, f"/svc{i}/deep/1", f"x.w{i}.example.com", headers={"x-t": str(i)}) == name
            assert rid(r, f"/svc{i}/deep/1", f"x.w{i}.example.com", headers={"x-t": "no"}) == "fallback"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("/a/b", "/a/b"),
        ("/public/../admin", "/admin"),
        ("/a/./b", "/a/b"),
        ("/a/b/.", "/a/b/"),
        ("/a/..", "/"),
        ("/../../x", "/x"),
        ("/a/.b/c..", "/a/.b/c.."),
        ("//a/../b", "//b"),
    ],
)
def test_normalize_path(raw: str, expected: str) -> None:
    from proxy.router import normalize_path

    assert normalize_path(raw) == expected
