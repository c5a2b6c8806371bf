"""Load shapes as code: ramp, steady and spike (locust `LoadTestShape`s).

Pick one for a run with SLOTSERVE_LOAD_SHAPE=ramp|steady|spike (the locustfile defines only
that shape class, since locust runs the shape it finds there). A shape ignores locust's
-u / -r / -t; its parameters come from the locustfile's --shape-* options, else the
environment, else the default:

    --shape-users         SLOTSERVE_LOAD_USERS         peak users (steady: the users)    8
    --shape-spawn-rate    SLOTSERVE_LOAD_SPAWN_RATE    users started/stopped per second  2
    --shape-duration      SLOTSERVE_LOAD_DURATION      whole run: "90", "90s", "2m"     60 s
    --shape-ramp          SLOTSERVE_LOAD_RAMP          ramp: time to reach the peak    2/3 run
    --shape-base-users    SLOTSERVE_LOAD_BASE_USERS    spike: users outside the spike  users/4
    --shape-spike-at      SLOTSERVE_LOAD_SPIKE_AT      spike: when it starts           1/3 run
    --shape-spike-length  SLOTSERVE_LOAD_SPIKE_LENGTH  spike: how long it lasts        1/6 run

Each shape's `at(t)` is its schedule: (users, spawn rate) at t seconds into the run, None
once the run is over; `tick()` is `at(run time)`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from locust import LoadTestShape
from locust.util.timespan import parse_timespan

ENV_PREFIX = "SLOTSERVE_LOAD_"
OPTION_PREFIX = "shape_"
HELP = {
    "users": "peak users (steady: the users); default 8",
    "spawn_rate": "users started/stopped per second; default 2",
    "duration": "length of the whole run: 90, 90s, 2m; default 60 s",
    "ramp": "ramp shape: seconds to reach the peak; default 2/3 of the run",
    "base_users": "spike shape: users outside the spike; default users/4",
    "spike_at": "spike shape: when the spike starts; default 1/3 of the run",
    "spike_length": "spike shape: how long the spike lasts; default 1/6 of the run",
}


def seconds(value) -> float:
    """A time span: a number of seconds or a locust time string ("90s", "2m", "1m30s")."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        return float(parse_timespan(text))


@dataclass
class Params:
    users: int = 8
    spawn_rate: float = 2.0
    duration: float = 60.0
    ramp: float | None = None
    base_users: int | None = None
    spike_at: float | None = None
    spike_length: float | None = None

    def __post_init__(self) -> None:
        self.users = int(self.users)
        self.spawn_rate = float(self.spawn_rate)
        self.duration = seconds(self.duration)
        for name in ("ramp", "spike_at", "spike_length"):
            if getattr(self, name) is not None:
                setattr(self, name, seconds(getattr(self, name)))
        if self.base_users is not None:
            self.base_users = int(self.base_users)
        if self.users < 1 or self.spawn_rate <= 0 or self.duration <= 0:
            raise ValueError(f"load shape needs users >= 1, spawn_rate > 0, duration > 0: {self}")


def add_arguments(parser) -> None:
    """Register --shape-* on locust's parser (call from `events.init_command_line_parser`)."""
    for f in fields(Params):
        parser.add_argument(
            "--" + (OPTION_PREFIX + f.name).replace("_", "-"),
            default=None,
            help=f"load shape: {HELP[f.name]} (env {ENV_PREFIX}{f.name.upper()})",
        )


def params_from(environ=None, options=None, **given) -> Params:
    """Parameters from keyword arguments, else --shape-* options, else the environment."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in fields(Params):
        value = given.get(f.name)
        if value is None and options is not None:
            value = getattr(options, OPTION_PREFIX + f.name, None)
        if value is None:
            value = environ.get(ENV_PREFIX + f.name.upper()) or None
        if value is not None:
            values[f.name] = value
    return Params(**values)


class SlotServeShape(LoadTestShape):
    """Base: parameters resolved at the first tick (when locust's options are known)."""

    abstract = True
    name = ""

    def __init__(self, **given) -> None:
        super().__init__()
        self.given = given
        self._params: Params | None = None

    @property
    def params(self) -> Params:
        if self._params is None:
            env = getattr(self.runner, "environment", None)
            self._params = params_from(options=getattr(env, "parsed_options", None), **self.given)
        return self._params

    def at(self, t: float) -> tuple[int, float] | None:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        return self.at(self.get_run_time())


class RampShape(SlotServeShape):
    """Linear ramp from 1 user to `users` over `ramp` seconds, then hold until `duration`."""

    name = "ramp"

    def at(self, t: float) -> tuple[int, float] | None:
        p = self.params
        if t >= p.duration:
            return None
        ramp = p.ramp if p.ramp is not None else p.duration * 2 / 3
        if ramp <= 0 or t >= ramp:
            return p.users, p.spawn_rate
        return max(1, math.ceil(p.users * t / ramp)), p.spawn_rate


class SteadyShape(SlotServeShape):
    """`users` users (started at `spawn_rate`) for `duration` seconds."""

    name = "steady"

    def at(self, t: float) -> tuple[int, float] | None:
        p = self.params
        return None if t >= p.duration else (p.users, p.spawn_rate)


class SpikeShape(SlotServeShape):
    """`base_users` users, jumping to `users` from `spike_at` for `spike_length` seconds.

    Users start and stop at max(spawn_rate, users) per second: the spike arrives (and leaves)
    within about a second.
    """

    name = "spike"

    def at(self, t: float) -> tuple[int, float] | None:
        p = self.params
        if t >= p.duration:
            return None
        base = p.base_users if p.base_users is not None else max(1, p.users // 4)
        start = p.spike_at if p.spike_at is not None else p.duration / 3
        length = p.spike_length if p.spike_length is not None else p.duration / 6
        rate = max(p.spawn_rate, float(p.users))
        return (p.users if start <= t < start + length else base), rate


SHAPES: dict[str, type[SlotServeShape]] = {
    cls.name: cls for cls in (RampShape, SteadyShape, SpikeShape)
}


def shape_class(name: str) -> type[SlotServeShape]:
    """The shape class called `name` (ramp, steady, spike); ValueError for any other."""
    try:
        return SHAPES[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown load shape {name!r}; SLOTSERVE_LOAD_SHAPE is one of {sorted(SHAPES)}"
        ) from None
