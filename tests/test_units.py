import pytest

from ddc.units import format_rate, format_size, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize("text, expected", [
    ("64KiB", 65536), ("1MiB", 1 << 20), ("1.5GiB", 3 << 29), ("10MB", 10_000_000), ("512", 512),
    (4096, 4096), ("8 KiB", 8192), ("2k", 2048), ("0", 0),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), (3, 3.0), ("0.5", 0.5), ("100us", 1e-4),
])
def test_durations(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("800Mbit/s", 100e6), ("1Gbit/s", 125e6), ("100MB/s", 100e6), ("10MiB/s", 10 * 2**20),
    ("unlimited", 0.0), (1000, 1000.0), ("8kbps", 1000.0),
])
def test_rates(text, expected):
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize("parser, text, fragment", [
    (parse_size, "64 parsecs", "unknown size unit"),
    (parse_size, "lots", "not a size"),
    (parse_size, True, "not a size"),
    (parse_duration, "5 fortnights", "unknown duration unit"),
    (parse_rate, "800Mbps/x", "unknown rate unit"),
    (parse_rate, "0Mbit/s", "not a positive rate"),
    (parse_rate, "fast", "not a rate"),
])
def test_errors_name_the_value_and_the_fix(parser, text, fragment):
    with pytest.raises(ValueError) as caught:
        parser(text)
    assert fragment in str(caught.value)
    assert repr(text) in str(caught.value)


def test_formatting():
    assert format_rate(125e6) == "1.0 Gbit/s"
    assert format_rate(0) == "unlimited"


def test_sizes_are_formatted_as_people_read_them():
    assert [format_size(value) for value in (0, 812, 1024, 1536 * 1024, 3 << 30, 5 << 50)] == [
        "0 B", "812 B", "1.0 KiB", "1.5 MiB", "3.0 GiB", "5120.0 TiB"]
