"""Each row is validated on its own, every problem reported with its column and a plain reason."""

from __future__ import annotations

import pytest

from onboard.records import Cell, check_cells, has_valid_check_digit

GOOD = "707057500012345671"
VENDOR_EXAMPLE = "707057500012345678"  # the guide's own id: fails the GS1 check


def check(strict: bool = False, **cells):
    return check_cells(5, {k: Cell(str(v), v) for k, v in cells.items()}, strict)


def fields(checked) -> list[str]:
    return [p.field for p in checked.problems]


def test_a_complete_row_passes():
    checked = check(customer_id="4711", location_ref="home", location_type="Residential", meter_point_ids=GOOD,
                    latitude="59.9139", longitude="10.7522", resource_ref="SN1", resource_type="HotWaterTank")
    assert checked.valid and not checked.warnings
    assert checked.row.meter_point_ids == (GOOD,)
    assert (checked.row.latitude, checked.row.longitude) == (59.9139, 10.7522)


def test_customer_key_is_required_unless_user_id_is_given():
    assert fields(check(meter_point_ids=GOOD)) == ["customer_id"]
    assert check(user_id="u-1", meter_point_ids=GOOD).valid


@pytest.mark.parametrize("cell, count", [
    (f"{GOOD},{VENDOR_EXAMPLE}", 2), (f"{GOOD}; {VENDOR_EXAMPLE}", 2), (f"{GOOD}|{VENDOR_EXAMPLE}", 2),
    (f"{GOOD}\n{VENDOR_EXAMPLE}", 2), ("7070 5750 0012 3456 71", 1), (f"{GOOD} {VENDOR_EXAMPLE}", 2),
    (f"{GOOD}, {GOOD}", 1),
])
def test_meter_point_id_cells(cell, count):
    checked = check(customer_id="1", meter_point_ids=cell)
    assert checked.valid and len(checked.row.meter_point_ids) == count


@pytest.mark.parametrize("cell, words", [
    ("70705750001234567", "17 digits"),
    ("7070575000123456789", "19 digits"),
    ("70705750001234567A", "only the digits"),
    ("７０７０５７５０００１２３４５６７１", "only the digits"),  # full-width digits are not ASCII
])
def test_meter_point_ids_must_be_18_ascii_digits(cell, words):
    checked = check(customer_id="1", meter_point_ids=cell)
    assert fields(checked) == ["meter_point_ids"] and words in checked.problems[0].message


def test_failing_check_digit_warns_and_strict_refuses():
    lenient = check(customer_id="1", meter_point_ids=VENDOR_EXAMPLE)
    assert lenient.valid and "GS1 check digit" in lenient.warnings[0].message
    strict = check(strict=True, customer_id="1", meter_point_ids=VENDOR_EXAMPLE)
    assert fields(strict) == ["meter_point_ids"] and "--strict-meter-ids" in strict.problems[0].message


def test_gs1_check_digit():
    assert has_valid_check_digit(GOOD) and not has_valid_check_digit(VENDOR_EXAMPLE)


@pytest.mark.parametrize("cells, field, words", [
    ({"latitude": "91", "longitude": "10"}, "latitude", "outside -90..90"),
    ({"latitude": "59", "longitude": "-180.5"}, "longitude", "outside -180..180"),
    ({"latitude": "north", "longitude": "10"}, "latitude", "not a number"),
    ({"latitude": "59.9"}, "longitude", "fill both or neither"),
    ({"longitude": "10.7"}, "latitude", "fill both or neither"),
])
def test_coordinates_in_range_and_paired(cells, field, words):
    checked = check(customer_id="1", **cells)
    assert fields(checked) == [field] and words in checked.problems[0].message


def test_enums_ignore_case_and_refuse_the_unknown():
    assert check(customer_id="1", meter_point_ids=GOOD, location_type="commercial").row.location_type == "Commercial"
    assert check(customer_id="1", meter_point_ids=GOOD, resource_type="hvac").row.resource_type == "HVAC"
    wrong = check(customer_id="1", meter_point_ids=GOOD, resource_type="Toaster")
    assert fields(wrong) == ["resource_type"] and "Charger" in wrong.problems[0].message
    wrong = check(customer_id="1", meter_point_ids=GOOD, location_type="Castle")
    assert fields(wrong) == ["location_type"]


def test_a_device_needs_a_type_and_a_non_vehicle_needs_a_site():
    assert fields(check(customer_id="1", meter_point_ids=GOOD, resource_ref="SN1")) == ["resource_type"]
    assert fields(check(customer_id="1", resource_type="Charger")) == ["meter_point_ids"]
    assert check(customer_id="1", resource_type="Vehicle", resource_ref="VIN").valid
    assert check(customer_id="1", location_ref="home", resource_type="Charger").valid


@pytest.mark.parametrize("value, words", [(".", "cannot be an ID"), ("..", "cannot be an ID"),
                                          ("a\tb", "control character"), ("x" * 201, "201 characters")])
def test_explicit_ids_that_would_break_urls_are_refused(value, words):
    for column in ("user_id", "location_id", "resource_id"):
        checked = check(customer_id="1", meter_point_ids=GOOD, resource_type="Charger", **{column: value})
        assert fields(checked) == [column] and words in checked.problems[0].message


def test_explicit_ids_of_200_characters_and_slashes_pass():
    assert check(customer_id="1", user_id="x" * 200, location_id="site/1", meter_point_ids=GOOD).valid


def test_every_problem_of_a_row_is_reported():
    checked = check(meter_point_ids="123", latitude="95", resource_type="Boat", location_id="..")
    assert set(fields(checked)) == {"customer_id", "meter_point_ids", "latitude", "longitude", "resource_type",
                                    "location_id"}
