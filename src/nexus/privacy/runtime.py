"""What a serving process holds for privacy: policy and consent caches, the ingest screen,
counters, and data-subject requests across every store.

Ingest and decide ask about consent on their hot paths, so answers are cached in process: a
workspace's policy for :data:`POLICY_TTL_SECONDS` (changes through this process's API apply at
once), and each visitor's answers in a bounded LRU, loaded in one query per request for the
visitors it has not seen. A workspace with no consent answers at all skips the lookups. Consent
written through this process updates the cache before the API answers, so the next event is
screened by the new answers; another process sees them within the TTL (the embedded deployment
runs one process).

Every store that holds a person's data registers a :class:`SubjectData` adapter (events,
journal, decision state, bot scores …: the app wires them, since those domains sit above
this one). Erasure finds every id linked to the person, erases in each store, then counts what
is left in each store and reports it: a report with anything left is a failed erasure.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nexus.core.clock import utcnow
from nexus.core.errors import FieldError, InvalidInput, NexusError
from nexus.core.logging import get_logger
from nexus.core.settings import Settings
from nexus.privacy import service
from nexus.privacy.consent import NO_ANSWERS, ConsentMode, ConsentState, Permissions, merge
from nexus.privacy.crypto import (
    DataKey,
    FieldContext,
    InvalidCiphertext,
    decrypt_text,
    encrypt_text,
)
from nexus.privacy.keystore import (
    KeyNotFound,
    KeyStore,
    LocalKeyStore,
    ensure_subject_key,
    get_subject_key,
    master_key_from_secret,
    rewrap_subject_keys,
    rotate_workspace_key,
    shred_subject,
)
from nexus.privacy.models import PiiSettings, PrivacySettingsRead, SubjectRequestRead
from nexus.privacy.pii import (
    BUILTIN_ENTITIES,
    PiiAction,
    PiiDetector,
    PiiPolicy,
    PiiPolicyError,
    PiiRedactor,
)
from nexus.storage.database import Database

if TYPE_CHECKING:
    from presidio_analyzer.nlp_engine import NlpEngine

log = get_logger("nexus.privacy")
POLICY_TTL_SECONDS = 5.0
CONSENT_CACHE_SIZE = 200_000
MAX_LINKED_IDS = 10_000

DATA_KEY_CACHE_SIZE = 10_000
TOKEN_MARK = ":enc:"  # noqa: S105 - a marker in redacted text, not a secret
# An encrypted PII value in an event: <ENTITY:enc:subject tag:nxf1.ciphertext>.
_TOKEN = re.compile(r"<([A-Z][A-Z0-9_]*):enc:([0-9a-f]{32}):(nxf1\.[A-Za-z0-9_-]+)>")

# Event row positions (nexus.events.normalize.ROW_FIELDS; events sit above privacy).
_MESSAGE, _USER, _ANON = 0, 3, 4
_EVENT = 2
_PREVIOUS = 6
# Events NEXUS writes itself (decide's decisions and exposures): no visitor text, no PII.
SYSTEM_EVENTS = frozenset({"$decision", "$exposure"})
_PROPERTIES, _TRAITS, _CONTEXT = 12, 13, 14
_ID_COLUMNS = (_USER, _ANON, _PREVIOUS)
PREFILTER_MEMO_TEXT = 512
PREFILTER_MEMO_SIZE = 50_000
# An id that may be PII as a whole: an e-mail address, or a phone number in E.164 form.
# Numeric ids (a shop's customer number) are ids, not phone numbers: never rewritten.
_PII_SHAPED_ID = re.compile(r"^(?:[^@\s]+@[^@\s]+\.[^@\s]+|\+[\d ().-]{7,30})$")
# Context keys scanned for no PII: the client's description of itself.
SAFE_CONTEXT_KEYS = ("userAgent", "userAgentData", "library", "locale", "timezone", "screen")
_SECTIONS = ((_PROPERTIES, "properties"), (_TRAITS, "traits"), (_CONTEXT, "context"))


@dataclass(frozen=True)
class Redaction:
    """A workspace's PII rules compiled: the detector, and the redactor when it can be shared
    (a policy that encrypts needs one per row, bound to the row's subject and id)."""

    rules: PiiPolicy
    detector: PiiDetector
    shared: PiiRedactor | None
    prefilter_memo: dict[str, bool] = field(default_factory=dict)


def pii_policy(pii: PiiSettings, *, ner: bool = False) -> PiiPolicy:
    """The API's PII settings as the redaction core's policy (validated: 422 on bad rules).
    ``ner``: whether this server has a named-entity model (``PERSON`` rules need one)."""
    if "PERSON" in pii.entities and not ner:
        raise InvalidInput(
            "pii.entities.PERSON: person names need an NER model, which this server does not "
            "load (set NEXUS_PII_NER_MODEL); see docs/privacy.md, 'Person names'.",
            errors=[FieldError(("body", "pii", "entities", "PERSON"), "needs NER", "ner_required")],
        )
    entity_actions: dict[str, str] = {str(k): str(v) for k, v in pii.entities.items()}
    for custom in pii.custom_patterns:
        entity_actions[custom.name] = custom.action
    entities = None
    if "PERSON" in pii.entities:
        entities = [*BUILTIN_ENTITIES, "PERSON", *(c.name for c in pii.custom_patterns)]
    try:
        return PiiPolicy.from_mapping(
            {
                "entity_actions": entity_actions,
                "property_actions": dict(pii.properties),
                "custom_patterns": [
                    {"name": c.name, "regex": c.pattern, "score": c.score}
                    for c in pii.custom_patterns
                ],
                "entities": entities,
            }
        )
    except PiiPolicyError as exc:
        raise InvalidInput(f"pii: {exc}") from None


class ConsentRequired(NexusError):
    status = 403
    code = "consent-required"
    title = "Consent required"


@dataclass
class Policy:
    """A workspace's privacy settings, compiled for the hot path."""

    workspace_id: str
    settings: PrivacySettingsRead
    has_consents: bool
    text_properties: tuple[str, ...]
    loaded_at: float
    redactor: Redaction | None = None

    @property
    def mode(self) -> ConsentMode:
        return self.settings.consent_mode


@dataclass
class Counters:
    events_dropped: int = 0
    events_stripped: int = 0
    values_redacted: int = 0
    by_entity: Counter[str] = field(default_factory=Counter)


class SubjectData(ABC):
    """One store's part in data-subject requests."""

    name: str

    def link(self, workspace_id: str, ids: set[str]) -> set[str]:
        """Other ids of the same person this store knows (identity links)."""
        return set()

    @abstractmethod
    def export(self, workspace_id: str, ids: set[str]) -> Any:
        """Everything this store holds about ``ids``, as JSON-ready data."""

    @abstractmethod
    def erase(self, workspace_id: str, ids: set[str]) -> int:
        """Remove everything about ``ids``; returns how many records went."""

    @abstractmethod
    def remaining(self, workspace_id: str, ids: set[str]) -> int:
        """How many records still mention any of ``ids`` (0 after an erasure)."""

    def expire(self, workspace_id: str, before: datetime) -> int:
        """Retention: remove what is older than ``before``; returns how many records went."""
        return 0


class ConsentData(SubjectData):
    """The consent answers and their history (SQL)."""

    name = "consent"

    def __init__(self, database: Database) -> None:
        self.database = database

    def export(self, workspace_id: str, ids: set[str]) -> Any:
        with self.database.session() as session:
            return service.export_consent(session, workspace_id=workspace_id, subjects=ids)

    def erase(self, workspace_id: str, ids: set[str]) -> int:
        with self.database.session() as session:
            return service.erase_consent(session, workspace_id=workspace_id, subjects=ids)

    def remaining(self, workspace_id: str, ids: set[str]) -> int:
        with self.database.session() as session:
            return service.count_consent(session, workspace_id=workspace_id, subjects=ids)


class PrivacyRuntime:
    """See the module docstring. Thread-safe: ingest runs on the loop, erasure on a worker."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        text_properties_of: Callable[[str], list[str]] | None = None,
        keystore: KeyStore | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.default_mode: ConsentMode = settings.default_consent_mode
        self._text_properties_of = text_properties_of or (lambda _: [])
        self._policies: dict[str, Policy] = {}
        self._consent: OrderedDict[tuple[str, str], ConsentState] = OrderedDict()
        self._data_keys: OrderedDict[tuple[str, str], DataKey] = OrderedDict()
        self._refreshing: set[str] = set()
        self._ner: NlpEngine | None = None
        self._lock = threading.Lock()
        self.counters: dict[str, Counters] = {}
        self._hash_root = settings.signing_key
        self._keystore = keystore
        self.stores: list[SubjectData] = [ConsentData(database)]
        # Called with (workspace_id, ids) after an erasure: in-process state elsewhere.
        self.forgetters: list[Callable[[str, set[str]], int]] = []

    # -- keys --------------------------------------------------------------------------------

    @property
    def keystore(self) -> KeyStore:
        if self._keystore is None:
            path = self.settings.data_dir / "keys" / "fields.keystore"
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._keystore = LocalKeyStore(path, master_key_from_secret(self._hash_root))
        return self._keystore

    def hash_key(self, workspace_id: str) -> bytes:
        """The workspace's key for keyed hashes of PII (stable across restarts)."""
        return HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"nexus pii hash:" + workspace_id.encode(),
        ).derive(self._hash_root)

    def keyed_hash(self, workspace_id: str, value: str) -> str:
        return hmac.new(self.hash_key(workspace_id), value.encode(), hashlib.sha256).hexdigest()

    # -- policy ------------------------------------------------------------------------------

    def cached_policy(self, workspace_id: str) -> Policy | None:
        """The workspace's policy if this process has one; ``None`` only before the first
        load. One older than :data:`POLICY_TTL_SECONDS` is still answered while a background
        thread reloads it, so the hot paths never wait on the database for it."""
        policy = self._policies.get(workspace_id)
        if policy is None:
            return None
        if time.monotonic() - policy.loaded_at > POLICY_TTL_SECONDS:
            with self._lock:
                starting = workspace_id not in self._refreshing
                self._refreshing.add(workspace_id)
            if starting:
                threading.Thread(
                    target=self._refresh,
                    args=(workspace_id,),
                    name="nexus-privacy-refresh",
                    daemon=True,
                ).start()
        return policy

    def _refresh(self, workspace_id: str) -> None:
        try:
            self._load_policy(workspace_id)
        except Exception:
            log.exception("privacy policy reload failed; keeping the cached one")
        finally:
            with self._lock:
                self._refreshing.discard(workspace_id)

    def policy(self, workspace_id: str) -> Policy:
        """The workspace's policy, from the cache or the database (blocking)."""
        return self.cached_policy(workspace_id) or self._load_policy(workspace_id)

    def _load_policy(self, workspace_id: str) -> Policy:
        with self.database.session() as session:
            read = service.get_settings(
                session, workspace_id=workspace_id, default_mode=self.default_mode
            )
            has_consents = service.has_consent_records(session, workspace_id=workspace_id)
        policy = Policy(
            workspace_id=workspace_id,
            settings=read,
            has_consents=has_consents,
            text_properties=tuple(self._text_properties_of(workspace_id)),
            loaded_at=time.monotonic(),
        )
        previous = self._policies.get(workspace_id)
        if previous is not None and previous.settings.pii == read.pii:
            policy.redactor = previous.redactor  # the same rules: keep the compiled ones
        else:
            policy.redactor = self.build_redactor(policy)
        self._policies[workspace_id] = policy
        return policy

    def build_redactor(self, policy: Policy) -> Redaction | None:
        """The PII rules of the policy, compiled (``None`` when PII redaction is off)."""
        if not policy.settings.pii.enabled:
            return None
        rules = pii_policy(policy.settings.pii, ner=self.settings.pii_ner_model is not None)
        engine = self.ner_engine() if "PERSON" in rules.enabled_entities else None
        detector = PiiDetector.for_policy(rules, nlp_engine=engine)
        encrypts = PiiAction.ENCRYPT in rules.actions_used
        shared = None
        if not encrypts:
            shared = PiiRedactor(
                rules, hash_key=self.hash_key(policy.workspace_id), detector=detector
            )
        return Redaction(rules=rules, detector=detector, shared=shared)

    def validate_pii(self, pii: PiiSettings | None) -> None:
        """Refuse PII rules that cannot work (a bad pattern, an entity that needs the NER
        extra) with a 422 naming the rule."""
        if pii is not None:
            pii_policy(pii, ner=self.settings.pii_ner_model is not None)

    def warm_up(self) -> None:
        """Load presidio (and spaCy under it) and build the default analyzer now, at start,
        like the emotion models: the first event with PII must not pay seconds of imports
        while the server is taking traffic."""
        PiiDetector.for_policy(PiiPolicy()).detect("warm-up: ada@example.com")

    def ner_engine(self) -> NlpEngine:
        """The spaCy engine of ``NEXUS_PII_NER_MODEL``, loaded once per process."""
        with self._lock:
            if self._ner is None:
                model = self.settings.pii_ner_model
                assert model is not None
                # presidio and spaCy load on first use, not when NEXUS starts.
                from nexus.privacy.pii_recognizers import spacy_ner_engine  # noqa: PLC0415

                engine = spacy_ner_engine(model)
                engine.load()
                self._ner = engine
            return self._ner

    def invalidate(self, workspace_id: str) -> None:
        self._policies.pop(workspace_id, None)

    # -- consent -----------------------------------------------------------------------------

    def _cached_state(self, workspace_id: str, subject: str) -> ConsentState | None:
        key = (workspace_id, subject)
        state = self._consent.get(key)
        if state is not None:
            self._consent.move_to_end(key)
        return state

    def missing_subjects(self, policy: Policy, subjects: set[str]) -> set[str]:
        if not policy.has_consents:
            return set()
        with self._lock:
            return {s for s in subjects if (policy.workspace_id, s) not in self._consent}

    def load_consent(self, workspace_id: str, subjects: set[str]) -> None:
        """Fill the cache for ``subjects`` (blocking: one query per 500)."""
        with self.database.session() as session:
            found = service.consent_states(session, workspace_id=workspace_id, subjects=subjects)
        with self._lock:
            for subject in subjects:
                self._remember(workspace_id, subject, found.get(subject, NO_ANSWERS))

    def _remember(self, workspace_id: str, subject: str, state: ConsentState) -> None:
        self._consent[(workspace_id, subject)] = state
        self._consent.move_to_end((workspace_id, subject))
        while len(self._consent) > CONSENT_CACHE_SIZE:
            self._consent.popitem(last=False)

    def note_consent(self, workspace_id: str, subject: str, state: ConsentState) -> None:
        """A consent change made through this process: enforce it from the next event."""
        with self._lock:
            self._remember(workspace_id, subject, state)
        policy = self._policies.get(workspace_id)
        if policy is not None:
            policy.has_consents = True

    def permissions(self, policy: Policy, subjects: Sequence[str | None]) -> Permissions:
        """What the visitor known by ``subjects`` permits; needs their answers cached (or the
        workspace to have none): see :meth:`missing_subjects`."""
        if not policy.has_consents:
            return Permissions.of(NO_ANSWERS, policy.mode)
        states = []
        with self._lock:
            for subject in subjects:
                if subject:
                    state = self._cached_state(policy.workspace_id, subject)
                    if state is not None:
                        states.append(state)
        return Permissions.of(merge(states), policy.mode)

    def cached_permissions(self, workspace_id: str, subject: str) -> Permissions | None:
        """For decide's loop-thread path: ``None`` when something must be loaded first."""
        policy = self.cached_policy(workspace_id)
        if policy is None or self.missing_subjects(policy, {subject}):
            return None
        return self.permissions(policy, (subject,))

    def load_permissions(self, workspace_id: str, subject: str) -> Permissions:
        """Blocking: load what :meth:`cached_permissions` lacked, then answer."""
        policy = self.policy(workspace_id)
        missing = self.missing_subjects(policy, {subject})
        if missing:
            self.load_consent(workspace_id, missing)
        return self.permissions(policy, (subject,))

    def require(
        self, workspace_id: str, subject: str | None, purpose: str, *, anonymous_ok: bool
    ) -> None:
        """Raise :class:`ConsentRequired` unless ``subject`` permits ``purpose``; without a
        subject only ``anonymous_ok`` callers pass, and only in opt-out mode. Blocking."""
        if subject is None:
            if anonymous_ok or self.policy(workspace_id).mode == "opt_out":
                return
            raise ConsentRequired(
                "This workspace needs consent first (opt_in): send the visitor's id as "
                "visitor_id, after recording their consent with POST /v1/consent."
            )
        permitted = self.load_permissions(workspace_id, subject)
        if not getattr(permitted, purpose):
            raise ConsentRequired(
                f"The visitor has not consented to {purpose.replace('_', ' ')}; "
                "record it with POST /v1/consent first."
            )

    # -- the ingest screen -------------------------------------------------------------------

    def counters_of(self, workspace_id: str) -> Counters:
        found = self.counters.get(workspace_id)
        if found is None:
            found = self.counters[workspace_id] = Counters()
        return found

    def prepare_screen(self, workspace_id: str, rows: Sequence[list[Any]]) -> Policy:
        """Blocking part of screening: the policy and the answers of the rows' visitors."""
        policy = self.policy(workspace_id)
        subjects = {s for row in rows for s in (row[_USER], row[_ANON]) if s}
        missing = self.missing_subjects(policy, subjects)
        if missing:
            self.load_consent(workspace_id, missing)
        return policy

    def needs_preparing(self, workspace_id: str, rows: Sequence[list[Any]]) -> bool:
        policy = self.cached_policy(workspace_id)
        if policy is None:
            return True
        if not policy.has_consents:
            return False
        subjects = {s for row in rows for s in (row[_USER], row[_ANON]) if s}
        return bool(self.missing_subjects(policy, subjects))

    def screen(self, policy: Policy, rows: list[list[Any]]) -> list[list[Any]]:
        """The rows consent allows to keep, with text and PII handled as the policy says.

        Rows are the events domain's normalized rows (JSON sections as text); a row is
        changed in place only after it was copied.
        """
        counters = self.counters_of(policy.workspace_id)
        kept: list[list[Any]] = []
        # Nobody in the workspace answered yet: one answer for every row.
        everyone = None if policy.has_consents else Permissions.of(NO_ANSWERS, policy.mode)
        for row in rows:
            allowed = everyone or self.permissions(policy, (row[_USER], row[_ANON]))
            if not allowed.analytics:
                counters.events_dropped += 1
                continue
            screened = row
            if not allowed.emotion_analysis and policy.text_properties:
                stripped = _strip_text(row, policy.text_properties)
                if stripped is not None:
                    counters.events_stripped += 1
                    screened = stripped
            if policy.redactor is not None and row[_EVENT] not in SYSTEM_EVENTS:
                screened = self.redact_row(policy, screened, counters)
            kept.append(screened)
        return kept

    def redact_row(self, policy: Policy, row: list[Any], counters: Counters) -> list[Any]:
        """The row with the PII rules applied to its properties, traits and context, and ids
        that are themselves PII (an e-mail as userId) replaced by their keyed hash."""
        redaction = policy.redactor
        assert redaction is not None
        detector = redaction.detector
        parsed, kept_aside = _sections_to_scan(redaction, row)
        ids = [i for i in _ID_COLUMNS if row[i] and _PII_SHAPED_ID.match(row[i])]
        if not parsed and not ids:
            return row
        redactor = redaction.shared or self._row_redactor(policy, redaction, row)
        out = list(row)
        if parsed:
            result = redactor.redact_event(parsed, sections=list(parsed))
            for index, name in _SECTIONS:
                if name not in parsed:
                    continue
                value = result.event.get(name)
                if name == "context" and isinstance(value, dict):
                    value = {**value, **kept_aside}
                out[index] = None if value is None else orjson.dumps(value).decode()
            counters.values_redacted += sum(
                n for action, n in result.action_counts.items() if action != PiiAction.KEEP
            )
            counters.by_entity.update(result.entity_counts)
        for index in ids:
            hashed = self.pseudonym(policy.workspace_id, row[index], detector=detector)
            if hashed != row[index]:
                out[index] = hashed
                counters.values_redacted += 1
        return out

    def _row_redactor(self, policy: Policy, redaction: Redaction, row: list[Any]) -> PiiRedactor:
        """A redactor whose ``encrypt`` seals values under the row's subject key, bound to the
        workspace, the events table, the entity and the row's message id."""
        workspace_id = policy.workspace_id
        tag = self.subject_tag(workspace_id, row[_USER] or row[_ANON] or "")

        def encrypt(entity: str, value: str) -> str:
            key = self.subject_key(workspace_id, tag)
            context = FieldContext(workspace_id, "events", f"pii:{entity}", row[_MESSAGE])
            return f"<{entity}{TOKEN_MARK}{tag}:{encrypt_text(key, value, context)}>"

        return PiiRedactor(
            redaction.rules,
            hash_key=self.hash_key(workspace_id),
            encrypt=encrypt,
            detector=redaction.detector,
        )

    def scrub_text(self, workspace_id: str, text: str) -> str:
        """``text`` with every PII finding replaced by ``<ENTITY>``: what a model may read of
        words that are not stored (decide's and analyze's text). Blocking on a cold policy."""
        redaction = self.policy(workspace_id).redactor
        if redaction is None or not redaction.detector.could_contain(text):
            return text
        out = text
        for finding in sorted(redaction.detector.detect(text), key=lambda f: -f.start):
            out = f"{out[: finding.start]}<{finding.entity}>{out[finding.end :]}"
        return out

    def may_hold_pii(self, workspace_id: str, text: str) -> bool | None:
        """Whether ``text`` needs :meth:`scrub_text`; ``None`` when the policy is not cached
        (the hot path then hands the request to the slow path)."""
        policy = self.cached_policy(workspace_id)
        if policy is None:
            return None
        return policy.redactor is not None and policy.redactor.detector.could_contain(text)

    def rotate_keys(self, workspace_id: str) -> tuple[int, int]:
        """A new workspace key version, and every data key re-wrapped under it; encrypted
        values stay as they are (their data keys do not change), and the old version keeps
        unwrapping until it is retired. Returns (new version, data keys re-wrapped)."""
        key = rotate_workspace_key(self.keystore, workspace_id)
        return key.version, rewrap_subject_keys(self.keystore, workspace_id)

    def subject_tag(self, workspace_id: str, subject: str) -> str:
        """The key store's name for a subject: a keyed hash, so that the key store holds no
        identifier of anyone."""
        digest = hmac.new(self.hash_key(workspace_id), b"subject\x00" + subject.encode(), "sha256")
        return digest.hexdigest()[:32]

    def subject_key(self, workspace_id: str, tag: str) -> DataKey:
        """The data key of a subject (by :meth:`subject_tag`), created on first use, cached
        unwrapped in process."""
        cache_key = (workspace_id, tag)
        with self._lock:
            found = self._data_keys.get(cache_key)
        if found is not None:
            return found
        key = ensure_subject_key(self.keystore, workspace_id, tag)
        with self._lock:
            self._data_keys[cache_key] = key
            while len(self._data_keys) > DATA_KEY_CACHE_SIZE:
                self._data_keys.popitem(last=False)
        return key

    def pseudonym(self, workspace_id: str, value: str, *, detector: PiiDetector) -> str:
        """``value`` if it is not PII as a whole, else its keyed hash (deterministic, so that
        identity stitching still works on the hashed id)."""
        if not _PII_SHAPED_ID.match(value):
            return value
        findings = detector.detect(value)
        whole = [f for f in findings if f.start == 0 and f.end == len(value)]
        if not whole:
            return value
        finding = whole[0]
        digest = hmac.new(
            self.hash_key(workspace_id),
            f"{finding.entity}\x00{finding.canonical}".encode(),
            hashlib.sha256,
        ).hexdigest()
        return f"<{finding.entity}:hmac:{digest[:16]}>"

    def decrypt_fields(self, workspace_id: str, value: Any, row_id: str) -> Any:
        """``value`` with every encrypted PII token opened (for exports); a token whose subject
        key was shredded reads ``"[erased]"``."""
        if isinstance(value, dict):
            return {k: self.decrypt_fields(workspace_id, v, row_id) for k, v in value.items()}
        if isinstance(value, list):
            return [self.decrypt_fields(workspace_id, v, row_id) for v in value]
        if isinstance(value, str) and TOKEN_MARK in value:
            return _TOKEN.sub(lambda m: self._open(workspace_id, m, row_id), value)
        return value

    def _open(self, workspace_id: str, match: re.Match[str], row_id: str) -> str:
        entity, tag, token = match.group(1), match.group(2), match.group(3)
        try:
            key = get_subject_key(self.keystore, workspace_id, tag)
        except KeyNotFound:
            return "[erased]"
        context = FieldContext(workspace_id, "events", f"pii:{entity}", row_id)
        try:
            return decrypt_text(key, token, context)
        except InvalidCiphertext:
            return "[unreadable]"

    # -- data-subject requests ---------------------------------------------------------------

    def linked_ids(self, workspace_id: str, subject: str) -> set[str]:
        """``subject`` and every id linked to it in any store (to a fixed point)."""
        ids = {subject}
        policy = self.policy(workspace_id)
        if isinstance(policy.redactor, Redaction):
            # Events store a PII-shaped id (an e-mail as userId) as its keyed hash.
            ids.add(self.pseudonym(workspace_id, subject, detector=policy.redactor.detector))
        frontier = set(ids)
        while frontier and len(ids) < MAX_LINKED_IDS:
            found: set[str] = set()
            for store in self.stores:
                found |= store.link(workspace_id, frontier)
            frontier = found - ids
            ids |= frontier
        return ids

    def export(self, workspace_id: str, subject: str) -> dict[str, Any]:
        ids = self.linked_ids(workspace_id, subject)
        return {
            "workspace_id": workspace_id,
            "visitor_ids": sorted(ids),
            "exported_at": utcnow().isoformat(),
            "stores": {store.name: store.export(workspace_id, ids) for store in self.stores},
        }

    def export_request(self, workspace_id: str, subject: str, *, actor: str) -> dict[str, Any]:
        """:meth:`export`, recorded as a subject request (the record holds counts only)."""
        document = self.export(workspace_id, subject)
        counts = {name: {"records": _count(data)} for name, data in document["stores"].items()}
        with self.database.session() as session:
            saved = service.save_request(
                session,
                workspace_id=workspace_id,
                kind="export",
                actor=actor,
                report={"ids": len(document["visitor_ids"]), "stores": counts},
            )
        document["request_id"] = saved.id
        return document

    def erase(self, workspace_id: str, subject: str, *, actor: str) -> SubjectRequestRead:
        """Erase the person known by ``subject`` everywhere; the report says what went and
        what (if anything) is left, per store. Blocking."""
        ids = self.linked_ids(workspace_id, subject)
        stores: dict[str, dict[str, int]] = {}
        for store in self.stores:
            removed = store.erase(workspace_id, ids)
            stores[store.name] = {"removed": removed}
        forgotten = 0
        with self._lock:
            for subject_id in ids:
                if self._consent.pop((workspace_id, subject_id), None) is not None:
                    forgotten += 1
        for forget in self.forgetters:
            forgotten += forget(workspace_id, ids)
        tags = {self.subject_tag(workspace_id, i) for i in ids}
        with self._lock:
            for tag in tags:
                self._data_keys.pop((workspace_id, tag), None)
        shredded = sum(shred_subject(self.keystore, workspace_id, tag) for tag in tags)
        for store in self.stores:
            stores[store.name]["remaining"] = store.remaining(workspace_id, ids)
        report = {
            "ids": len(ids),
            "stores": stores,
            "in_process_state": forgotten,
            "keys_shredded": shredded,
            "complete": all(s["remaining"] == 0 for s in stores.values()),
        }
        log.info(
            "subject erased", workspace_id=workspace_id, ids=len(ids), complete=report["complete"]
        )
        with self.database.session() as session:
            return service.save_request(
                session, workspace_id=workspace_id, kind="erasure", actor=actor, report=report
            )

    def apply_retention(
        self, *, now: datetime | None = None, workspace_id: str | None = None
    ) -> list[SubjectRequestRead]:
        """Delete what each workspace's retention period (or only ``workspace_id``'s) has
        expired; returns the reports of the workspaces where something went. Blocking."""
        now = now or utcnow()
        with self.database.session() as session:
            policies = service.retention_policies(session)
        if workspace_id is not None:
            policies = [(w, d) for w, d in policies if w == workspace_id]
        reports = []
        for workspace, days in policies:
            before = now - timedelta(days=days)
            stores = {s.name: {"removed": s.expire(workspace, before)} for s in self.stores}
            with self.database.session() as session:
                stores["consent_history"] = {
                    "removed": service.expire_consent_history(
                        session, workspace_id=workspace, before=before
                    )
                }
                if any(s["removed"] for s in stores.values()):
                    reports.append(
                        service.save_request(
                            session,
                            workspace_id=workspace,
                            kind="retention",
                            actor="system:retention",
                            report={"before": before.isoformat(), "days": days, "stores": stores},
                        )
                    )
        return reports


