"""A fault-injecting backend, so tests can prove how haeedge behaves when storage misbehaves.

``FaultyBackend(inner, spec)`` passes every call to ``inner`` unless one of
its rules fires. Rules come from Python (``FaultRule``) or from a spec string,
which is also how command-line tests switch faults on: when the environment
variable ``HAEEDGE_FAULTS`` is set, ``wrap_from_env(backend)`` wraps the backend
(``HAEEDGE_FAULTS_SEED`` seeds the random choices; default 0).

Spec grammar::

    spec    := rule ( ("," | ";") rule )*
    rule    := methods ( ":" param )+
    methods := "*" | method ( "|" method )*
    method  := put | get | get_range | list | delete | stat | exists | create
    param   := key [ "=" value ]

Effects (one per rule; ``fail`` when none is given):

- ``fail``          raise an error instead of making the call
- ``truncate=F``    get/get_range return only the first F (0..1) of the bytes
- ``flip[=N]``      get/get_range return the bytes with N (default 1) bits flipped
- ``torn=F``        put stores only the first F of the data, then raises
                    (a non-atomic store that died mid-write)
- ``latency=S``     sleep S seconds, then make the call normally

When a rule fires (all given conditions must hold; none given = every call):

- ``every=N``       on the Nth, 2Nth, ... call the rule matches
- ``first=N``       on the first N calls
- ``after=N``       on every call after the first N (a location that dies mid-way)
- ``once``          on the first call for each object name (then that name works)
- ``prob=P``        with probability P

Modifiers:

- ``permanent``     raise a permanent ``BackendError`` (default: transient)
- ``missing``       raise ``ObjectNotFound``
- ``raw``           raise a bare ``ConnectionResetError``, as a driver might leak
- ``match=S``       only for object names (for ``list``: namespaces) containing S

Examples: ``put:every=3`` (every third put fails, transiently);
``get:truncate=0.5``; ``get|get_range:once:permanent``; ``*:latency=0.01``;
``put:after=10:permanent,get:flip:match=data/``.

``calls`` and ``injected`` (``collections.Counter`` by method) let tests assert
how often the inner backend was really asked and how many faults fired.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from haeedge.backends.base import Backend, BackendWrapper, ObjectInfo
from haeedge.errors import BackendError, ObjectNotFound, UsageError

log = logging.getLogger("haeedge.backends")

METHODS = frozenset({"put", "get", "get_range", "list", "delete", "stat", "exists", "create"})
EFFECTS = ("fail", "truncate", "flip", "torn", "latency")
KINDS = ("transient", "permanent", "missing", "raw")
ENV_VAR = "HAEEDGE_FAULTS"
SEED_VAR = "HAEEDGE_FAULTS_SEED"


@dataclass
class FaultRule:
    """One fault: which methods, what happens, and when."""

    methods: frozenset[str]
    effect: str = "fail"
    value: float = 0.0
    every: int = 0
    first: int = 0
    after: int = -1
    once: bool = False
    prob: float | None = None
    kind: str = "transient"
    match: str = ""
    count: int = field(default=0, compare=False)
    seen: set[str] = field(default_factory=set, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.methods = frozenset(self.methods)
        bad = self.methods - METHODS
        if bad:
            raise UsageError(f"fault spec: unknown method(s) {', '.join(sorted(bad))}")
        if self.effect not in EFFECTS:
            raise UsageError(f"fault spec: unknown effect {self.effect!r}")
        if self.kind not in KINDS:
            raise UsageError(f"fault spec: unknown error kind {self.kind!r}")
        if self.effect in ("truncate", "torn") and not 0 <= self.value <= 1:
            raise UsageError(f"fault spec: {self.effect} takes a fraction between 0 and 1")
        if self.every < 0 or self.first < 0:
            raise UsageError("fault spec: every/first must not be negative")

    def fires(self, name: str, rng: random.Random) -> bool:
        """Count this matching call and decide (caller holds the lock)."""
        self.count += 1
        if self.every and self.count % self.every:
            return False
        if self.first and self.count > self.first:
            return False
        if self.after >= 0 and self.count <= self.after:
            return False
        if self.once:
            if name in self.seen:
                return False
            self.seen.add(name)
        return not (self.prob is not None and rng.random() >= self.prob)


def parse_spec(spec: str) -> list[FaultRule]:
    """Rules from a spec string (grammar in the module docstring); UsageError when malformed."""
    rules: list[FaultRule] = []
    for raw in spec.replace(";", ",").split(","):
        text = raw.strip()
        if not text:
            continue
        head, sep, rest = text.partition(":")
        if not sep or not rest:
            raise UsageError(f"fault spec {text!r}: expected methods:param[:param...]")
        methods = METHODS if head.strip() == "*" else frozenset(m.strip() for m in head.split("|"))
        kw: dict = {"methods": methods}
        for param in rest.split(":"):
            key, _, value = (p.strip() for p in param.partition("="))
            try:
                if key in ("truncate", "torn", "latency"):
                    kw["effect"], kw["value"] = key, float(value)
                elif key == "flip":
                    kw["effect"], kw["value"] = key, float(int(value or "1"))
                elif key == "fail":
                    kw["effect"] = "fail"
                elif key in ("every", "first", "after"):
                    kw[key] = int(value)
                elif key == "prob":
                    kw["prob"] = float(value)
                elif key == "once":
                    kw["once"] = True
                elif key in ("permanent", "missing", "raw", "transient"):
                    kw["kind"] = key
                elif key == "match":
                    kw["match"] = value
                else:
                    raise UsageError(f"fault spec {text!r}: unknown parameter {key!r}")
            except ValueError as e:
                raise UsageError(f"fault spec {text!r}: bad value for {key}: {value!r}") from e
        rules.append(FaultRule(**kw))
    return rules


class FaultyBackend(BackendWrapper):
    """Wraps a backend and injects the faults its rules describe. Thread-safe."""

    def __init__(
        self,
        inner: Backend,
        spec: str | Sequence[FaultRule] | None = None,
        *,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(inner)
        self.rules: list[FaultRule] = parse_spec(spec) if isinstance(spec, str) else list(spec or [])
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._lock = threading.Lock()
        #: Calls that reached this wrapper, by method.
        self.calls: Counter[str] = Counter()
        #: Faults injected, by method.
        self.injected: Counter[str] = Counter()

    def add(self, spec: str | FaultRule) -> FaultyBackend:
        """Add rules (a spec string or one rule); returns self for chaining."""
        with self._lock:
            self.rules.extend(parse_spec(spec) if isinstance(spec, str) else [spec])
        return self

    def clear(self) -> None:
        """Remove every rule: the backend behaves normally again."""
        with self._lock:
            self.rules.clear()

    def _fired(self, method: str, name: str) -> list[FaultRule]:
        with self._lock:
            self.calls[method] += 1
            fired = [r for r in self.rules
                     if method in r.methods and r.match in name and r.fires(name, self._rng)]
            if any(r.effect != "latency" for r in fired):
                self.injected[method] += 1
            return fired

    def _error(self, rule: FaultRule, method: str, name: str) -> Exception:
        msg = f"{self.location}: injected fault: {method} {name}"
        if rule.kind == "raw":
            return ConnectionResetError(msg)
        if rule.kind == "missing":
            return ObjectNotFound(f"{self.location}: {name} does not exist (injected fault)")
        return BackendError(msg, transient=rule.kind == "transient")

    def _before(self, method: str, name: str) -> list[FaultRule]:
        """Apply latency and failures; return the rules that alter results."""
        fired = self._fired(method, name)
        for r in fired:
            if r.effect == "latency":
                self._sleep(r.value)
        for r in fired:
            if r.effect == "fail":
                raise self._error(r, method, name)
        return [r for r in fired if r.effect in ("truncate", "flip", "torn")]

    def _damage(self, data: bytes, rules: list[FaultRule]) -> bytes:
        for r in rules:
            if r.effect == "truncate":
                data = data[: int(len(data) * r.value)]
            elif r.effect == "flip" and data:
                buf = bytearray(data)
                with self._lock:
                    bits = [self._rng.randrange(len(buf) * 8) for _ in range(max(1, int(r.value)))]
                for bit in bits:
                    buf[bit // 8] ^= 1 << (bit % 8)
                data = bytes(buf)
        return data

    # -- the Backend protocol ------------------------------------------------------------

    def put(self, name: str, data: bytes | memoryview) -> None:
        rules = self._before("put", name)
        for r in rules:
            if r.effect == "torn":
                view = memoryview(data)
                self.inner.put(name, bytes(view[: int(len(view) * r.value)]))
                raise self._error(r, "put", name)
        self.inner.put(name, data)

    def get(self, name: str) -> bytes:
        rules = self._before("get", name)
        return self._damage(self.inner.get(name), rules)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        rules = self._before("get_range", name)
        return self._damage(self.inner.get_range(name, offset, length), rules)

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        self._before("list", namespace)
        return self.inner.list(namespace)

    def delete(self, name: str) -> None:
        self._before("delete", name)
        self.inner.delete(name)

    def stat(self, name: str) -> ObjectInfo:
        self._before("stat", name)
        return self.inner.stat(name)

    def exists(self, name: str) -> bool:
        self._before("exists", name)
        return self.inner.exists(name)

    def create(self) -> None:
        self._before("create", "")
        self.inner.create()

    def _describe(self) -> str:
        return f"rules={len(self.rules)}"


def wrap_from_env(backend: Backend, env: Mapping[str, str] | None = None) -> Backend:
    """``backend`` wrapped in a FaultyBackend when HAEEDGE_FAULTS is set, else unchanged."""
    env = os.environ if env is None else env
    spec = env.get(ENV_VAR, "").strip()
    if not spec:
        return backend
    try:
        seed = int(env.get(SEED_VAR, "0") or "0")
    except ValueError as e:
        raise UsageError(f"{SEED_VAR} must be an integer") from e
    log.warning("%s: injecting faults from %s=%s", backend.location, ENV_VAR, spec)
    return FaultyBackend(backend, spec, seed=seed)
