"""Authorisation policies: the matrix of roles and keys by action and resource kind, the
object- and property-level rules, validation at load, the memo, and agreement with the legacy
permission tables.

The expected answers are written out below, by hand, from docs/security.md; they are not
derived from the policies they check.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import cedarpy
import pytest

from nexus.core.errors import NotFound, PermissionDenied
from nexus.security.policy import (
    OWNER_ROLE_RULE,
    PERMISSIONS,
    SCHEMA_FILE,
    SCOPE_RULE,
    TENANT_ISOLATION,
    Actor,
    PolicyEngine,
    PolicyError,
    Resource,
    default_engine,
)
from nexus.storage.database import Database
from nexus.workspaces import service
from nexus.workspaces.deps import enforce, require_user
from nexus.workspaces.models import (
    PUBLIC_KEY_PERMISSIONS,
    ROLE_PERMISSIONS,
    SECRET_KEY_SCOPES,
    KeyKind,
    KeyScope,
    Permission,
    Principal,
    PrincipalKind,
    Role,
)

HOME = "ws_home"
ELSEWHERE = "ws_elsewhere"
POLICY_DIR = resources.files("nexus.security") / "policies"
SCHEMA = (POLICY_DIR / SCHEMA_FILE).read_text(encoding="utf-8")
POLICY_FILES = ("keys.cedar", "properties.cedar", "roles.cedar", "tenancy.cedar")

RESOURCE_KINDS = (
    "Workspace",
    "Member",
    "Key",
    "Flag",
    "Experiment",
    "Adaptation",
    "Rollout",
    "Funnel",
    "Page",
    "Event",
    "Setting",
    "AuditLog",
    "Webhook",
)
# Function-level actions, the one resource kind each applies to, and neutral properties (no
# owner role involved, no scope granted) so that only the function-level rule is tested here.
FUNCTIONS: dict[str, tuple[Resource, dict[str, str | frozenset[str]]]] = {
    "act_in_person": (Resource("Workspace", HOME), {}),
    "create_workspace": (Resource("Workspace", HOME), {}),
    "read_audit": (Resource("AuditLog", HOME), {}),
    "add_member": (Resource("Member", HOME), {"role": "viewer"}),
    "change_role": (Resource.of("Member", HOME, role="analyst"), {"role": "viewer"}),
    "remove_member": (Resource.of("Member", HOME, role="viewer"), {}),
    "create_key": (Resource("Key", HOME), {"scopes": frozenset(), "held": frozenset()}),
    "revoke_key": (Resource("Key", HOME), {}),
}
ACTIONS = (*PERMISSIONS, *FUNCTIONS)

ALL_SCOPES = frozenset({"read", "write", "admin", "ingest", "decide"})
PRINCIPALS: dict[str, Actor] = {
    "owner": Actor("user", HOME, role="owner"),
    "admin": Actor("user", HOME, role="admin"),
    "analyst": Actor("user", HOME, role="analyst"),
    "viewer": Actor("user", HOME, role="viewer"),
    "public key": Actor("public_key", HOME),
    **{
        f"secret key:{scope}": Actor("secret_key", HOME, scopes=frozenset({scope}))
        for scope in sorted(ALL_SCOPES)
    },
    "secret key:all": Actor("secret_key", HOME, scopes=ALL_SCOPES),
}

# Y: allowed in the principal's own workspace, -: refused. The columns are ACTIONS in order:
# read write admin owner ingest decide | act_in_person create_workspace read_audit add_member
# change_role remove_member create_key revoke_key.
MATRIX = """
principal          read write admin owner ingest decide | pers new_ws audit add chg rm mkkey rmkey
owner               Y    Y     Y     Y     Y      Y     |  Y     Y     Y    Y   Y   Y    Y     Y
admin               Y    Y     Y     -     Y      Y     |  Y     Y     Y    Y   Y   Y    Y     Y
analyst             Y    Y     -     -     Y      Y     |  Y     -     -    -   -   -    -     -
viewer              Y    -     -     -     -      -     |  Y     -     -    -   -   -    -     -
public_key          -    -     -     -     Y      Y     |  -     -     -    -   -   -    -     -
secret_key:read     Y    -     -     -     -      -     |  -     -     -    -   -   -    -     -
secret_key:write    -    Y     -     -     -      -     |  -     -     -    -   -   -    -     -
secret_key:admin    -    -     Y     -     -      -     |  -     -     Y    Y   Y   Y    Y     Y
secret_key:ingest   -    -     -     -     Y      -     |  -     -     -    -   -   -    -     -
secret_key:decide   -    -     -     -     -      Y     |  -     -     -    -   -   -    -     -
secret_key:all      Y    Y     Y     -     Y      Y     |  -     -     Y    Y   Y   Y    Y     Y
"""


def _expected() -> dict[str, dict[str, bool]]:
    header, *rows = (line.replace("|", "").split() for line in MATRIX.strip().splitlines())
    assert len(header) == len(ACTIONS) + 1
    table = {}
    for name, *cells in rows:
        assert set(cells) <= {"Y", "-"}, name
        table[name.replace("_", " ", 1)] = dict(
            zip(ACTIONS, (c == "Y" for c in cells), strict=True)
        )
    return table


EXPECTED = _expected()


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.shipped()


def _cases() -> list[tuple[str, Resource, dict[str, str | frozenset[str]]]]:
    """Every (action, resource, context) of the matrix: coarse actions on every kind."""
    cases: list[tuple[str, Resource, dict[str, str | frozenset[str]]]] = [
        (action, Resource(kind, HOME), {}) for action in PERMISSIONS for kind in RESOURCE_KINDS
    ]
    cases += [(action, resource, context) for action, (resource, context) in FUNCTIONS.items()]
    return cases


def _elsewhere(resource: Resource) -> Resource:
    return Resource(resource.kind, ELSEWHERE, resource.attributes)


# --- the matrix ---------------------------------------------------------------------------


def test_the_matrix_covers_every_principal_action_and_resource_kind(engine: PolicyEngine) -> None:
    assert set(EXPECTED) == set(PRINCIPALS)
    assert engine.actions == set(ACTIONS)
    assert engine.resource_kinds == set(RESOURCE_KINDS)


@pytest.mark.parametrize("name", list(PRINCIPALS))
def test_each_principal_may_do_exactly_what_the_table_says(engine: PolicyEngine, name: str) -> None:
    actor = PRINCIPALS[name]
    wrong = [
        (action, resource.kind)
        for action, resource, context in _cases()
        if engine.evaluate(actor, action, resource, context).allowed != EXPECTED[name][action]
    ]
    assert wrong == []


@pytest.mark.parametrize("name", list(PRINCIPALS))
def test_nothing_is_allowed_on_another_workspaces_objects(engine: PolicyEngine, name: str) -> None:
    actor = PRINCIPALS[name]
    for action, resource, context in _cases():
        decision = engine.evaluate(actor, action, _elsewhere(resource), context)
        assert not decision.allowed, (action, resource.kind)
        assert decision.cross_workspace
        assert TENANT_ISOLATION in decision.reasons


def test_decisions_name_the_policies_that_made_them(engine: PolicyEngine) -> None:
    assert engine.decide(PRINCIPALS["viewer"], "read", Resource("Flag", HOME)).reasons == (
        "role-viewer",
    )
    refused = engine.decide(PRINCIPALS["secret key:all"], "owner", Resource("Workspace", HOME))
    assert refused.reasons == ("people-only",)
    assert engine.decide(PRINCIPALS["viewer"], "write", Resource("Flag", HOME)).reasons == ()


def test_unknown_roles_and_scopes_grant_nothing(engine: PolicyEngine) -> None:
    assert engine.permissions(Actor("user", HOME, role="superuser")) == frozenset()
    assert engine.permissions(Actor("user", HOME)) == frozenset()
    assert engine.permissions(Actor("secret_key", HOME, scopes=frozenset({"owner"}))) == set()


def test_a_request_outside_the_schema_is_an_error_not_a_denial(engine: PolicyEngine) -> None:
    with pytest.raises(PolicyError, match="no action 'frobnicate'"):
        engine.decide(PRINCIPALS["owner"], "frobnicate", Resource("Workspace", HOME))
    with pytest.raises(PolicyError, match="no resource kind 'Spaceship'"):
        engine.decide(PRINCIPALS["owner"], "read", Resource("Spaceship", HOME))
    with pytest.raises(PolicyError, match="principal kind"):
        engine.decide(Actor("robot", HOME), "read", Resource("Workspace", HOME))
    with pytest.raises(PolicyError, match=r"Member\.nickname"):
        engine.decide(PRINCIPALS["owner"], "read", Resource.of("Member", HOME, nickname="x"))
    with pytest.raises(PolicyError, match="create_key"):  # context.scopes is required
        engine.decide(PRINCIPALS["owner"], "create_key", Resource("Key", HOME))


# --- property level -------------------------------------------------------------------------

# (action, current role, new role) → who may: owner, admin user, admin-scoped key.
ROLE_CHANGES = {
    ("add_member", None, "viewer"): (True, True, True),
    ("add_member", None, "admin"): (True, True, True),
    ("add_member", None, "owner"): (True, False, False),
    ("change_role", "analyst", "admin"): (True, True, True),
    ("change_role", "analyst", "owner"): (True, False, False),
    ("change_role", "owner", "admin"): (True, False, False),
    ("change_role", "owner", "owner"): (True, False, False),
    ("remove_member", "admin", None): (True, True, True),
    ("remove_member", "owner", None): (True, False, False),
}


@pytest.mark.parametrize(("change", "expected"), list(ROLE_CHANGES.items()))
def test_only_owners_give_or_take_the_owner_role(
    engine: PolicyEngine,
    change: tuple[str, str | None, str | None],
    expected: tuple[bool, bool, bool],
) -> None:
    action, old, new = change
    member = Resource.of("Member", HOME, role=old)
    answers = tuple(
        engine.decide(PRINCIPALS[name], action, member, {"role": new}).allowed
        for name in ("owner", "admin", "secret key:admin")
    )
    assert answers == expected
    if not expected[1]:
        refused = engine.decide(PRINCIPALS["admin"], action, member, {"role": new})
        assert refused.reasons == (OWNER_ROLE_RULE,)


# (creator, scopes asked for) → allowed?
KEY_GRANTS = {
    ("admin", frozenset({"read", "write", "admin", "ingest", "decide"})): True,
    ("owner", frozenset({"admin"})): True,
    ("analyst", frozenset({"read"})): False,  # may not manage keys at all
    ("secret key:admin", frozenset({"admin"})): True,
    ("secret key:admin", frozenset({"read"})): False,
    ("secret key:admin", frozenset({"ingest", "decide"})): False,  # a public key's scopes
    ("secret key:all", frozenset({"write", "decide"})): True,
}


@pytest.mark.parametrize(("grant", "allowed"), list(KEY_GRANTS.items()))
def test_nobody_grants_a_scope_they_do_not_hold(
    engine: PolicyEngine, grant: tuple[str, frozenset[str]], allowed: bool
) -> None:
    name, scopes = grant
    decision = engine.may_create_key(PRINCIPALS[name], workspace=HOME, scopes=scopes)
    assert decision.allowed is allowed
    if not allowed and name.startswith("secret"):
        assert decision.reasons == (SCOPE_RULE,)


def test_the_scope_rule_holds_through_the_service(database: Database) -> None:
    with database.session() as db:
        workspace = service.create_workspace(db, name="W")
        _, token = service.create_api_key(
            db, workspace_id=workspace.id, name="k", kind=KeyKind.SECRET, scopes=[Permission.ADMIN]
        )
        actor = service.principal_for_key(db, token=token)
        assert actor is not None
        with pytest.raises(PermissionDenied, match="ingest"):
            service.create_api_key(
                db, workspace_id=workspace.id, name="p", kind=KeyKind.PUBLIC, actor=actor
            )
        with pytest.raises(PermissionDenied, match="owner"):
            service.create_api_key(
                db,
                workspace_id=workspace.id,
                name="o",
                kind=KeyKind.SECRET,
                scopes=[Permission.OWNER],
                actor=actor,
            )


# --- wiring ---------------------------------------------------------------------------------


def _principal(
    kind: PrincipalKind, *, role: Role | None = None, scopes: frozenset[str] = frozenset()
) -> Principal:
    return Principal(
        kind=kind,
        workspace_id=HOME,
        permissions=frozenset(),  # deliberately empty: enforce() must not read it
        user_id="usr_1" if kind is PrincipalKind.USER else None,
        key_id=None if kind is PrincipalKind.USER else "key_1",
        role=role,
        scopes=scopes,
    )


def test_enforce_asks_the_policies_and_answers_404_for_another_workspace() -> None:
    analyst = _principal(PrincipalKind.USER, role=Role.ANALYST)
    enforce(analyst, Permission.WRITE)
    enforce(analyst, "write", resource="Flag")
    with pytest.raises(PermissionDenied, match="'admin'"):
        enforce(analyst, Permission.ADMIN)
    with pytest.raises(NotFound):
        enforce(analyst, Permission.READ, workspace_id=ELSEWHERE)


def test_keys_may_not_do_what_only_a_person_may() -> None:
    assert require_user(_principal(PrincipalKind.USER, role=Role.VIEWER)) == "usr_1"
    for key in (
        _principal(PrincipalKind.SECRET_KEY, scopes=ALL_SCOPES),
        _principal(PrincipalKind.PUBLIC_KEY),
    ):
        with pytest.raises(PermissionDenied, match="not an API key"):
            require_user(key)


def test_the_legacy_tables_agree_with_the_policies() -> None:
    engine = default_engine()
    assert set(PERMISSIONS) == {p.value for p in Permission}
    assert engine.roles == {r.value for r in Role}
    assert engine.scopes == {s.value for s in KeyScope} == {p.value for p in SECRET_KEY_SCOPES}
    for role in Role:
        granted = engine.permissions(Actor("user", HOME, role=role.value))
        assert granted == {p.value for p in ROLE_PERMISSIONS[role]}, role
    assert engine.permissions(Actor("public_key", HOME)) == {
        p.value for p in PUBLIC_KEY_PERMISSIONS
    }
    for size in range(len(SECRET_KEY_SCOPES) + 1):
        for scopes in itertools.combinations(sorted(SECRET_KEY_SCOPES), size):
            held = frozenset(p.value for p in scopes)
            assert engine.permissions(Actor("secret_key", HOME, scopes=held)) == held


def test_principals_get_their_permissions_from_the_policies(database: Database) -> None:
    with database.session() as db:
        owner = service.create_user(db, email="o@example.com", password="a long password")
        workspace = service.create_workspace(db, name="W", owner_id=owner.id)
        principal = service.principal_for_user(db, user_id=owner.id, workspace_id=workspace.id)
        for permission in Permission:
            expected = default_engine().decide(
                principal.as_actor(), permission.value, Resource("Workspace", workspace.id)
            )
            assert principal.can(permission) is expected.allowed


# --- the memo -------------------------------------------------------------------------------


def test_the_memo_answers_as_cedar_does_over_the_whole_matrix() -> None:
    memoised = PolicyEngine.shipped()
    uncached = PolicyEngine.shipped(memo_size=0)
    requests: list[tuple[Actor, str, Resource, Mapping[str, str | frozenset[str] | None]]] = [
        (actor, action, where(resource), context)
        for actor in PRINCIPALS.values()
        for action, resource, context in _cases()
        for where in (lambda r: r, _elsewhere)
    ]
    requests += [
        (PRINCIPALS[name], action, Resource.of("Member", HOME, role=old), {"role": new})
        for (action, old, new) in ROLE_CHANGES
        for name in ("owner", "admin", "secret key:admin")
    ]
    for _ in range(2):  # the second pass is answered from the memo
        for actor, action, resource, context in requests:
            assert memoised.decide(actor, action, resource, context) == uncached.decide(
                actor, action, resource, context
            )
    assert uncached.memoised == 0
    assert 0 < memoised.memoised <= len(requests)


def test_the_memo_is_bounded() -> None:
    engine = PolicyEngine.shipped(memo_size=8)
    for kind in RESOURCE_KINDS:
        for action in PERMISSIONS:
            engine.decide(PRINCIPALS["admin"], action, Resource(kind, HOME))
            assert engine.memoised <= 8


def test_the_memo_ignores_which_workspace_only_whether_it_is_the_callers() -> None:
    engine = PolicyEngine.shipped()
    first = engine.decide(Actor("user", "ws_1", role="admin"), "admin", Resource("Flag", "ws_1"))
    again = engine.decide(Actor("user", "ws_2", role="admin"), "admin", Resource("Flag", "ws_2"))
    assert first == again
    assert first.allowed
    assert engine.memoised == 1
    assert not engine.decide(
        Actor("user", "ws_2", role="admin"), "admin", Resource("Flag", "ws_1")
    ).allowed


# --- validation at load ---------------------------------------------------------------------


def _shipped_policies() -> dict[str, str]:
    return {name: (POLICY_DIR / name).read_text(encoding="utf-8") for name in POLICY_FILES}


def _load_with(extra: str, schema: str = SCHEMA) -> PolicyEngine:
    return PolicyEngine.from_text({**_shipped_policies(), "extra.cedar": extra}, schema)


def test_the_shipped_policies_load_from_the_package() -> None:
    names = {entry.name for entry in POLICY_DIR.iterdir()}
    assert {SCHEMA_FILE, *POLICY_FILES} <= names
    PolicyEngine.from_text(_shipped_policies(), SCHEMA)


def test_an_operator_can_load_policies_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / SCHEMA_FILE).write_text(SCHEMA)
    for name, text in _shipped_policies().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "tenancy.cedar").unlink()  # without tenant isolation, say
    engine = PolicyEngine.from_directory(tmp_path)
    assert engine.decide(PRINCIPALS["viewer"], "read", Resource("Flag", ELSEWHERE)).allowed
    with pytest.raises(PolicyError, match="No policy directory"):
        PolicyEngine.from_directory(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match=r"no nexus\.cedarschema\.json"):
        PolicyEngine.from_directory(tmp_path / "empty")


def test_the_shipped_policies_are_formatted_as_cedar_formats_them() -> None:
    for name, text in _shipped_policies().items():
        assert cedarpy.format_policies(text, 99, 2) == text, name


BAD_POLICIES = {
    "an unknown action": (
        '@id("x") permit (principal, action == Nexus::Action::"frobnicate", resource);',
        "@id('x'): unrecognized action `Nexus::Action::\"frobnicate\"`",
    ),
    "an unknown entity type": (
        '@id("x") permit (principal is Nexus::Robot, action, resource);',
        "unrecognized entity type `Nexus::Robot`",
    ),
    "an unknown attribute": (
        '@id("x") permit (principal is Nexus::User, action, resource)'
        ' when { principal.nickname == "x" };',
        "attribute `nickname`",
    ),
    "an unknown role": (
        '@id("x") permit (principal in Nexus::Role::"superuser", action, resource);',
        '"superuser"',
    ),
    "a type error": (
        '@id("x") permit (principal, action, resource) when { principal.workspace == 1 };',
        "@id('x'): the types Long and Nexus::Workspace are not compatible",
    ),
    "a syntax error": ('@id("x") permit (principal, action, resource', "does not parse"),
    "no @id": ("permit (principal, action, resource);", "the 1st policy has no @id"),
    "a duplicate @id": (
        '@id("role-owner") permit (principal, action, resource);',
        "@id('role-owner') is already used in roles.cedar",
    ),
    "a named principal": (
        '@id("x") permit (principal == Nexus::User::"alice", action, resource);',
        'names the entity Nexus::User::"alice"',
    ),
    "a named resource in a condition": (
        '@id("x") permit (principal, action, resource)'
        ' when { resource.workspace == Nexus::Workspace::"ws_1" };',
        'names the entity Nexus::Workspace::"ws_1"',
    ),
    "a template": (
        '@id("x") permit (principal == ?principal, action, resource);',
        "templates are not supported",
    ),
}


@pytest.mark.parametrize("problem", list(BAD_POLICIES))
def test_a_bad_policy_is_refused_at_load_naming_file_and_problem(problem: str) -> None:
    text, message = BAD_POLICIES[problem]
    with pytest.raises(PolicyError) as refused:
        _load_with(text)
    assert "extra.cedar" in str(refused.value)
    assert message in str(refused.value)


def test_a_bad_schema_is_refused_at_load() -> None:
    document = json.loads(SCHEMA)
    with pytest.raises(PolicyError, match="not JSON"):
        _load_with("", schema="{")
    without_decide = json.loads(SCHEMA)
    del without_decide["Nexus"]["actions"]["decide"]
    with pytest.raises(PolicyError, match="missing actions NEXUS asks about: decide"):
        _load_with("", schema=json.dumps(without_decide))
    document["Nexus"]["entityTypes"]["Flag"]["shape"]["attributes"]["owner"] = {
        "type": "Entity",
        "name": "Nobody",
    }
    with pytest.raises(PolicyError, match=r"not a valid Cedar schema.*Nobody"):
        _load_with("", schema=json.dumps(document))