def _sections_to_scan(
    redaction: Redaction, row: list[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON sections of ``row`` that may hold PII, parsed, and the context keys set aside
    (to put back after redaction)."""
    parsed: dict[str, Any] = {}
    kept_aside: dict[str, Any] = {}
    for index, name in _SECTIONS:
        raw = row[index]
        if not raw:
            continue
        if name == "context" and any(f'"{k}"' in raw for k in SAFE_CONTEXT_KEYS):
            # What browsers and SDKs describe themselves with holds no person's data but looks
            # like it to patterns (a user agent's 129.0.0.0 is IP-shaped), and is long: set
            # aside before the prefilter reads the rest.
            value = orjson.loads(raw)
            if isinstance(value, dict):
                kept_aside = {k: value.pop(k) for k in SAFE_CONTEXT_KEYS if k in value}
                if value and _could_contain(redaction, orjson.dumps(value).decode()):
                    parsed[name] = value
                continue
        if _could_contain(redaction, raw):
            parsed[name] = orjson.loads(raw)
    return parsed, kept_aside


def _could_contain(redaction: Redaction, text: str) -> bool:
    """The detector's prefilter, remembered for short texts: the same page context or
    property set comes back event after event. Bounded; cleared when full; a recompiled
    policy starts a new memo."""
    if len(text) > PREFILTER_MEMO_TEXT:
        return redaction.detector.could_contain(text)
    memo = redaction.prefilter_memo
    known = memo.get(text)
    if known is None:
        known = redaction.detector.could_contain(text)
        if len(memo) >= PREFILTER_MEMO_SIZE:
            memo.clear()
        memo[text] = known
    return known


def _count(data: Any) -> int:
    if isinstance(data, list):
        return len(data)
    if isinstance(data, dict):
        return sum(_count(v) for v in data.values()) if data else 0
    return 0 if data is None else 1


def _strip_text(row: list[Any], names: Sequence[str]) -> list[Any] | None:
    """The row without the visitor text properties ``names``, or ``None`` if it had none."""
    raw = row[_PROPERTIES]
    if not raw or not any(name in raw for name in names):
        return None
    properties = orjson.loads(raw)
    if not isinstance(properties, dict) or not any(name in properties for name in names):
        return None
    for name in names:
        properties.pop(name, None)
    copy = list(row)
    copy[_PROPERTIES] = orjson.dumps(properties).decode()
    return copy
