import pytest

from sidekick.core.addr import HostPort, parse_hostport
from sidekick.core.backoff import Backoff
from sidekick.core.durations import format_duration, parse_duration
from sidekick.core.errors import ConfigError
from sidekick.core.sizes import parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0), ("3", 3.0), ("0.25", 0.25)],
)
def test_parse_duration_accepts_go_style_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten seconds", "10x", "s10", "-5"])
def test_parse_duration_rejects_non_durations_naming_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match="--period"):
        parse_duration(text, name="--period")


def test_format_duration_is_short() -> None:
    assert format_duration(30) == "30s"
    assert format_duration(5400) == "1h30m"


@pytest.mark.parametrize(
    ("text", "size"), [("64MiB", 64 << 20), ("1Mi", 1 << 20), ("512k", 512000), ("100", 100)]
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="not a size"):
        parse_size("lots")


def test_parse_hostport_forms() -> None:
    assert parse_hostport("127.0.0.1:8088") == HostPort("127.0.0.1", 8088)
    assert parse_hostport(":9000") == HostPort("0.0.0.0", 9000)
    assert parse_hostport("[::1]:80") == HostPort("::1", 80)


@pytest.mark.parametrize("text", ["localhost", "host:abc", "host:70000"])
def test_parse_hostport_rejects_bad_addresses(text: str) -> None:
    with pytest.raises(ConfigError, match="--admin-addr"):
        parse_hostport(text, name="--admin-addr")


def test_backoff_grows_to_its_cap_and_resets() -> None:
    b = Backoff(initial=0.5, maximum=4, jitter=0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    b.reset()
    assert b.next_delay() == 0.5


def test_backoff_jitter_stays_within_half_to_full_delay() -> None:
    b = Backoff(initial=1, maximum=1, jitter=0.5)
    delays = [b.next_delay() for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 100
