"""Authorisation as policy: who may do what, as Cedar policies evaluated for every request.

The rules live as data in ``nexus/security/policies/``: a Cedar schema
(``nexus.cedarschema.json``) naming the principals, actions and resource kinds, and policy files
(``*.cedar``) saying who may do what. They cover the OWASP API Security Top 10 items
1 (object level: ``tenancy.cedar``, another workspace's object is refused), 5 (function level:
``roles.cedar``, ``keys.cedar``) and 3 (property level: ``properties.cedar``, which values of an
update a caller may set). docs/security.md, "Authorisation policies", describes the model.

Policies are checked when they are loaded, never at the first request they would have decided:
:meth:`PolicyEngine.from_text` refuses a schema Cedar cannot read, a policy that does not parse
or does not type-check against the schema (an unknown action, entity type, attribute or role),
a policy without an ``@id`` (decisions name their reasons by it), a template, and a policy that
names an individual principal or resource.

That last rule makes the memo sound. A decision depends only on what the engine puts into the
Cedar request, and the engine puts in only: the principal's kind, its role (users) or scopes
(secret keys), the action, the resource's kind, whether the resource is in the principal's
workspace, the resource attributes and the context the caller passes (roles and scope sets,
finitely many). Entity ids are fixed placeholders (``caller``, ``target``, workspaces ``home``
and ``other``), and no policy may name an entity other than a role, a scope or an action.
So :meth:`PolicyEngine.decide` memoises its answers per exactly that tuple in a bounded dict:
the hot paths (``FastAuthorize`` on decide and ingest) pay a dict lookup, not a Cedar
evaluation (about 0.1 ms, most of it JSON in and out).

This module takes plain strings, not the workspaces domain's models: ``nexus.workspaces``
builds on ``nexus.security``, never the other way round.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import cedarpy

from nexus.core.errors import ConfigurationError

NAMESPACE: Final = "Nexus"
SCHEMA_FILE: Final = "nexus.cedarschema.json"
POLICY_SUFFIX: Final = ".cedar"

# The coarse permissions, one action each; routes ask for these through ``Authorize``.
PERMISSIONS: Final = ("read", "write", "admin", "owner", "ingest", "decide")
# Every action NEXUS's code asks about; a schema without one of them is refused at load.
REQUIRED_ACTIONS: Final = (
    *PERMISSIONS,
    "act_in_person",
    "create_workspace",
    "read_audit",
    "add_member",
    "change_role",
    "remove_member",
    "create_key",
    "revoke_key",
)
# Principal kinds as the workspaces domain names them, and their entity types.
PRINCIPAL_TYPES: Final = {"user": "User", "secret_key": "SecretKey", "public_key": "PublicKey"}
REQUIRED_ENTITY_TYPES: Final = (*PRINCIPAL_TYPES.values(), "Workspace", "Role", "Scope")

# Policy ids the code recognises in a decision's reasons, to answer with the right error.
TENANT_ISOLATION: Final = "tenant-isolation"
OWNER_ROLE_RULE: Final = "owner-role-by-owners-only"
SCOPE_RULE: Final = "no-scope-beyond-own"

DEFAULT_MEMO_SIZE: Final = 4096

# Placeholder entity ids: decisions must not depend on them (see the module docstring).
_HOME = "home"
_OTHER = "other"
_CALLER = "caller"
_TARGET = "target"

AttributeValue = str | bool | int | frozenset[str]
"""An attribute or context value: a string (an entity's id where the schema says the attribute
is an entity, e.g. a Role), a number or boolean, or a set of strings."""
Attributes = tuple[tuple[str, AttributeValue], ...]


class PolicyError(ConfigurationError):
    """Policies or schema NEXUS refuses to load, or a request they cannot answer."""

    code = "policy-invalid"
    title = "Invalid authorisation policy"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks, as the policies see it.

    ``kind`` is ``"user"``, ``"secret_key"`` or ``"public_key"``; ``role`` is a user's role in
    ``workspace``; ``scopes`` are a secret key's scopes (unknown scopes grant nothing).
    """

    kind: str
    workspace: str
    role: str | None = None
    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Resource:
    """What is acted on: an object of ``kind`` (a schema entity type: ``Workspace``, ``Flag``,
    ``Member`` …) belonging to ``workspace``, with the attributes a policy may look at.

    Build one with :meth:`of`, which normalises the attributes so equal resources memoise
    together.
    """

    kind: str
    workspace: str
    attributes: Attributes = ()

    @classmethod
    def of(
        cls, kind: str, workspace: str, **attributes: AttributeValue | Iterable[str] | None
    ) -> Resource:
        """A resource; attributes that are None are left out (optional in the schema)."""
        return cls(kind, workspace, _normalise(attributes))


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: ``reasons`` are the ``@id`` of the policies that decided it (the permits
    that allowed it, or the forbids that refused it; empty when nothing permitted it)."""

    allowed: bool
    reasons: tuple[str, ...] = ()

    @property
    def cross_workspace(self) -> bool:
        """Refused because the resource is in another workspace: the API answers 404."""
        return TENANT_ISOLATION in self.reasons


def _normalise(values: Mapping[str, AttributeValue | Iterable[str] | None]) -> Attributes:
    pairs: list[tuple[str, AttributeValue]] = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | frozenset):
            pairs.append((name, value))
        else:
            pairs.append((name, frozenset(value)))
    return tuple(sorted(pairs))


_MemoKey = tuple[str, str | None, frozenset[str], str, str, bool, Attributes, Attributes]


class PolicyEngine:
    """Cedar policies and their schema, validated at load; answers :meth:`decide`.

    One engine serves a process (:func:`default_engine`); it is safe to share between threads.
    """

    def __init__(
        self,
        *,
        policy_set: cedarpy.PolicySet,
        schema: cedarpy.Schema,
        schema_document: Mapping[str, Any],
        annotations: Mapping[str, str],
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> None:
        """Use :meth:`shipped`, :meth:`from_directory` or :meth:`from_text`, which validate."""
        self._policy_set = policy_set
        self._schema = schema
        self._annotations = dict(annotations)
        namespace: Mapping[str, Any] = schema_document[NAMESPACE]
        entity_types: Mapping[str, Any] = namespace.get("entityTypes", {})
        self._entity_types = frozenset(entity_types)
        self._enums = {
            name: frozenset(spec["enum"]) for name, spec in entity_types.items() if "enum" in spec
        }
        self._attribute_types = {
            name: dict(spec.get("shape", {}).get("attributes", {}))
            for name, spec in entity_types.items()
        }
        # Actions a request may name; the others (``manage_keys`` …) only group actions.
        self._context_types = {
            name: dict(spec["appliesTo"].get("context", {}).get("attributes", {}))
            for name, spec in namespace.get("actions", {}).items()
            if "appliesTo" in spec
        }
        self._memo: dict[_MemoKey, Decision] = {}
        self._memo_size = memo_size

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def shipped(cls, *, memo_size: int = DEFAULT_MEMO_SIZE) -> PolicyEngine:
        """The policies that ship in ``nexus/security/policies``."""
        return cls._from_files(resources.files("nexus.security") / "policies", memo_size=memo_size)

    @classmethod
    def from_directory(cls, path: Path, *, memo_size: int = DEFAULT_MEMO_SIZE) -> PolicyEngine:
        """Policies an operator keeps in ``path``: ``nexus.cedarschema.json`` and ``*.cedar``."""
        if not path.is_dir():
            raise PolicyError(f"No policy directory {path}.")
        return cls._from_files(path, memo_size=memo_size)

    @classmethod
    def _from_files(cls, folder: Traversable, *, memo_size: int) -> PolicyEngine:
        schema_file = folder / SCHEMA_FILE
        if not schema_file.is_file():
            raise PolicyError(f"The policy directory has no {SCHEMA_FILE}.")
        policies = {
            entry.name: entry.read_text(encoding="utf-8")
            for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(POLICY_SUFFIX) and entry.is_file()
        }
        return cls.from_text(policies, schema_file.read_text(encoding="utf-8"), memo_size=memo_size)

    @classmethod
    def from_text(
        cls,
        policies: str | Mapping[str, str],
        schema: str,
        *,
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> PolicyEngine:
        """An engine from policy text (one text, or texts by file name) and a Cedar JSON schema.

        Raises :class:`PolicyError` naming the file, the policy's ``@id`` and the problem when
        anything fails the checks listed in the module docstring.
        """
        texts = {"policies": policies} if isinstance(policies, str) else dict(policies)
        document = _schema_document(schema)
        try:
            cedar_schema = cedarpy.Schema.from_json_str(schema)
        except ValueError as exc:
            raise PolicyError(f"{SCHEMA_FILE}: not a valid Cedar schema: {exc}") from None
        allowed_literals = {
            f"{NAMESPACE}::{name}"
            for name, spec in document[NAMESPACE].get("entityTypes", {}).items()
            if "enum" in spec
        }
        allowed_literals.add(f"{NAMESPACE}::Action")
        annotations: dict[str, str] = {}
        seen: dict[str, str] = {}
        for name, text in texts.items():
            for policy_id in _check_policies(name, text, cedar_schema, allowed_literals):
                if policy_id in seen:
                    raise PolicyError(
                        f"{name}: @id({policy_id!r}) is already used in {seen[policy_id]}."
                    )
                seen[policy_id] = name
        combined = "\n".join(texts.values())
        policy_set = cedarpy.PolicySet.from_str(combined)
        # Cedar numbers policies by position in the combined text; map back to their @id.
        est = json.loads(cedarpy.policies_to_json_str(combined))
        for position, policy in est["staticPolicies"].items():
            annotations[position] = policy["annotations"]["id"]
        return cls(
            policy_set=policy_set,
            schema=cedar_schema,
            schema_document=document,
            annotations=annotations,
            memo_size=memo_size,
        )

    # --- what the schema declares ----------------------------------------------------------

    @property
    def roles(self) -> frozenset[str]:
        return self._enums.get("Role", frozenset())

    @property
    def scopes(self) -> frozenset[str]:
        return self._enums.get("Scope", frozenset())

    @property
    def actions(self) -> frozenset[str]:
        """The actions a request may name (action groups without ``appliesTo`` are left out)."""
        return frozenset(self._context_types)

    @property
    def resource_kinds(self) -> frozenset[str]:
        """Entity types that are neither principals nor enumerations."""
        return self._entity_types - set(PRINCIPAL_TYPES.values()) - set(self._enums)

    # --- deciding --------------------------------------------------------------------------

    def decide(
        self,
        actor: Actor,
        action: str,
        resource: Resource,
        context: Mapping[str, AttributeValue | Iterable[str] | None] | None = None,
    ) -> Decision:
        """May ``actor`` do ``action`` on ``resource``? Memoised (see the module docstring).

        Raises :class:`PolicyError` for a request the schema refuses (an unknown action or
        resource kind, a missing context value): that is a bug in the caller, not a denial.
        """
        normal_context = _normalise(context or {})
        key: _MemoKey = (
            actor.kind,
            actor.role,
            actor.scopes,
            action,
            resource.kind,
            actor.workspace == resource.workspace,
            resource.attributes,
            normal_context,
        )
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        decision = self._evaluate(actor, action, resource, normal_context)
        if self._memo_size > 0:
            if len(self._memo) >= self._memo_size:
                self._memo.clear()
            self._memo[key] = decision
        return decision

    def evaluate(
        self,
        actor: Actor,
        action: str,
        resource: Resource,
        context: Mapping[str, AttributeValue | Iterable[str] | None] | None = None,
    ) -> Decision:
        """:meth:`decide` without the memo: always a fresh Cedar evaluation."""
        return self._evaluate(actor, action, resource, _normalise(context or {}))

    def permissions(self, actor: Actor) -> frozenset[str]:
        """The coarse permissions (:data:`PERMISSIONS`) ``actor`` holds in its own workspace."""
        workspace = Resource("Workspace", actor.workspace)
        return frozenset(p for p in PERMISSIONS if self.decide(actor, p, workspace).allowed)

    def may_create_key(self, actor: Actor, *, workspace: str, scopes: Iterable[str]) -> Decision:
        """May ``actor`` create a key holding ``scopes`` in ``workspace``?

        Property level: the policies compare the scopes asked for with ``held``, the scopes the
        actor itself holds, which the engine works out from the same policies.
        """
        held = self.permissions(actor) & self.scopes
        return self.decide(
            actor,
            "create_key",
            Resource("Key", workspace),
            {"scopes": frozenset(scopes), "held": held},
        )

    @property
    def memoised(self) -> int:
        """How many decisions the memo holds now (never more than ``memo_size``)."""
        return len(self._memo)

    def clear_memo(self) -> None:
        self._memo.clear()

    def _evaluate(
        self, actor: Actor, action: str, resource: Resource, context: Attributes
    ) -> Decision:
        if action not in self._context_types:
            raise PolicyError(f"The policy schema declares no action {action!r}.")
        if resource.kind not in self.resource_kinds:
            raise PolicyError(f"The policy schema declares no resource kind {resource.kind!r}.")
        principal_type = PRINCIPAL_TYPES.get(actor.kind)
        if principal_type is None:
            raise PolicyError(f"Unknown principal kind {actor.kind!r}.")
        same = actor.workspace == resource.workspace
        entities = [_workspace(_HOME), _workspace(_OTHER)]
        principal_attrs: dict[str, Any] = {"workspace": _ref("Workspace", _HOME)}
        parents = []
        if principal_type == "SecretKey":
            known = sorted(actor.scopes & self.scopes)
            principal_attrs["scopes"] = [_ref("Scope", s) for s in known]
        if principal_type == "User" and actor.role is not None:
            if actor.role not in self.roles:
                return Decision(False, (f"unknown role {actor.role!r}",))
            parents.append(_uid("Role", actor.role))
        entities.append(
            {"uid": _uid(principal_type, _CALLER), "attrs": principal_attrs, "parents": parents}
        )
        if resource.kind == "Workspace":
            if resource.attributes:
                raise PolicyError("A Workspace resource takes no attributes.")
            resource_uid = _uid("Workspace", _HOME if same else _OTHER)
        else:
            resource_uid = _uid(resource.kind, _TARGET)
            types = self._attribute_types.get(resource.kind, {})
            attrs = {"workspace": _ref("Workspace", _HOME if same else _OTHER)}
            for name, value in resource.attributes:
                attrs[name] = self._cedar_value(types.get(name), value, f"{resource.kind}.{name}")
            entities.append({"uid": resource_uid, "attrs": attrs, "parents": []})
        context_types = self._context_types[action]
        cedar_context = {
            name: self._cedar_value(context_types.get(name), value, f"context.{name}")
            for name, value in context
        }
        request = {
            "principal": _uid(principal_type, _CALLER),
            "action": _uid("Action", action),
            "resource": resource_uid,
            "context": cedar_context,
        }
        result = cedarpy.is_authorized(request, self._policy_set, entities, self._schema)
        if result.diagnostics.errors:
            raise PolicyError(
                f"Cannot decide {action} on {resource.kind}: "
                + "; ".join(result.diagnostics.errors)
            )
        reasons = tuple(sorted(self._annotations.get(r, r) for r in result.diagnostics.reasons))
        return Decision(result.allowed, reasons)

    def _cedar_value(
        self, spec: Mapping[str, Any] | None, value: AttributeValue, where: str
    ) -> Any:
        if spec is None:
            raise PolicyError(f"The policy schema declares no {where}.")
        kind = spec.get("type")
        if kind in ("Entity", "EntityOrCommon") and isinstance(value, str):
            return _ref(str(spec["name"]), value)
        if kind == "Set" and isinstance(value, frozenset):
            return [self._cedar_value(spec["element"], item, where) for item in sorted(value)]
        if kind == "String" and isinstance(value, str):
            return value
        if kind == "Boolean" and isinstance(value, bool):
            return value
        if kind == "Long" and isinstance(value, int) and not isinstance(value, bool):
            return value
        raise PolicyError(f"{where}: cannot pass {value!r} as a Cedar {kind}.")


def _qualified(name: str) -> str:
    return name if "::" in name else f"{NAMESPACE}::{name}"


def _uid(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"type": _qualified(entity_type), "id": entity_id}


def _ref(entity_type: str, entity_id: str) -> dict[str, dict[str, str]]:
    return {"__entity": _uid(entity_type, entity_id)}


def _workspace(entity_id: str) -> dict[str, Any]:
    uid = _uid("Workspace", entity_id)
    return {"uid": uid, "attrs": {"workspace": {"__entity": uid}}, "parents": []}


def _schema_document(schema: str) -> dict[str, Any]:
    try:
        document = json.loads(schema)
    except ValueError as exc:
        raise PolicyError(f"{SCHEMA_FILE}: not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get(NAMESPACE), dict):
        raise PolicyError(f"{SCHEMA_FILE}: must declare the namespace {NAMESPACE!r}.")
    namespace = document[NAMESPACE]
    entity_types = namespace.get("entityTypes", {})
    if missing := [t for t in REQUIRED_ENTITY_TYPES if t not in entity_types]:
        raise PolicyError(f"{SCHEMA_FILE}: missing entity types {', '.join(missing)}.")
    actions = namespace.get("actions", {})
    if missing := [a for a in REQUIRED_ACTIONS if "appliesTo" not in actions.get(a, {})]:
        raise PolicyError(f"{SCHEMA_FILE}: missing actions NEXUS asks about: {', '.join(missing)}.")
    return document


def _check_policies(
    name: str, text: str, schema: cedarpy.Schema, allowed_literals: set[str]
) -> list[str]:
    """The ``@id`` of each policy in ``text``, after every load-time check passed."""
    try:
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise PolicyError(f"{name}: does not parse: {exc}") from None
    if est.get("templates"):
        raise PolicyError(f"{name}: templates are not supported; write static policies.")
    ids: dict[str, str] = {}
    for position, policy in est.get("staticPolicies", {}).items():
        policy_id = policy.get("annotations", {}).get("id")
        if not policy_id:
            raise PolicyError(
                f'{name}: {_ordinal(position)} policy has no @id("...") annotation; '
                "decisions name their reasons by it."
            )
        ids[position] = policy_id
        for literal in _entity_literals(policy):
            if literal["type"] not in allowed_literals:
                raise PolicyError(
                    f"{name}: policy {policy_id!r} names the entity {literal['type']}::"
                    f'"{literal["id"]}"; policies may name roles, scopes and actions only '
                    "(decisions are memoised per role, scope set and resource kind)."
                )
    result = cedarpy.validate_policies(text, schema)
    if not result.validation_passed:
        problems = []
        for error in result.errors:
            detail = _CEDAR_POLICY_PREFIX.sub("", error.error)
            policy_id = ids.get(error.policy_id)
            problems.append(f"@id({policy_id!r}): {detail}" if policy_id else detail)
        raise PolicyError(f"{name}: does not match the schema: " + "; ".join(problems))
    return list(ids.values())


# Cedar starts each validation error with its positional id ("for policy `policy3`, "); the
# message names the policy by its @id instead.
_CEDAR_POLICY_PREFIX = re.compile(r"^for policy `[^`]*`[,:]\s*")


def _ordinal(position: str) -> str:
    number = int(position.removeprefix("policy")) + 1
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10 if number % 100 not in (11, 12, 13) else 0)
    return f"the {number}{suffix or 'th'}"


def _entity_literals(node: Any) -> Iterable[dict[str, str]]:
    """Every entity a policy names (in its scope or as a value), from Cedar's JSON form."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("entity", "__entity") and isinstance(value, dict) and "type" in value:
                yield value
            elif key == "entities" and isinstance(value, list):
                yield from (v for v in value if isinstance(v, dict) and "type" in v)
            else:
                yield from _entity_literals(value)
    elif isinstance(node, list):
        for item in node:
            yield from _entity_literals(item)


class _Default:
    """The process's engine; :func:`default_engine` loads it on first use."""

    engine: PolicyEngine | None = None
    lock = threading.Lock()


def default_engine() -> PolicyEngine:
    """The process's engine: the shipped policies, loaded (and validated) on first use."""
    engine = _Default.engine
    if engine is None:
        with _Default.lock:
            if _Default.engine is None:
                _Default.engine = PolicyEngine.shipped()
            engine = _Default.engine
    return engine


def use_engine(engine: PolicyEngine | None) -> None:
    """Make ``engine`` the process's engine (an operator's policies, a test's); ``None`` goes
    back to the shipped policies on next use."""
    with _Default.lock:
        _Default.engine = engine
